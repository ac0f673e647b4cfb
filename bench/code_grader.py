"""Code grading throughput: today's sandboxed grader against the grader of a baseline commit, same machine.

    .venv/bin/python bench/code_grader.py [--limit 80 --rounds 2 --baseline 937fc12]

The programs are the canonical solutions of HumanEval (prompt + canonical_solution) and MBPP (code), the first
`--limit` of each, from ../shared/data/benchmarks, graded against their own tests with `grade_code_many` (one
worker per core). The baseline is the same call on the code of `--baseline` (the commit before issue #12,
whose grader ran prelude + answer + asserts in one sandboxed process), extracted with `git archive` into a
temporary folder. Each side runs in its own subprocess (so the two `pipeline` packages never meet), warmed up
once untimed; the sides alternate. Target (issue #12): ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"

# Run inside each side's subprocess: grade the items, print samples/s, the pass count and the sandbox mode.
SIDE = """
import json, sys, time
from pipeline.filter.code_grader import grade_code_many
from pipeline.records.code_tests import normalize_tests
items = [(text, normalize_tests(tests)) for text, tests in json.load(open(sys.argv[1]))]
grade_code_many(items[:8])  # warm-up: imports, the sandbox check
started = time.perf_counter()
verdicts = grade_code_many(items)
seconds = time.perf_counter() - started
print(json.dumps({"rate": len(items) / seconds, "passed": sum(v.correct is True for v in verdicts)}))
"""


def canonical_items(limit: int) -> list[tuple[str, dict]]:
    """(answer text, raw tests record) of the first `limit` HumanEval and MBPP canonical solutions."""
    read = lambda name: [json.loads(line) for line in (BENCHMARKS / f"{name}.jsonl").read_text().splitlines()]  # noqa: E731
    fence = "```python\n{}\n```"
    humaneval = [(fence.format(r["prompt"] + r["canonical_solution"]), r) for r in read("humaneval")[:limit]]
    mbpp = [(fence.format(r["code"]), r) for r in read("mbpp")[:limit]]
    return humaneval + mbpp


def extract(commit: str, into: Path) -> Path:
    """The `pipeline` package of `commit`, unpacked under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "pipeline"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def side(root: Path, items_file: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", SIDE, str(items_file)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{root}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=80, help="programs of each benchmark")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default="937fc12", help="commit whose grader is the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        items_file = Path(tmp) / "items.json"
        items_file.write_text(json.dumps(canonical_items(args.limit)))
        baseline_root = extract(args.baseline, Path(tmp))
        rates: dict[str, list[float]] = {"baseline": [], "current": []}
        for _ in range(args.rounds):
            for name, root in (("baseline", baseline_root), ("current", REPO)):
                result = side(root, items_file)
                rates[name].append(result["rate"])
                print(f"{name:8s} {result['rate']:6.1f} samples/s, {result['passed']} passed", flush=True)
    mean = {name: sum(r) / len(r) for name, r in rates.items()}
    print(f"ratio current / baseline: {mean['current'] / mean['baseline']:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
