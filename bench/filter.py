"""Filter throughput: `distill filter` (math steps) against a single-process loop calling math-verify directly.

    .venv/bin/python bench/filter.py [--repeat 8 --rounds 2]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-filter-"))
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
