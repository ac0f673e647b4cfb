"""Per-problem selection: a pass-rate window (open-r1's difficulty filtering) and the best k samples.

The pass rate of a problem is its share of correct verdicts among all its samples graded by `math`/`code`
plus those dropped before grading for failing (cut off by the token budget, malformed), so this step goes after
verification (a recipe with a pass-rate window and no grading step before it is refused). Problems the
teacher solves too rarely (noisy or unsolvable) or too often (too easy to teach anything) can be dropped whole; then at most `per_problem`
samples of each remaining problem are kept, chosen by `rule`.

It needs the whole set, so it works in two passes (pipeline/filter/passes.py): the first `observe`s a compact key
per sample reaching it (completion length, sample index: 16 bytes), `decide` then picks the drops per problem,
and the second pass `run`s over the samples again, in order, dropping those picked.
"""

from __future__ import annotations

import bisect
import random
from array import array
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from pipeline.filter.steps import Context, Drop, Item, Step


class Select(Step):
    name = "select"
    whole_set: ClassVar[bool] = True

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

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.keys: dict[str, array] = {}
        """Per problem, in order of first appearance: (completion length, sample index) pairs, flat."""
        self.dropped = array("q")
        """After `decide`: the sample indices dropped, ascending, with their Drop in `self.why`."""
        self.why = array("q")
        self.drops: list[Drop] = []

    def observe(self, items: list[Item], context: Context) -> None:
        """Take in the compact keys of a batch of the samples that reach this step (first pass)."""
        for item in items:
            keys = self.keys.setdefault(item.sample.problem_id, array("q"))
            keys.extend((len(item.sample.completion), item.index))

    def decide(self, context: Context) -> None:
        """Choose, per problem, the samples to drop, from the keys observed (the whole set has been seen)."""
        indices, why = array("q"), array("q")
        interned: dict[Drop, int] = {}
        for pid, keys in self.keys.items():
            for index, drop in self.choose(pid, keys[0::2], keys[1::2], context):
                indices.append(index)
                why.append(interned.setdefault(drop, len(interned)))
        self.keys = {}
        self.drops = list(interned)
        order = np.argsort(np.frombuffer(indices, dtype=np.int64), kind="stable")
        self.dropped = array("q", np.frombuffer(indices, dtype=np.int64)[order].tobytes())
        self.why = array("q", np.frombuffer(why, dtype=np.int64)[order].tobytes())

    def choose(self, pid: str, lengths: array, indices: array, context: Context) -> list[tuple[int, Drop]]:
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
                return [(i, Drop(why, f"{correct}/{graded} correct")) for i in indices]
        extra = Drop("not_selected", f"over {self.options.per_problem} per problem")
        return [(i, extra) for i in self.extra(pid, lengths, indices)]

    def extra(self, pid: str, lengths: array, indices: array) -> list[int]:
        k = self.options.per_problem
        if k is None or len(indices) <= k:
            return []
        if self.options.rule == "shortest":
            ranked = [i for _, i in sorted(zip(lengths, indices, strict=True))]
        elif self.options.rule == "random":
            ranked = random.Random(f"{self.options.seed}:{pid}").sample(list(indices), len(indices))
        else:
            ranked = list(indices)
        return ranked[k:]

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        """The decided drops among a batch (second pass; batches come in ascending sample index)."""
        drops = {}
        for j, item in enumerate(items):
            at = bisect.bisect_left(self.dropped, item.index)
            if at < len(self.dropped) and self.dropped[at] == item.index:
                drops[j] = self.drops[self.why[at]]
        return drops
