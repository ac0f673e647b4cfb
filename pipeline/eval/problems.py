"""The problems each benchmark is scored on, loaded before any engine starts and written once under the output:
a named benchmark through its own mapping (pipeline/records/benchmarks.py), a problem set of your own as
`generate` reads problems (same `fields:` mapping, JSONL, parquet or a Hub dataset).

    problems = load(bench)                  # list[Problem]; a bad record: one line naming file, row and field
    kind_of(bench, problems)                # "math" | "code" | "choice": how its answers are graded
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.eval.config import BenchmarkSpec, EvalConfig, Kind
from pipeline.records.benchmarks import BENCHMARKS, load_benchmark
from pipeline.records.read import located_problems, read_jsonl
from pipeline.records.schema import Problem
from pipeline.records.write import write_jsonl


def load(bench: BenchmarkSpec) -> list[Problem]:
    """Every problem of `bench`, in order (its first `limit`)."""
    if bench.named:
        return load_benchmark(bench.name, bench.path, bench.fields, bench.limit)
    return [p if p.source else replace(p, source=bench.name) for _, p in located_problems(bench.source())]


def kind_of(bench: BenchmarkSpec, problems: list[Problem]) -> Kind:
    if bench.kind is not None:
        return bench.kind
    if bench.named:
        return BENCHMARKS[bench.name].kind
    return "code" if any(p.tests for p in problems) else "math"


def write_problems(cfg: EvalConfig, bench: BenchmarkSpec, problems: list[Problem]) -> Path:
    """`output/problems/<name>.jsonl`, rewritten only when the problem ids changed (a rerun resumes)."""
    path = Path(cfg.output) / "problems" / f"{bench.name}.jsonl"
    if not path.exists() or [row["id"] for _, row in read_jsonl(path)] != [p.id for p in problems]:
        write_jsonl(path, problems)
    return path
