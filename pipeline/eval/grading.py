"""One model's saved samples on one benchmark, graded with the filter's verifiers and scored.

rows = grade(cfg, folder, "math")      # verdicts, also written to folder/graded.jsonl
metrics = score(rows, cfg.ks, "math")  # pass@1 ± stderr, pass@k, cons@n, tokens, truncation
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.eval.config import EvalConfig
from pipeline.records.read import read_samples
from pipeline.records.schema import to_row
from pipeline.records.write import write_jsonl


def grade(cfg: EvalConfig, folder: Path, kind: str) -> list[dict[str, Any]]:
    """Verdicts for every saved sample of one model on one benchmark, written to graded.jsonl."""
    from pipeline.filter.parse import gradable_text
    from pipeline.filter.verify import with_verdict

    samples = sorted(read_samples(folder), key=lambda s: (s.problem_id, s.sample_index))
    items = [(gradable_text(s.completion), s) for s in samples]
    if kind == "code":
        from pipeline.filter.code_grader import grade_code_many
        from pipeline.records.code_tests import normalize_tests
        from pipeline.sandbox.box import Sandbox

        verdicts = grade_code_many(
            [(t, normalize_tests(s.tests) if s.tests else None) for t, s in items],
            timeout=cfg.timeout,
            sandbox=Sandbox(mode=cfg.sandbox.mode),
        )
    else:
        from pipeline.filter.math_pool import grade_many

        verdicts = grade_many([(t, s.answer) for t, s in items], timeout=cfg.timeout)
    rows = [with_verdict(to_row(s), v, kind) for (_, s), v in zip(items, verdicts, strict=True)]
    write_jsonl(folder / "graded.jsonl", rows)
    return rows


def score(rows: list[dict[str, Any]], ks: list[int], kind: str) -> dict[str, Any]:
    from pipeline.eval.metrics import score_problems

    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    groups = [sorted(g, key=lambda r: r["sample_index"]) for g in by_problem.values()]
    answers = [[r["extracted_answer"] for r in g] for g in groups] if kind != "code" else None
    metrics = score_problems([[r["correct"] for r in g] for g in groups], answers, ks)
    metrics["mean_output_tokens"] = sum(r["num_completion_tokens"] for r in rows) / max(len(rows), 1)
    metrics["truncation_rate"] = sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1)
    metrics["cannot_tell"] = sum(r["correct"] is None for r in rows)
    return metrics
