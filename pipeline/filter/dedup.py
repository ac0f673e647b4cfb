"""Duplicate and contamination steps: exact / near-duplicate removal, and n-gram decontamination.

`dedup` hashes a normalised text (exact) and indexes MinHash signatures of word shingles in an LSH index
(datasketch) for near duplicates, keeping the first occurrence. `decontaminate` drops samples whose problem
shares a word n-gram (default 8, as open-r1) with a benchmark problem; the rejected record names the
benchmark, its problem and the matching n-gram.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.filter.steps import Context, Drop, Item, Step
from pipeline.records.benchmarks import BENCHMARKS, load_benchmark, local_path, words

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalised(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def dedup_text(item: Item, what: str) -> tuple[str, str]:
    """(key that identifies the unit deduplicated, its text): a problem, or one sample's trace."""
    s = item.sample
    if what == "problem":
        return s.problem_id, s.problem
    return s.id, (item.reasoning or "") if what == "reasoning" else s.completion


class Dedup(Step):
    name = "dedup"

    @dataclass(frozen=True)
    class Options:
        field: Literal["completion", "reasoning", "problem"] = "completion"
        """What is compared; for `problem`, all samples of a later duplicate problem go."""
        method: Literal["exact", "minhash", "both"] = "both"
        threshold: float = 0.85
        """Estimated Jaccard similarity of word shingles above which two texts are near duplicates."""
        shingle: int = 5
        num_perm: int = 128
        seed: int = 0

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        o = self.options
        seen: dict[str, str] = {}  # normalised-text hash -> first key
        decided: dict[str, Drop | None] = {}
        lsh = self._lsh() if o.method != "exact" else None
        drops = {}
        for i, item in enumerate(items):
            key, text = dedup_text(item, o.field)
            if key not in decided:
                decided[key] = self._judge(key, normalised(text), seen, lsh)
            if decided[key] is not None:
                drops[i] = decided[key]
        return drops

    def _lsh(self):
        from datasketch import MinHash, MinHashLSH

        # an empty signature to copy: its random permutations are built once, not per text
        self._empty = MinHash(num_perm=self.options.num_perm, seed=self.options.seed)
        return MinHashLSH(threshold=self.options.threshold, num_perm=self.options.num_perm)

    def _judge(self, key: str, norm: str, seen: dict[str, str], lsh) -> Drop | None:
        if self.options.method != "minhash":
            digest = hashlib.sha1(norm.encode()).hexdigest()
            if digest in seen:
                return Drop("exact_duplicate", f"of {seen[digest]}")
            seen[digest] = key
        if lsh is not None:
            signature = self._minhash(norm)
            if match := lsh.query(signature):
                return Drop("near_duplicate", f"of {match[0]}")
            lsh.insert(key, signature)
        return None

    def _minhash(self, norm: str):
        tokens = norm.split()
        n = self.options.shingle
        shingles = {" ".join(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))}
        signature = self._empty.copy()
        signature.update_batch([s.encode() for s in shingles])
        return signature


class Decontaminate(Step):
    name = "decontaminate"

    @dataclass(frozen=True)
    class Options:
        benchmarks: list[str] = field(
            default_factory=lambda: [
                "math500",
                "aime24",
                "aime25",
                "amc23",
                "gsm8k",
                "gpqa-diamond",
                "humaneval",
                "mbpp",
                "livecodebench",
            ]
        )
        ngram: int = 8
        files: dict[str, str] = field(default_factory=dict)
        """Local copies by benchmark name (`math500: data/math500.jsonl`), used instead of the Hub."""
        data_dir: str | None = None
        """A folder holding local copies named `<benchmark>.jsonl` (or `<benchmark>_test.jsonl`)."""

        def __post_init__(self) -> None:
            unknown = [b for b in [*self.benchmarks, *self.files] if b not in BENCHMARKS]
            if unknown:
                raise ValueError(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")

    def index(self) -> dict[tuple[str, ...], tuple[str, str]]:
        """Every benchmark problem's word n-grams -> (benchmark, problem id)."""
        o = self.options
        grams: dict[tuple[str, ...], tuple[str, str]] = {}
        for name in o.benchmarks:
            path = o.files.get(name) or (local_path(name, o.data_dir) if o.data_dir else None)
            for problem in load_benchmark(name, path):
                tokens = words(problem.problem)
                for i in range(len(tokens) - o.ngram + 1):
                    grams.setdefault(tuple(tokens[i : i + o.ngram]), (name, problem.id))
        return grams

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        grams = self.index()
        n = self.options.ngram
        found: dict[str, Drop | None] = {}
        drops = {}
        for i, item in enumerate(items):
            pid = item.sample.problem_id
            if pid not in found:
                tokens = words(item.sample.problem)
                hit = next(
                    (g for g in (tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1)) if g in grams),
                    None,
                )
                found[pid] = (
                    None
                    if hit is None
                    else Drop("contaminated", f"{grams[hit][0]} ({grams[hit][1]}): '{' '.join(hit)}'")
                )
            if found[pid] is not None:
                drops[i] = found[pid]
        return drops
