"""Real stage outputs for the push and card tests: a teacher's samples, a filter output, a student.

The tiny teacher (conftest's memoriser) writes two samples per problem with the transformers engine; the real
filter stage grades and deduplicates them (one problem carries a wrong gold answer, so the math step has
something to drop); the real sft stage trains the tiny base on what is kept, saving two checkpoints. Only the
eval results are written by hand, in the shape pipeline/push/lineage.py documents: the eval stage is not built yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.records.write import write_json
from tests.helpers import problem_rows

EVAL = {
    "models": [
        {"model": "test-org/student", "label": "student", "metrics": {"math500": {
            "pass@1": 0.4125, "pass@1_stderr": 0.0213, "cons@k": None, "n": 500, "mean_output_tokens": 812.5,
            "truncation_rate": 0.01}}},
        {"model": "tiny-base", "label": "base", "metrics": {"math500": {"pass@1": 0.105, "pass@1_stderr": 0.0137}}},
    ],
    "settings": {"temperature": 0.6, "top_p": 0.95, "k": 4},
}  # fmt: skip


def generate(teacher: Path, out: Path) -> Path:
    from pipeline.generate.config import GenerateConfig
    from pipeline.generate.stage import run

    rows = problem_rows()
    rows[0]["answer"] = "6"  # "What is 2+3?": the teacher's right answer now fails the math step
    problems = out.parent / "problems.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"model={teacher}", f"problems.path={problems}", f"output={out}", "backend=transformers",
                 "sampling.n=2", "sampling.max_tokens=48"]  # fmt: skip
    assert run(load_config(GenerateConfig, None, overrides)) == 0
    return out


def filter_samples(samples: Path, out: Path) -> Path:
    from pipeline.filter.config import FilterConfig
    from pipeline.filter.stage import run

    steps = "steps=[{name: parse}, {name: finished}, {name: math}, {name: dedup}]"
    assert (
        run(load_config(FilterConfig, None, [f"input={samples}", f"output={out}", "workers=1", steps])) == 0
    )
    return out


def train(base: Path, data: Path, out: Path, *overrides: str) -> Path:
    from pipeline.train.sft.config import SFTStageConfig
    from pipeline.train.sft.stage import run

    recipe = [f"model={base}", f"data=[{{path: {data}}}]", f"output={out}", "trainer.max_steps=12",
              "trainer.per_device_train_batch_size=4", "trainer.learning_rate=3.0e-3", "trainer.logging_steps=2",
              "trainer.save_steps=6", "trainer.gradient_checkpointing=false", "trainer.report_to=none",
              "trainer.max_length=256", "trainer.seed=0"]  # fmt: skip
    assert run(load_config(SFTStageConfig, None, recipe + list(overrides))) == 0
    return out


@pytest.fixture(scope="session", name="made")
def made_fixture(
    teacher_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """{teacher, samples, data (filter output), student (full sft, checkpoints 6 and 12, eval/results.json)}."""
    root = tmp_path_factory.mktemp("made")
    samples = generate(teacher_dir, root / "generated")
    data = filter_samples(samples, root / "filtered")
    student = train(tiny_model_dir, data, root / "student")
    write_json(student / "eval" / "results.json", EVAL)
    return {"teacher": teacher_dir, "samples": samples, "data": data, "student": student}
