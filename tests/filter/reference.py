"""A plain in-memory filter: what `distill filter` must output, computed the straightforward way, for the tests.

Every sample in one list, each step over the whole list of samples still kept, dicts and sets for what the
whole-set steps remember, datasketch's own in-memory MinHashLSH for near duplicates, the graders called one
sample at a time. It shares with the stage only the per-sample checks (`Step.check`) and the graders, which
the streaming work did not touch; everything a stream changes (state across batches, two passes, ordering,
counting) is written again here.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.filter.code_grader import grade_code
from pipeline.filter.dedup import Decontaminate, Dedup, dedup_text, normalised
from pipeline.filter.math_grader import grade
from pipeline.filter.parse import gradable_text
from pipeline.filter.selection import Select
from pipeline.filter.steps import Item, Step
from pipeline.filter.verification import Code, Math
from pipeline.records.benchmarks import words
from pipeline.records.code_tests import normalize_tests
from pipeline.records.schema import Sample
from pipeline.sandbox.box import Sandbox


@dataclass
class Outcome:
    kept: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    """(id, step, reason, detail), in input order."""
    steps: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, Counter] = field(default_factory=dict)
    failed: Counter = field(default_factory=Counter)
    items: list[Item] = field(default_factory=list)


def reference(samples: list[Sample], steps: list[Step]) -> Outcome:
    out = Outcome(items=[Item.from_sample(s, i) for i, s in enumerate(samples)])
    fate: dict[int, tuple[str, str, str | None]] = {}
    alive = list(range(len(samples)))
    for step in steps:
        drops = drops_of(step, [out.items[i] for i in alive], out)
        reasons: dict[str, int] = {}
        for j, (reason, detail) in drops.items():
            fate[alive[j]] = (step.name, reason, detail)
            reasons[reason] = reasons.get(reason, 0) + 1
            if step.failure:
                out.failed[out.items[alive[j]].sample.problem_id] += 1
        out.steps.append({"step": step.name, "in": len(alive), "dropped": len(drops), "reasons": reasons})
        alive = [i for j, i in enumerate(alive) if j not in drops]
    out.kept = [samples[i].id for i in alive]
    out.rejected = [(samples[i].id, *fate[i]) for i in sorted(fate)]
    return out


def drops_of(step: Step, items: list[Item], out: Outcome) -> dict[int, tuple[str, str | None]]:
    if isinstance(step, Math | Code):
        return graded(step, items, out)
    if isinstance(step, Dedup):
        return deduplicated(step.options, items)
    if isinstance(step, Decontaminate):
        return contaminated(step, items)
    if isinstance(step, Select):
        return selected(step.options, items, out)
    return {i: (d.reason, d.detail) for i, it in enumerate(items) if (d := step.check(it)) is not None}


def graded(step: Step, items: list[Item], out: Outcome) -> dict[int, tuple[str, str | None]]:
    drops = {}
    for i, it in enumerate(items):
        text = gradable_text(it.sample.completion)
        if isinstance(step, Math):
            v = grade(text, it.sample.answer, step.options.timeout)
        else:
            tests = normalize_tests(it.sample.tests) if it.sample.tests is not None else None
            v = grade_code(text, tests, step.options.timeout, Sandbox(mode=step.options.sandbox.mode))
        key = {True: "correct", False: "wrong", None: "cannot_tell"}[v.correct]
        out.verdicts.setdefault(it.sample.problem_id, Counter())[key] += 1
        if v.correct is False:
            drops[i] = (v.reason, f"extracted {v.extracted_answer!r}"[:300])
        elif v.correct is None and step.options.cannot_tell == "drop":
            drops[i] = (f"cannot_tell_{v.reason}", None)
    return drops


def deduplicated(o: Dedup.Options, items: list[Item]) -> dict[int, tuple[str, str | None]]:
    """First occurrence kept; a near duplicate names the earliest kept text it collides with."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=o.threshold, num_perm=o.num_perm)
    order: dict[str, int] = {}  # key -> when it entered the index
    first_of: dict[str, str] = {}
    decided: dict[str, tuple[str, str | None] | None] = {}
    drops = {}
    for i, it in enumerate(items):
        key, text = dedup_text(it, o.field)
        if key not in decided:
            norm, decided[key] = normalised(text), None
            digest = hashlib.sha256(norm.encode()).hexdigest()
            if o.method != "minhash" and digest in first_of:
                decided[key] = ("exact_duplicate", f"of {first_of[digest]}")
            elif o.method != "exact":
                first_of.setdefault(digest, key)
                m = MinHash(num_perm=o.num_perm, seed=o.seed)
                tokens = norm.split()
                m.update_batch(
                    [
                        " ".join(tokens[j : j + o.shingle]).encode()
                        for j in range(max(1, len(tokens) - o.shingle + 1))
                    ]
                )
                if match := lsh.query(m):
                    decided[key] = ("near_duplicate", f"of {min(match, key=order.__getitem__)}")
                else:
                    lsh.insert(key, m)
                    order[key] = len(order)
            else:
                first_of[digest] = key
        if decided[key] is not None:
            drops[i] = decided[key]
    return drops


def contaminated(step: Decontaminate, items: list[Item]) -> dict[int, tuple[str, str | None]]:
    grams, n = step.index(), step.options.ngram
    drops = {}
    for i, it in enumerate(items):
        tokens = words(it.sample.problem)
        hits = [
            tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1) if tuple(tokens[j : j + n]) in grams
        ]
        if hits:
            bench, pid = grams[hits[0]]
            drops[i] = ("contaminated", f"{bench} ({pid}): '{' '.join(hits[0])}'")
    return drops


def selected(o: Select.Options, items: list[Item], out: Outcome) -> dict[int, tuple[str, str | None]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it.sample.problem_id].append(i)
    drops = {}
    for pid, members in groups.items():
        c = out.verdicts.get(pid, Counter())
        attempted = c["correct"] + c["wrong"] + out.failed[pid] if out.verdicts else 0
        rate = c["correct"] / attempted if attempted else None
        if rate is not None and not o.min_pass_rate <= rate <= o.max_pass_rate:
            why = "pass_rate_too_low" if rate < o.min_pass_rate else "pass_rate_too_high"
            drops.update({i: (why, f"{c['correct']}/{attempted} correct") for i in members})
            continue
        if o.per_problem is None or len(members) <= o.per_problem:
            continue
        if o.rule == "shortest":
            ranked = sorted(members, key=lambda i: (len(items[i].sample.completion), i))
        elif o.rule == "random":
            ranked = random.Random(f"{o.seed}:{pid}").sample(members, len(members))
        else:
            ranked = members
        drops.update(
            {i: ("not_selected", f"over {o.per_problem} per problem") for i in ranked[o.per_problem :]}
        )
    return drops


def pass_rates(out: Outcome) -> dict[str, float]:
    problems = set(out.verdicts) | (set(out.failed) if out.verdicts else set())
    rates = {}
    for pid in problems:
        c = out.verdicts.get(pid, Counter())
        attempted = c["correct"] + c["wrong"] + out.failed[pid]
        if attempted:
            rates[pid] = round(c["correct"] / attempted, 4)
    return rates


def completion_stats(samples: list[Sample]) -> dict[str, float] | None:
    if not samples:
        return None
    a = np.array([s.num_completion_tokens for s in samples])
    return {"count": len(a), "mean": round(float(a.mean()), 1), "p50": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": int(a.max()), "min": int(a.min())}  # fmt: skip
