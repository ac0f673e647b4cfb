"""The toy task and the committed toy teacher; a shortened demo through every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.filter.math_grader import grade
from pipeline.filter.parse import gradable_text
from pipeline.records import DataSource, load_problems
from pipeline.toy.task import make_problems, solution_of, worked_solution
from tests.conftest import REPO, run_distill

TEACHER = REPO / "data" / "toy-teacher"


def test_problems_are_deterministic_and_splits_never_overlap():
    assert make_problems(3, 200, "train") == make_problems(3, 200, "train")
    assert make_problems(3, 200, "train") != make_problems(4, 200, "train")
    train = {p.problem for p in make_problems(0, 3000, "train")}
    heldout = {p.problem for p in make_problems(1, 400, "heldout")}
    assert len(train) == 3000 and len(heldout) == 400 and not train & heldout


def test_bundled_problem_files_are_disjoint_and_match_their_seed():
    train = load_problems(DataSource(path=str(REPO / "data/toy/train.jsonl")))
    heldout = load_problems(DataSource(path=str(REPO / "data/toy/heldout.jsonl")))
    assert not {p.problem for p in train} & {p.problem for p in heldout}
    assert [p.id for p in heldout] == [p.id for p in make_problems(1, len(heldout), "heldout")]


@pytest.mark.parametrize(
    ("a", "b", "op", "lines"),
    [
        (472, 389, "+", ["2+9=11 write 1 carry 1", "7+8+1=16 write 6 carry 1", "4+3+1=8 write 8"]),
        (95, 7, "+", ["5+7=12 write 2 carry 1", "9+0+1=10 write 0 carry 1", "write the carry 1"]),
        (905, 97, "-", ["5<7 borrow: 15-7=8", "0-1<9 borrow: 9-9=0", "9-1-0=8"]),
        (640, 40, "-", ["0-0=0", "4-4=0", "6-0=6"]),
    ],
)
def test_worked_solutions_carry_and_borrow(a, b, op, lines):
    text = worked_solution(a, b, op)
    assert text.startswith("<think>\n") and "\n</think>\n\n\\boxed{" in text
    assert all(line in text for line in lines)
    assert text.endswith(f"\\boxed{{{a + b if op == '+' else a - b}}}")


def test_every_worked_solution_passes_our_own_verifier():
    for p in make_problems(5, 300, "train") + make_problems(6, 100, "heldout"):
        verdict = grade(gradable_text(solution_of(p)), p.answer)
        assert verdict.correct, (p.problem, verdict)


@pytest.mark.slow
def test_committed_teacher_scores_at_least_95_percent_on_held_out_problems(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        f"stage: eval\nmodels:\n  - {{path: {TEACHER}, label: teacher}}\nbenchmarks:\n"
        f"  - {{name: toy, limit: 100}}\noutput: {tmp_path / 'eval'}\nbackend: transformers\n"
        "batch_size: 100\nsampling: {n: 1, max_tokens: 160}\n"
    )
    result = run_distill("eval", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]["metrics"]["toy"]
    assert metrics["problems"] == 100 and metrics["pass@1"] >= 0.95


@pytest.mark.slow
def test_quick_demo_runs_every_stage_end_to_end(tmp_path):
    """`distill demo --quick` in a copy of the repository's data and recipes (it writes runs/demo/ there)."""
    import shutil

    for name in ("recipes", "data", "prompts"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("teacher-sft"))
    result = run_distill("demo", "--quick", cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs/demo/summary.json").read_text())
    for key in (
        "teacher_accuracy",
        "student_base_accuracy",
        "student_sft_accuracy",
        "student_kd_accuracy",
        "samples_generated",
        "samples_kept",
        "seconds",
    ):
        assert key in summary
    assert summary["samples_generated"] == 96 and 0 < summary["samples_kept"] <= 96
    assert summary["teacher_accuracy"] > 0.8 and (tmp_path / "runs/demo/accuracy.png").stat().st_size > 5000
    assert "| teacher (1.05M, 4 layers) |" in result.stdout
    assert (
        Path(tmp_path / "runs/demo/sft/manifest.json").exists()
        and Path(tmp_path / "runs/demo/kd/manifest.json").exists()
    )
