"""`distill demo`: the whole method on a laptop: the toy teacher distilled into a smaller student, with numbers.

    distill demo [--quick]          (what `make demo` runs after setup)

Runs the real stages with recipes/demo/*.yaml, each as the command a user would type:
  1. generate  the committed toy teacher (data/toy-teacher, 1.05M parameters) samples a worked solution for each
               training problem with vLLM on CPU, with its top-5 logprobs;
  2. filter    math-verify drops the teacher's wrong samples (counted in the report);
  3. sft, kd   two students of the same smaller shape (hidden 128 x 2 layers, built untrained from the teacher's
               tokenizer) train from scratch on the kept samples for the same steps: one on the text (SFT),
               one also on the stored logprobs (KD); the two run side by side, one core each (OPD joins
               them, below), their output shown as one display of prefixed lines;
  4. opd       on-policy distillation from the SFT student's step-3000 checkpoint (clearly below the teacher):
               the student answers training problems itself and the teacher scores every token it wrote; it
               joins the SFT and KD runs (three runs on two cores) as soon as that checkpoint is saved;
  5. eval      teacher, untrained student and the SFT, KD and OPD students on the held-out problems, same
               verifier, then every saved checkpoint of the three for the accuracy-over-training plots.
Writes runs/demo/summary.json (teacher_accuracy, student_base_accuracy, student_sft_accuracy,
student_kd_accuracy, student_opd_accuracy, samples_generated, samples_kept, seconds, ...), summary.md and
accuracy.png (held-out accuracy against training steps, teacher tokens and wall-clock).
`--quick` shrinks every step (few problems, few steps) to check the plumbing in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HELP = "run the whole pipeline offline on the toy task (generate, filter, sft, kd, eval) and summarise it"
OUT = Path("runs/demo")
OPD_RECIPE = "recipes/demo/opd.yaml"
QUICK = {
    # no torch.compile warm-up (~30 s on 2 cores with a cold cache) for 48 problems; `make demo` keeps the compiled engine
    "generate": ["problems.limit=48", "engine.enforce_eager=true"],
    "train": [
        "trainer.max_steps=12",
        "trainer.save_steps=6",
        "trainer.per_device_train_batch_size=4",
        "trainer.lr_scheduler_kwargs={num_decay_steps: 4}",
    ],
    "opd": [
        "model=runs/demo/sft/checkpoint-6",
        "trainer.max_steps=4",
        "trainer.save_steps=2",
        "trainer.per_device_train_batch_size=2",
        "trainer.max_completion_length=32",
    ],
    "eval": ["benchmarks=[{name: toy, limit: 12}]", "sampling.n=1"],
}
STUDENTS = ("sft", "kd", "opd")
# the students' untrained start: the teacher's tokenizer, 2 layers (`make sft`/`make kd` and the bench build it so)
STUDENT_INIT = (
    "tiny-model",
    str(OUT / "student-init"),
    "--tokenizer-from",
    "data/toy-teacher",
    "--layers",
    "2",
    "--vocab-size",
    "512",
    "--max-position-embeddings",
    "1024",
    "--seed",
    "1",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a shortened run that checks every stage end to end"
    )
    parser.add_argument(
        "--student-init", action="store_true", help="only build the students' untrained start, when missing"
    )


def distill(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("distill")), *args]


def step(name: str, cmd: list[str], env: dict[str, str] | None = None) -> float:
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - started


def train_students(quick: bool) -> float:
    """SFT and KD at once, one thread each (tiny models use two cores poorly, two processes use them fully); OPD
    joins them, one thread too, as soon as the SFT checkpoint it starts from is saved, so it does not wait for
    the end of both runs. Their output is one display of prefixed lines."""
    from pipeline.checkpoints import is_complete
    from pipeline.toy.side_by_side import run_side_by_side

    # their output is a pipe: each trains with progress lines, not tqdm bars (pipeline/train/progress.py)
    train = QUICK["train"] if quick else []
    commands = {
        stage: distill(stage, "--config", f"recipes/demo/{stage}.yaml", *train) for stage in ("sft", "kd")
    }
    opd = QUICK["opd"] if quick else []
    commands["opd"] = distill("opd", "--config", OPD_RECIPE, *opd)
    start = opd_start(opd)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    print(
        f"\n=== sft and kd side by side, opd once {start} is saved (lines prefixed with their run; each run's "
        f"whole log, metrics included, in {OUT / 'logs'}/)",
        flush=True,
    )
    codes = run_side_by_side(commands, env, ready={"opd": lambda: is_complete(start)}, logs=OUT / "logs")
    if any(code != 0 for code in codes.values()):
        failed = ", ".join(
            f"{name} ({'not started' if c is None else f'exit {c}'})" for name, c in codes.items() if c != 0
        )
        raise subprocess.CalledProcessError(1, f"distill sft / kd / opd: {failed}")
    return time.perf_counter() - started


def opd_start(overrides: list[str]) -> Path:
    """The SFT checkpoint the demo's OPD student starts from (its recipe's `model`, or the override of it)."""
    from pipeline.config import load_config
    from pipeline.train.opd.config import OPDStageConfig

    return Path(load_config(OPDStageConfig, OPD_RECIPE, overrides).model)


def checkpoint_models() -> list[dict[str, str]]:
    """Every saved checkpoint of the students, labelled by its step (an OPD step counts after its SFT start)."""
    from pipeline.push.release import checkpoint_step

    offset = {"opd": opd_start_step()}
    return [
        {"path": str(ckpt), "label": f"{stage}-step-{offset.get(stage, 0) + checkpoint_step(ckpt)}"}
        for stage in STUDENTS
        for ckpt in sorted((OUT / stage).glob("checkpoint-*"), key=checkpoint_step)
    ]


def opd_start_step() -> int:
    """The SFT step the OPD student started from (its recipe's `model` is an SFT checkpoint)."""
    from pipeline.push.release import checkpoint_step
    from pipeline.records.manifest import read_manifest

    manifest = read_manifest(OUT / "opd") or {}
    return max(checkpoint_step(Path((manifest.get("config") or {}).get("model", ""))), 0)


def accuracy(results: dict[str, Any], label: str) -> float:
    return next(m["metrics"]["toy"]["pass@1"] for m in results["models"] if m["label"] == label)


def recovery(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per model: first-pass column error rate and forced-error recovery R (pipeline/eval/recovery.py)."""
    keys = ("first_pass_error_rate", "recovery_rate", "recovery_correct")
    return {m["label"]: {k: m["metrics"]["toy"].get(k) for k in keys} for m in results["models"]}


def main_demo(args: argparse.Namespace) -> int:
    if args.student_init:
        return student_init()
    started = time.perf_counter()
    timings = run_stages(args.quick)
    eval_checkpoints(args.quick)
    return summarise(time.perf_counter() - started, timings)


def student_init() -> int:
    """The demo students' untrained start (`make sft` / `make kd` build it when missing)."""
    if not (OUT / "student-init" / "config.json").exists():
        step("student", distill(*STUDENT_INIT))
    return 0


def run_stages(q: bool) -> dict[str, float]:
    """generate, filter, the SFT and KD students side by side, OPD, eval: each stage's seconds."""
    timings = {
        "generate": step(
            "generate",
            distill("generate", "--config", "recipes/demo/generate.yaml", *(QUICK["generate"] if q else [])),
        )
    }
    timings["filter"] = step("filter", distill("filter", "--config", "recipes/demo/filter.yaml"))
    step("student", distill(*STUDENT_INIT))
    timings["sft+kd+opd"] = train_students(q)
    timings["eval"] = step(
        "eval", distill("eval", "--config", "recipes/demo/eval.yaml", *(QUICK["eval"] if q else []))
    )
    return timings


def eval_checkpoints(q: bool) -> None:
    """Held-out accuracy of every saved checkpoint: the curves of the plot."""
    curve = json.dumps(checkpoint_models())
    step(
        "eval (checkpoints)",
        distill(
            "eval",
            "--config",
            "recipes/demo/eval.yaml",
            f"models={curve}",
            f"output={OUT / 'eval-checkpoints'}",
            # dozens of tiny checkpoints: the transformers engine, as a vLLM start-up each would take longer
            "backend=transformers",
            "engine={}",
            "batch_size=128",
            "sampling.n=1",
            "recovery=null",  # the curves are accuracy; R and first-pass errors are the final models' (eval)
            *(QUICK["eval"] if q else ["benchmarks=[{name: toy, limit: 100}]"]),
        ),
    )


def costs(stage: str) -> dict[str, float]:
    """What one training step of a student cost: teacher tokens (SFT and KD: the completion tokens the teacher
    generated for the traces trained on; OPD: the prompt and completion tokens it scored) and seconds."""
    from pipeline.records.manifest import read_manifest

    counts = read_manifest(OUT / stage)["counts"]
    steps = max(counts["global_step"], 1)
    tokens = counts["teacher_tokens_scored"] if stage == "opd" else counts["supervised_tokens"]
    # SFT and KD re-read their traces each epoch: the teacher generated one epoch's tokens, once
    cap = counts["supervised_tokens"] / max(counts["epochs"], 1.0) if stage != "opd" else None
    return {
        "steps": steps,
        "tokens_per_step": tokens / steps,
        "seconds_per_step": counts["train_runtime_s"] / steps,
        "tokens_cap": cap,
    }


def summarise(seconds: float, timings: dict[str, float]) -> int:
    from pipeline.records.manifest import read_manifest
    from pipeline.records.write import write_json
    from pipeline.toy.plot import plot_curve

    results = json.loads((OUT / "eval" / "results.json").read_text())
    curve = json.loads((OUT / "eval-checkpoints" / "results.json").read_text())
    generated = read_manifest(OUT / "generate")["counts"]["samples"]
    kept = read_manifest(OUT / "filter")["counts"]["kept"]
    summary = {
        "teacher_accuracy": accuracy(results, "teacher"),
        "student_base_accuracy": accuracy(results, "student-untrained"),
        "student_sft_accuracy": accuracy(results, "student-sft"),
        "student_kd_accuracy": accuracy(results, "student-kd"),
        "student_opd_accuracy": accuracy(results, "student-opd"),
        "samples_generated": generated,
        "samples_kept": kept,
        "seconds": round(seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "train_steps": read_manifest(OUT / "sft")["counts"]["global_step"],
        "opd_start_step": opd_start_step(),
        "costs": {stage: costs(stage) for stage in STUDENTS},
        "heldout_problems": results["models"][0]["metrics"]["toy"]["problems"],
        "recovery": recovery(results),
        "accuracy_over_training": {m["label"]: m["metrics"]["toy"]["pass@1"] for m in curve["models"]},
    }
    write_json(OUT / "summary.json", summary)
    plot_curve(curve, summary, OUT / "accuracy.png")
    table = summary_table(summary, results)
    (OUT / "summary.md").write_text(table)
    print("\n" + table)
    return 0


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary_table(s: dict[str, Any], results: dict[str, Any]) -> str:
    opd = s["costs"]["opd"]
    rows = [
        ("teacher (1.05M, 4 layers)", "teacher", "teacher_accuracy"),
        ("student, untrained (0.57M, 2 layers)", "student-untrained", "student_base_accuracy"),
        ("student after SFT", "student-sft", "student_sft_accuracy"),
        ("student after KD (top-5 logprobs)", "student-kd", "student_kd_accuracy"),
        (
            f"student after OPD (SFT step {s['opd_start_step']} + {opd['steps']} on-policy steps)",
            "student-opd",
            "student_opd_accuracy",
        ),
    ]
    stderr = {m["label"]: m["metrics"]["toy"]["pass@1_stderr"] for m in results["models"]}
    lines = [
        "| model | held-out accuracy | first-pass column errors | recovery R (forced error fixed) |",
        "|---|---|---|---|",
    ]
    for name, label, key in rows:
        r = s["recovery"].get(label) or {}
        cells = [percent(r.get("first_pass_error_rate")), percent(r.get("recovery_rate"))]
        lines.append(
            f"| {name} | {100 * s[key]:.1f}% ± {100 * stderr[label]:.1f} | " + " | ".join(cells) + " |"
        )
    sft = s["costs"]["sft"]
    lines.append("")
    lines.append(
        f"{s['samples_generated']} samples generated, {s['samples_kept']} kept by the filter; "
        f"{s['train_steps']} training steps per SFT/KD student; {s['heldout_problems']} held-out problems; "
        f"{s['seconds'] / 60:.1f} minutes in all ({', '.join(f'{k} {v:.0f} s' for k, v in s['stage_seconds'].items())})."
    )
    lines.append(
        f"Teacher tokens per step: SFT {sft['tokens_per_step']:,.0f} generated (traces trained on), "
        f"OPD {opd['tokens_per_step']:,.0f} scored (the rollouts); seconds per step: SFT "
        f"{sft['seconds_per_step']:.3f}, OPD {opd['seconds_per_step']:.3f}."
    )
    return "\n".join(lines) + "\n"
