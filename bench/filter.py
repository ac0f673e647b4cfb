"""Filter throughput against math-verify, and the filter's memory and speed at scale against the code before #21.

    .venv/bin/python bench/filter.py [--repeat 8 --rounds 2]
    .venv/bin/python bench/filter.py --scale [--small 10000 --large 100000 --rounds 3 --large-rounds 1]

--scale: synthetic R1-like samples (~7 KB of reasoning each, 4 a problem, some wrong, truncated or duplicated;
bench/r1_like.py) through every kind of step (parse, finished, math, language, format, repetition, exact +
MinHash dedup, decontamination, select with a pass-rate window and 2 a problem), each run in its own process,
peak RSS from the process's own ru_maxrss (the grading workers are not counted). Figures: peak RSS at `--large`
over peak at `--small` (target <= 1.3), and samples/s of this code over the code at commit b95c8cb (extracted
with `git archive` and run from the same venv, alternating with this code, `--rounds` times, at `--small`;
target >= 0.9).

The answers are the 800 real Qwen2.5-Math responses of ../shared/data/grading (100 MATH problems x 8),
repeated `--repeat` times as distinct samples (>= 2,000). The baseline is what a user would write: for each
sample, `math_verify.parse` the gold and the text after `</think>`, then `math_verify.verify`, one process.
Both sides are warmed up once, untimed (imports, caches). The stage is the whole `distill filter` run (reading, parse / finished / math / language / format /
repetition / exact dedup steps, parquet, rejected.jsonl, report and plot, manifest). Both sides alternate.
Target (issue #4): ratio >= 1.7 on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
GRADED = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "grading"
    / "qwen25math_graded_math_100x8.jsonl"
)


def build_samples(path: Path, repeat: int) -> list[dict]:
    from pipeline.records.schema import Sample

    rows = [json.loads(line) for line in GRADED.read_text().splitlines()]
    samples = []
    for r in range(repeat):
        for row in rows:
            for j, code in enumerate(row["code"]):
                pid = f"q{row['idx']}-r{r}"
                samples.append(
                    dataclasses.asdict(
                        Sample(
                            id=f"{pid}/{j}",
                            problem_id=pid,
                            sample_index=j,
                            problem=row["question"],
                            answer=row["answer"],
                            prompt=[{"role": "user", "content": row["question"]}],
                            completion=code,
                            finish_reason="stop",
                            num_prompt_tokens=0,
                            num_completion_tokens=len(code.split()),
                            teacher="qwen2.5-math",
                            sampling={},
                            source="math",
                        )
                    )
                )
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return samples


def baseline(samples: list[dict]) -> float:
    import math_verify

    from pipeline.filter.parse import gradable_text

    t = time.perf_counter()
    correct = 0
    for s in samples:
        gold = math_verify.parse(f"${s['answer']}$")
        text = gradable_text(s["completion"])
        answer = math_verify.parse(text) if text is not None else []
        correct += bool(answer) and math_verify.verify(gold, answer)
    return len(samples) / (time.perf_counter() - t)


def stage(src: Path, out: Path) -> float:
    from pipeline.config import load_config
    from pipeline.filter.config import FilterConfig
    from pipeline.filter.stage import run

    steps = (
        "[{name: parse, allow_missing_think: true}, {name: finished}, {name: math}, {name: language}, "
        "{name: format}, {name: repetition}, {name: dedup, method: exact}]"
    )
    cfg = load_config(
        FilterConfig, None, [f"input={src}", f"output={out}", f"steps={steps}", "count_tokens=false"]
    )
    t = time.perf_counter()
    run(cfg)
    seconds = time.perf_counter() - t
    return json.loads((out / "report.json").read_text())["input"] / seconds


SCALE_RUN = """
import json, resource, sys, time
from pipeline.config import load_config
from pipeline.filter.config import FilterConfig
from pipeline.filter.stage import run
cfg = load_config(FilterConfig, None, sys.argv[1:])
wall, cpu = time.perf_counter(), time.process_time()
run(cfg)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": time.perf_counter() - wall, "cpu": time.process_time() - cpu + children.ru_utime
                  + children.ru_stime, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
SCALE_STEPS = (
    "[{name: parse}, {name: finished}, {name: math}, {name: language}, {name: format}, {name: repetition}, "
    "{name: dedup, method: both}, {name: decontaminate, benchmarks: [math500, aime24, amc23, gsm8k], "
    "data_dir: %s}, {name: select, min_pass_rate: 0.3, per_problem: 2}]"
)
BEFORE = "b95c8cb"  # the last commit with the in-memory filter (issue #21)


