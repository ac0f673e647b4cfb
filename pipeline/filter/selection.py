"""Per-problem selection: a pass-rate window (open-r1's difficulty filtering) and the best k samples.

The pass rate of a problem is its share of correct verdicts among all its samples graded by `math`/`code`
plus those dropped before grading for failing (cut off by the token budget, malformed), so this step goes after
verification (a recipe with a pass-rate window and no grading step before it is refused). Problems the teacher solves too rarely (noisy or
unsolvable) or too often (too easy to teach anything) can be dropped whole; then at most `per_problem`
samples of each remaining problem are kept, chosen by `rule`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from pipeline.filter.steps import Context, Drop, Item, Step


class Select(Step):
    name = "select"

    @dataclass(frozen=True)
    class Options:
        min_pass_rate: float = 0.0
        max_pass_rate: float = 1.0
        per_problem: int | None = None
        """Keep at most this many samples per problem (None: all that are left)."""
        rule: Literal["shortest", "random", "first"] = "shortest"
        seed: int = 0

    def needs_grading(self) -> bool:
        return self.options.min_pass_rate > 0 or self.options.max_pass_rate < 1

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        drops: dict[int, Drop] = {}
        by_problem: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_problem[item.sample.problem_id].append(i)
        for pid, indices in by_problem.items():
            correct, graded = context.graded(pid)
            if graded:
                rate = correct / graded
                why = (
                    "pass_rate_too_low"
                    if rate < self.options.min_pass_rate
                    else "pass_rate_too_high"
                    if rate > self.options.max_pass_rate
                    else None
                )
                if why:
                    drops.update({i: Drop(why, f"{correct}/{graded} correct") for i in indices})
                    continue
            drops.update(
                {
                    i: Drop("not_selected", f"over {self.options.per_problem} per problem")
                    for i in self.extra(items, indices)
                }
            )
        return drops

    def extra(self, items: list[Item], indices: list[int]) -> list[int]:
        k = self.options.per_problem
        if k is None or len(indices) <= k:
            return []
        if self.options.rule == "shortest":
            ranked = sorted(indices, key=lambda i: (len(items[i].sample.completion), i))
        elif self.options.rule == "random":
            ranked = random.Random(f"{self.options.seed}:{items[indices[0]].sample.problem_id}").sample(
                indices, len(indices)
            )
        else:
            ranked = indices
        return ranked[k:]
