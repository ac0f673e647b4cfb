"""Checks before a stage starts: a learning-rate schedule whose phases do not fit max_steps is refused; a demo
model folder that is built, not shipped, is named with the command that builds it."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError
from pipeline.errors import UserError
from pipeline.preflight import check_model, check_schedule
from tests.conftest import REPO, run_distill


def where(key: str) -> str:
    return f"recipe.yaml ({key})"


WSD = {"lr_scheduler_type": "warmup_stable_decay"}


@pytest.mark.parametrize(
    "trainer",
    [
        {**WSD, "max_steps": 4000, "warmup_steps": 0.05, "lr_scheduler_kwargs": {"num_decay_steps": 1000}},
        {**WSD, "max_steps": 12, "warmup_steps": 0.05, "lr_scheduler_kwargs": {"num_decay_steps": 4}},
        {**WSD, "max_steps": 100, "warmup_steps": 10, "lr_scheduler_kwargs": {"num_decay_steps": 90}},
        {**WSD, "max_steps": 100, "lr_scheduler_kwargs": {"num_decay_steps": 20, "num_stable_steps": 80}},
        {**WSD, "max_steps": -1, "lr_scheduler_kwargs": {"num_decay_steps": 1000}},  # epochs: length unknown
        {"lr_scheduler_type": "cosine", "max_steps": 30, "warmup_steps": 0.1},
        {},
    ],
)
def test_schedules_that_fit_pass(trainer):
    check_schedule(trainer, where)


@pytest.mark.parametrize(
    ("trainer", "field", "says"),
    [
        # the demo recipe shortened to 30 steps: its 1,000-step anneal would start before step 1
        (
            {**WSD, "max_steps": 30, "warmup_steps": 0.05, "lr_scheduler_kwargs": {"num_decay_steps": 1000}},
            "trainer.lr_scheduler_kwargs",
            "(warm-up 2 + decay 1000 = 1002 steps) do not fit trainer.max_steps (30)",
        ),
        (
            {**WSD, "max_steps": 100, "warmup_steps": 1, "lr_scheduler_kwargs": {"num_decay_steps": 100}},
            "trainer.lr_scheduler_kwargs",
            "(warm-up 1 + decay 100 = 101 steps) do not fit trainer.max_steps (100)",
        ),
        (
            {
                **WSD,
                "max_steps": 100,
                "lr_scheduler_kwargs": '{"num_decay_steps": 20, "num_stable_steps": 50}',
            },
            "trainer.lr_scheduler_kwargs",
            "stable 50 + decay 20 = 70 steps) do not fit",
        ),
        (
            {"lr_scheduler_type": "cosine", "max_steps": 30, "warmup_steps": 30},
            "trainer.warmup_steps",
            "the warm-up (30 steps) takes all of trainer.max_steps (30)",
        ),
    ],
)
def test_schedules_whose_phases_do_not_fit_max_steps_are_refused(trainer, field, says):
    with pytest.raises(ConfigError) as e:
        check_schedule(trainer, where)
    assert e.value.key == field and says in str(e.value) and f"recipe.yaml ({field})" in str(e.value)


def test_the_demo_recipe_shortened_is_refused_at_validate_with_the_override_to_write():
    from pipeline.cli import load_stage_config

    with pytest.raises(ConfigError, match=r"set e.g. trainer.lr_scheduler_kwargs=\{num_decay_steps: 7\}"):
        load_stage_config("sft", "recipes/demo/sft.yaml", ["trainer.max_steps=30"])
    fixed = ["trainer.max_steps=30", "trainer.lr_scheduler_kwargs={num_decay_steps: 7}"]
    assert load_stage_config("sft", "recipes/demo/sft.yaml", fixed).trainer["max_steps"] == 30


def test_the_demo_students_missing_start_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a checkout where the demo has not run
    with pytest.raises(UserError, match=r"build it with `distill demo --student-init`"):
        check_model("runs/demo/student-init")
    with pytest.raises(UserError, match="give the path of a local model folder"):
        check_model("runs/elsewhere/model")
    result = run_distill("sft", "--config", str(REPO / "recipes/demo/sft.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and "distill demo --student-init" in result.stderr.splitlines()[-1]
