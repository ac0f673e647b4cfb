"""What a model does with its own mistakes on the toy task v2 (checks after each column, pipeline/toy/checks.py):
its first-pass column error rate, and its forced-error recovery rate R.

    recovery: {benchmark: toy}           # in an eval recipe: R and first-pass errors on the `toy` benchmark

R: for each problem, the checked working up to one column is given as the start of the model's answer, that
column's line written wrong (one digit of its result; `column:` which one, 0 = the last digits, or one drawn per
problem from `seed`); the model continues it (eval's sampling, n per problem). It recovers when its next lines
are the failing check, `fix`, the right line and its passing check, judged here from the problem's own operands.
`recovery_correct` also asks for the right final answer. The first-pass column error rate comes from the
benchmark's ordinary samples: each column line not written right after a `fix`, against the right one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.records.read import read_samples
from pipeline.records.schema import Problem

PREFIX = "forced_prefix"  # the metadata field the forced problems carry their prefix in (prompt.prefix_field)


@dataclass(frozen=True)
class RecoveryConfig:
    benchmark: str
    """The benchmark (the toy task, `name: toy` or your own toy problems) whose problems get a forced error."""
    column: int | None = None
    """The column whose line is written wrong (0 = the last digits); None: one drawn per problem."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.column is not None and self.column < 0:
            raise ValueError("'recovery.column' must be >= 0")

    @property
    def name(self) -> str:
        """The forced problems' own benchmark folder under each model's output."""
        return f"{self.benchmark}-recovery"


def operands(p: Problem) -> tuple[int, int, str] | None:
    m = p.metadata or {}
    if isinstance(m.get("a"), int) and isinstance(m.get("b"), int) and m.get("op") in ("+", "-"):
        return m["a"], m["b"], m["op"]
    return None


def forced_problems(cfg: RecoveryConfig, problems: list[Problem]) -> list[Problem]:
    """The benchmark's problems that have the column to break, each with its forced prefix in metadata.
    Refuses a benchmark that is not the checked toy task, or where no problem has the column."""
    from pipeline.toy.checks import columns_of, forced_error_prefix

    field = "recovery.benchmark"
    if not problems or any(operands(p) is None for p in problems):
        bad = next((p.id for p in problems if operands(p) is None), None)
        raise UserError(
            f"benchmark '{cfg.benchmark}' is not the toy task with column checks (problem {bad!r} has no "
            "metadata a, b, op), so no error can be forced into its working",
            field=field,
            hint="point recovery.benchmark at the toy task's problems (name: toy), or drop `recovery:`",
        )
    rng, out = random.Random(cfg.seed), []
    for p in problems:
        a, b, op = operands(p)
        column = cfg.column if cfg.column is not None else rng.randrange(columns_of(a, b, op))
        prefix = forced_error_prefix(a, b, op, column, rng)
        if prefix is not None:
            out.append(replace(p, metadata={**p.metadata, PREFIX: prefix, "column": column}))
    if not out:
        raise UserError(
            f"no problem of benchmark '{cfg.benchmark}' has column {cfg.column}: no injection point",
            field="recovery.column",
            hint="use a column the problems have (0 = the last digits), or leave it unset",
        )
    return out


def recovery_metrics(folder: Path, forced: list[Problem]) -> dict[str, Any]:
    """R (and R with the right final answer) over every sample of the forced problems."""
    from pipeline.filter.math_grader import grade
    from pipeline.filter.parse import gradable_text
    from pipeline.toy.checks import recovered

    by_id = {p.id: p for p in forced}
    fixed = right = total = 0
    for s in read_samples(folder):
        p = by_id[s.problem_id]
        prefix = p.metadata[PREFIX]
        ok = recovered(s.completion[len(prefix) :], *operands(p), p.metadata["column"])
        fixed += ok
        right += ok and bool(grade(gradable_text(s.completion), p.answer).correct)
        total += 1
    return {"recovery_rate": fixed / max(total, 1), "recovery_correct": right / max(total, 1),
            "recovery_samples": total}  # fmt: skip


def first_pass_error_rate(rows: list[dict[str, Any]], problems: list[Problem]) -> float | None:
    """Wrong first attempts / attempted columns over the benchmark's graded samples (None: no column line)."""
    from pipeline.toy.checks import first_pass_errors

    by_id = {p.id: operands(p) for p in problems}
    wrong = attempted = 0
    for r in rows:
        if by_id.get(r["problem_id"]) is not None:
            w, n = first_pass_errors(r["completion"], *by_id[r["problem_id"]])
            wrong, attempted = wrong + w, attempted + n
    return wrong / attempted if attempted else None
