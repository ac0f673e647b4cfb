"""Scores of sampled answers: pass@1 with its standard error, unbiased pass@k, cons@k, length and truncation.

    scores = score_problems([[True, False, True, True], ...], answers=[["5", "6", "5", "5"], ...], ks=[1, 4])

pass@1 is the mean over problems of each problem's share of correct samples (DeepSeek-R1's "pass@1 over n
samples"); its standard error is the standard deviation of those shares over problems / sqrt(problems).
pass@k is the unbiased estimator of Chen et al. (2021): per problem 1 - C(n - c, k) / C(n, k), averaged.
cons@k is majority voting over the first k samples' extracted answers (ties: the answer seen first).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

log = logging.getLogger("distill.eval")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples with c correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i): the numerically stable form of 1 - C(n-c, k) / C(n, k)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-empty answer (the first seen among ties), or None."""
    counts = Counter(a for a in answers if a)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a and counts[a] == best)


def cons_at_k(correct: Sequence[bool | None], answers: Sequence[str | None], k: int) -> bool:
    """Whether the majority answer of the first k samples is a correct one."""
    vote = majority(answers[:k])
    return vote is not None and any(c for a, c in zip(answers[:k], correct[:k], strict=True) if a == vote)


def score_problems(
    correct: list[list[bool | None]], answers: list[list[str | None]] | None = None, ks: Sequence[int] = (1,)
) -> dict[str, float | int | None]:
    """Aggregate per-problem verdict lists (None = cannot tell, counted as not correct) into the metrics."""
    if not correct:
        return {"problems": 0}
    n = min(len(c) for c in correct)
    if (most := max(len(c) for c in correct)) != n:
        short = sum(len(c) < most for c in correct)
        log.warning(
            "%d of %d problems have fewer samples than the rest (%d, not %d): every problem is scored on its "
            "first %d, so pass@k compares like with like; rerun generation to complete the others",
            short,
            len(correct),
            n,
            most,
            n,
        )
    solved = [sum(bool(x) for x in c[:n]) for c in correct]
    shares = [c / n for c in solved]
    p = len(shares)
    mean = sum(shares) / p
    var = sum((s - mean) ** 2 for s in shares) / (p - 1) if p > 1 else 0.0
    out: dict[str, float | int | None] = {
        "problems": p,
        "n": n,
        "pass@1": mean,
        "pass@1_stderr": math.sqrt(var / p),
    }
    for k in ks:
        if k > 1 and k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in solved) / p
    if answers is not None:
        out[f"cons@{n}"] = sum(cons_at_k(c, a, n) for c, a in zip(correct, answers, strict=True)) / p
    return out
