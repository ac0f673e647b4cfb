"""Memory and time of generate's plan (read and check every input record, render and check every prompt against
the context, skip what is written) at two input sizes, this code against the code before it kept ids only.

    .venv/bin/python bench/generate_plan.py [--small 10000 --large 100000 --n 4 --rounds 2 --baseline c9f8a17]

Problems are MATH-500's (../shared/data/benchmarks), repeated with distinct ids and texts up to the size asked,
`--n` samples each, the chat template of the project's tiny model (its tokenizer). Each measurement is its own
process: the RSS the plan holds (RSS after `make_plan` minus RSS before it, imports and tokenizer loaded), the
process's peak RSS (ru_maxrss) and the plan's seconds.
The baseline is the code at `--baseline` (extracted with `git archive`, run from the same venv), alternating
with this code, `--rounds` times. Figures: the plan's memory per planned sample, peak at `--large` over peak at
`--small` (the whole process), and this code's seconds over the baseline's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATH500 = ROOT.parent / "shared" / "data" / "benchmarks" / "math500.jsonl"

CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pipeline.config import load_config
from pipeline.generate.config import GenerateConfig
from pipeline.generate.plan import make_plan
from pipeline.preflight import load_tokenizer
cfg = load_config(GenerateConfig, None, sys.argv[2:])
tokenizer = load_tokenizer(cfg)
page = resource.getpagesize() / 2**20
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
before, t = rss(), time.perf_counter()
plan = make_plan(cfg, tokenizer, None, allow_incomplete=False)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "before_mb": before, "held_mb": rss(), "peak_mb": peak}))
"""


def write_problems(path: Path, count: int) -> Path:
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()]
    with path.open("w") as f:
        for i in range(count):
            row = rows[i % len(rows)]
            f.write(
                json.dumps({"id": f"p{i}", "problem": f"{row['problem']} ({i})", "answer": row["answer"]})
                + "\n"
            )
    return path


def measure(root: Path, model: Path, problems: Path, out: Path, n: int) -> dict[str, float]:
    args = [
        f"model={model}",
        f"problems.path={problems}",
        f"output={out}",
        f"sampling.n={n}",
        "engine={max_model_len: 2048}",
    ]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default="c9f8a17")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", TinyModelSpec(seed=0))
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        sizes = {size: write_problems(tmp / f"p{size}.jsonl", size) for size in (args.small, args.large)}
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for name, root in (("this code", ROOT), (f"baseline {args.baseline}", base)):
                for size, problems in sizes.items():
                    m = measure(root, model, problems, tmp / f"out-{r}-{size}", args.n)
                    results.setdefault((name, size), []).append(m)
                    plan_mb = m["held_mb"] - m["before_mb"]
                    print(
                        f"round {r + 1} {name:>18} {size:>7,} problems x {args.n}: plan {plan_mb:7.1f} MB "
                        f"({plan_mb * 1024 * 1024 / (size * args.n):6.0f} B a sample), process peak "
                        f"{m['peak_mb']:7.1f} MB, {m['seconds']:6.1f} s",
                        flush=True,
                    )
    print("\nsummary (ranges over rounds)")
    names = ["this code", f"baseline {args.baseline}"]
    for name in names:
        per = [
            (m["held_mb"] - m["before_mb"]) * 1024 * 1024 / (args.large * args.n)
            for m in results[(name, args.large)]
        ]
        growth = [
            big["peak_mb"] / small["peak_mb"]
            for big, small in zip(results[(name, args.large)], results[(name, args.small)], strict=True)
        ]
        print(
            f"{name:>18}: plan at {args.large:,} problems {min(per):.0f}-{max(per):.0f} B a sample; "
            f"process peak {args.large:,} / {args.small:,} = {min(growth):.2f}-{max(growth):.2f}"
        )
    for size in sizes:
        ratio = [
            a["seconds"] / b["seconds"]
            for a, b in zip(results[(names[0], size)], results[(names[1], size)], strict=True)
        ]
        print(f"seconds this code / baseline at {size:,} problems: {min(ratio):.2f}-{max(ratio):.2f}")
    print(
        f"(median plan seconds at {args.large:,}: {statistics.median(m['seconds'] for m in results[(names[0], args.large)]):.1f})"
    )


if __name__ == "__main__":
    main()
