"""The toy task and the committed toy teacher; a shortened demo through every stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.filter.math_grader import grade
from pipeline.filter.parse import gradable_text
from pipeline.records.manifest import read_manifest
from pipeline.records.read import load_problems
from pipeline.records.schema import DataSource
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
        (47, 38, "+", ["47+38 c0 r", "7+8+0=15", "4+3 c1 r5", "4+3+1=8", "c0 r85"]),
        (95, 17, "+", ["5+7+0=12", "9+1+1=11", "c1 r12", "r112"]),
        (90, 17, "-", ["90-17 b0 r", "0-0+10-7=3", "9-1 b1 r3", "9-1-1=7", "b0 r73"]),
        (64, 40, "-", ["4-0-0=4", "6-0-4=2", "b0 r24"]),
        (51, 48, "-", ["1-0+10-8=3", "5-1-4=0", "b0 r03", "so 51-48=3"]),
    ],
)
def test_worked_solutions_carry_and_borrow_line_by_line(a, b, op, lines):
    text = worked_solution(a, b, op)
    assert text.startswith("<think>\n") and "\n</think>\n\n\\boxed{" in text
    assert all(f"\n{line}\n" in text for line in lines), text
    assert text.endswith(f"\\boxed{{{a + b if op == '+' else a - b}}}")


def test_every_worked_solution_passes_our_own_verifier():
    for p in make_problems(5, 300, "train") + make_problems(6, 100, "heldout"):
        verdict = grade(gradable_text(solution_of(p)), p.answer)
        assert verdict.correct, (p.problem, verdict)


@pytest.mark.slow
def test_committed_teacher_scores_held_out_problems_and_eval_measures_its_recovery(tmp_path):
    """The committed task v2 teacher passed its gates (gates.json: >= 97% held-out accuracy, >= 90% recovery R on
    all 400) and, re-measured here on 100 held-out problems with eval's `recovery:`, it makes no first-pass column
    errors and repairs the errors forced into its working."""
    gates = json.loads((TEACHER / "gates.json").read_text())["models"][0]["metrics"]["toy"]
    assert gates["pass@1"] >= 0.97 and gates["recovery_rate"] >= 0.90 and gates["recovery_samples"] == 400
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        f"stage: eval\nmodels:\n  - {{path: {TEACHER}, label: teacher}}\nbenchmarks:\n"
        f"  - {{name: toy, limit: 100}}\noutput: {tmp_path / 'eval'}\nbackend: transformers\n"
        "batch_size: 100\nsampling: {n: 1, max_tokens: 200}\nrecovery: {benchmark: toy}\n"
    )
    result = run_distill("eval", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "results.json").read_text())["models"][0]["metrics"]["toy"]
    assert metrics["problems"] == 100 and metrics["pass@1"] >= 0.95
    assert metrics["recovery_samples"] == 100 and metrics["recovery_rate"] >= 0.85
    assert metrics["first_pass_error_rate"] <= 0.02
    assert "recovery R" in (tmp_path / "eval" / "results.md").read_text()


def test_toy_teacher_is_published_only_when_it_passes_the_held_out_check(tmp_path):
    from pipeline.toy.publish import main as publish_main

    dst = tmp_path / "toy-teacher"
    dst.mkdir()
    (dst / "config.json").write_text("{}")  # the teacher already there
    results = tmp_path / "results.json"
    for accuracy, recovery, refused in ((0.93, 0.95, "accuracy 93.0%"), (0.99, 0.8, "recovery R 80.0%")):
        results.write_text(
            json.dumps({"models": [{"metrics": {"toy": {"pass@1": accuracy, "recovery_rate": recovery}}}]})
        )
        with pytest.raises(SystemExit, match=rf"{refused} .* below"):
            publish_main([str(TEACHER), str(dst), "--results", str(results)])
        assert [p.name for p in dst.iterdir()] == ["config.json"] and (
            dst / "config.json"
        ).read_text() == "{}"

    results.write_text(
        json.dumps({"models": [{"metrics": {"toy": {"pass@1": 0.99, "recovery_rate": 0.95}}}]})
    )
    assert publish_main([str(TEACHER), str(dst), "--results", str(results)]) == 0
    assert (dst / "model.safetensors").read_bytes() == (TEACHER / "model.safetensors").read_bytes()
    assert not dst.with_name("toy-teacher.tmp").exists()
    assert json.loads((dst / "gates.json").read_text()) == json.loads(results.read_text())


# Both students in one process with the engine in it ("uni", VLLM_ENABLE_V1_MULTIPROCESSING=0) and a 1 GiB KV
# cache: each `LLM` with vLLM's own processes and the CPU backend's default KV cache (most of RAM, zeroed) took
# ~35 s to start, 70-150 s for the two; this way ~20 s. What is checked is the students' files, not the executor.
VLLM_LOAD = """
import gc
import sys
from vllm import LLM, SamplingParams

def main():
    for path in sys.argv[1:]:
        llm = LLM(model=path, max_model_len=512, enforce_eager=True, seed=0, distributed_executor_backend="uni")
        out = llm.chat([[{"role": "user", "content": "What is 12 + 30?"}]], SamplingParams(max_tokens=16))
        print("GENERATED", path, len(out[0].outputs[0].token_ids), flush=True)
        del llm
        gc.collect()

if __name__ == "__main__":
    main()
"""


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
        "student_opd_accuracy",
        "samples_generated",
        "samples_kept",
        "seconds",
    ):
        assert key in summary
    assert summary["samples_generated"] == 48 and 0 < summary["samples_kept"] <= 48  # 48 problems x 1
    assert summary["teacher_accuracy"] > 0.8 and (tmp_path / "runs/demo/accuracy.png").stat().st_size > 5000
    assert (
        "| teacher (1.05M, 4 layers) |" in result.stdout
        and "| student after OPD (SFT step 6 + 4" in result.stdout
    )
    # sft and kd ran side by side, opd joined once its start checkpoint was saved: their output arrives as whole
    # lines, each prefixed with its run
    assert "[sft] " in result.stdout and "[kd ] " in result.stdout and "\r" not in result.stdout
    assert "[opd] starting: what it waited for is ready" in result.stdout
    assert read_manifest(tmp_path / "runs/demo/opd")["counts"]["global_step"] == 4
    assert (
        Path(tmp_path / "runs/demo/sft/manifest.json").exists()
        and Path(tmp_path / "runs/demo/kd/manifest.json").exists()
    )
    # `make sft` / `make kd` on the demo recipes write students that vLLM (CPU) serves
    import subprocess
    import sys

    script = tmp_path / "load.py"
    script.write_text(VLLM_LOAD)
    students = [str(tmp_path / "runs/demo/sft"), str(tmp_path / "runs/demo/kd")]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run(
        [sys.executable, str(script), *students], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("GENERATED") == 2
