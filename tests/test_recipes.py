"""Every recipe under recipes/ loads, validates, and hands its pass-through blocks to their libraries."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import load_stage_config, recipe_stage
from tests.conftest import REPO, run_distill

LAUNCH_FILES = {"accelerate", "kuberay"}  # launch files for other tools, not recipes of ours
RECIPES = sorted(
    p.relative_to(REPO) for p in (REPO / "recipes").rglob("*.yaml") if p.parent.name not in LAUNCH_FILES
)
ACCELERATE = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))


def test_there_are_recipes_for_every_stage_folder():
    assert any(str(p).startswith("recipes/teachers/") for p in RECIPES)
    assert any(str(p).startswith("recipes/demo/") for p in RECIPES)
    students = {p.parent.name for p in RECIPES if str(p).startswith("recipes/students/")}
    assert {
        "qwen2.5-math-1.5b",
        "qwen2.5-math-7b",
        "qwen2.5-14b",
        "qwen2.5-32b",
        "llama-3.1-8b",
        "llama-3.3-70b",
        "qwen2.5-0.5b",
        "qwen3-0.6b",
        "qwen3-1.7b",
    } <= students


@pytest.mark.parametrize("recipe", RECIPES, ids=str)
def test_recipe_validates_deeply(recipe: Path):
    stage = recipe_stage(str(REPO / recipe))
    load_stage_config(stage, str(REPO / recipe), [], deep=True)
    first = (REPO / recipe).read_text().splitlines()[0]
    assert first.startswith("# "), (
        "every recipe starts with a comment: what it does, on what, and the command"
    )


@pytest.mark.parametrize("config", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load_with_accelerate(config: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert loaded.num_processes >= 1 and loaded.mixed_precision in ("bf16", "no")
    assert config.read_text().startswith("# ")


def test_validate_prints_the_resolved_recipe():
    result = run_distill("validate", "--config", "recipes/demo/generate.yaml")
    assert result.returncode == 0, result.stderr
    assert "temperature: 0.6" in result.stdout and "stage: generate" in result.stdout


def test_validate_names_a_misspelt_key_and_exits_non_zero(tmp_path):
    recipe = tmp_path / "x.yaml"
    recipe.write_text(
        (REPO / "recipes/demo/generate.yaml").read_text().replace("  n: 1", "  temprature: 0.7")
    )
    result = run_distill("validate", "--config", str(recipe))
    assert result.returncode == 2
    assert (
        "unknown key 'sampling.temprature'" in result.stderr
        and "did you mean 'sampling.temperature'" in result.stderr
    )


def test_kuberay_rayjob_runs_a_valid_generate_on_ray():
    """The RayJob example's entrypoint is a `distill generate` whose recipe and overrides validate, on Ray."""
    import shlex

    import yaml

    job = yaml.safe_load((REPO / "recipes/kuberay/generate-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["distill", "generate", "--config"]
    cfg = load_stage_config("generate", str(REPO / argv[3]), argv[4:], deep=True)
    assert cfg.launch == "ray" and cfg.ray.replicas == 16
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == __import__("importlib.metadata").metadata.version(
        "ray"
    )