def scale_run(code: Path, src: Path, out: Path) -> dict:
    """One `distill filter` run of the code under `code` in its own process: seconds, cpu seconds, peak RSS."""
    import os
    import subprocess

    steps = SCALE_STEPS % (GRADED.parent.parent / "benchmarks")
    args = [f"input={src}", f"output={out}", f"steps={steps}", "count_tokens=false", "logprobs=false"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", SCALE_RUN, *args], cwd=code, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"filter run failed under {code}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def old_code(tmp: Path) -> Path:
    """The filter before streaming (commit BEFORE), extracted beside the benchmark's files."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    (tmp / "old").mkdir()
    archive = subprocess.run(["git", "archive", BEFORE, "pipeline", "prompts"], cwd=root, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tmp / "old")], input=archive.stdout, check=True)
    return tmp / "old"


def span(values: list[float], fmt: str = "{:.2f}") -> str:
    return fmt.format(min(values)) + ("" if len(values) == 1 else " - " + fmt.format(max(values)))


def scale(args: argparse.Namespace, tmp: Path) -> None:
    from bench.r1_like import write_samples

    root = Path(__file__).resolve().parent.parent
    small, large = tmp / "small.jsonl", tmp / "large.jsonl"
    write_samples(small, args.small)
    write_samples(large, args.large)  # its first `small` samples are the small set
    old = old_code(tmp)
    runs: dict[str, list[dict]] = {"old": [], "new": [], "large": []}
    for r in range(args.rounds):
        runs["old"].append(scale_run(old, small, tmp / "out-old"))
        runs["new"].append(scale_run(root, small, tmp / "out-new"))
        print(
            f"  round {r + 1} at {args.small:,}: before {runs['old'][-1]}, now {runs['new'][-1]}", flush=True
        )
    for r in range(args.large_rounds):
        runs["large"].append(scale_run(root, large, tmp / "out-large"))
        print(f"  round {r + 1} at {args.large:,}: now {runs['large'][-1]}", flush=True)
    rate = {k: [args.small / run["seconds"] for run in v] for k, v in runs.items() if k != "large"}
    cpu = {k: [run["cpu"] / args.small * 1000 for run in v] for k, v in runs.items() if k != "large"}
    rss = [run["rss_mb"] for run in runs["large"]]
    small_rss = [run["rss_mb"] for run in runs["new"]]
    old_rss = [run["rss_mb"] for run in runs["old"]]
    print(
        f"\nfilter at scale: synthetic R1-like samples (~7 KB reasoning), {args.rounds} rounds at {args.small:,}, "
        f"{args.large_rounds} at {args.large:,}"
    )
    print(
        f"  peak RSS at {args.small:,}: before {span(old_rss, '{:.0f}')} MB, now {span(small_rss, '{:.0f}')} MB"
    )
    if runs["large"]:
        print(
            f"  peak RSS at {args.large:,}: now {span(rss, '{:.0f}')} MB, {args.large / 1000:.0f}k / "
            f"{args.small / 1000:.0f}k: {max(rss) / min(small_rss):.2f} (worst pair; target <= 1.3)"
        )
    print(
        f"  samples/s at {args.small:,}: before {span(rate['old'], '{:.0f}')}, now {span(rate['new'], '{:.0f}')}"
    )
    ratios = [n / o for n, o in zip(rate["new"], rate["old"], strict=True)]
    print(
        f"  throughput now / before, per round: {span(ratios)} (mean {sum(ratios) / len(ratios):.2f}; target >= 0.9)"
    )
    print(f"  cpu ms a sample (process + grading workers): before {span(cpu['old'])}, now {span(cpu['new'])}")
    if runs["large"]:
        large_rate = [args.large / r["seconds"] for r in runs["large"]]
        print(f"  samples/s at {args.large:,}: now {span(large_rate, '{:.0f}')}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--scale", action="store_true", help="memory and speed at scale against the code before #21"
    )
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--large-rounds", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    if args.scale:
        return scale(args, tmp)
    samples = build_samples(tmp / "samples.jsonl", args.repeat)
    baseline(samples[:400])  # warm-up, untimed: imports, sympy's caches, matplotlib's font cache
    stage(tmp / "samples.jsonl", tmp / "warmup")
    base, staged = [], []
    for r in range(args.rounds):
        base.append(baseline(samples))
        staged.append(stage(tmp / "samples.jsonl", tmp / f"out-{r}"))
    b, s = sum(base) / len(base), sum(staged) / len(staged)
    print(
        f"\nfilter benchmark: {len(samples)} real answers (800 graded Qwen2.5-Math responses x {args.repeat}), "
        f"{args.rounds} alternating rounds"
    )
    print(f"  single-process math-verify loop: {b:,.0f} samples/s")
    print(f"  distill filter (math steps):     {s:,.0f} samples/s")
    print(f"  ratio {s / b:.2f} (target >= 1.7)")


if __name__ == "__main__":
    main()
