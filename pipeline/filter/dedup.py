"""Duplicate and contamination steps: exact / near-duplicate removal, and n-gram decontamination.

`dedup` hashes a normalised text (exact) and indexes MinHash signatures of word shingles in an LSH index
(datasketch) for near duplicates, keeping the first occurrence. `decontaminate` drops samples whose problem
shares a word n-gram (default 8, as open-r1) with a benchmark problem; the rejected record names the
benchmark, its problem and the matching n-gram.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.filter.keys import KeyStore
from pipeline.filter.steps import Context, Drop, Item, Step
from pipeline.records.benchmarks import BENCHMARKS, load_benchmark, local_path, words

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_TABLES = itertools.count()


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

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.table = (
            f"dedup{next(_TABLES)}"  # a recipe may deduplicate twice (say, problems, then completions)
        )
        self.decided: dict[
            str, Drop | None
        ] = {}  # field problem: one decision per problem, for all its samples
        self.bands: tuple[int, int] | None = None

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        """Drops among this batch; what earlier batches kept is looked up in `context.keys` (on disk), once."""
        o = self.options
        if o.method != "exact" and self.bands is None:
            self._prepare_minhash()
        texts: dict[str, str] = {}  # key -> normalised text, of the units this batch decides, in order
        for item in items:
            key, text = dedup_text(item, o.field)
            if key not in self.decided and key not in texts:
                texts[key] = normalised(text)
        decided = self._judge_all(texts, context.keys)
        if o.field == "problem":  # one decision per problem, for its samples in later batches too
            self.decided.update(decided)
        drops = {}
        for i, item in enumerate(items):
            key = dedup_text(item, o.field)[0]
            if (drop := decided[key] if key in decided else self.decided[key]) is not None:
                drops[i] = drop
        return drops

    def _prepare_minhash(self) -> None:
        from datasketch import MinHash, MinHashLSH

        # an empty signature to copy: its random permutations are built once, not per text
        self._empty = MinHash(num_perm=self.options.num_perm, seed=self.options.seed)
        lsh = MinHashLSH(threshold=self.options.threshold, num_perm=self.options.num_perm)
        self.bands = (lsh.b, lsh.r)  # datasketch's banding for this threshold; its tables live in KeyStore

    def _judge_all(self, texts: dict[str, str], keys: KeyStore) -> dict[str, Drop | None]:
        """Each text in order against the earlier ones kept (earlier batches' looked up in one query)."""
        exact = (
            {k: hashlib.sha1(t.encode()).digest() for k, t in texts.items()}
            if self.options.method != "minhash"
            else {}
        )
        bands = {k: self._band_keys(t) for k, t in texts.items()} if self.bands is not None else {}
        seen = _Seen(keys.lookup(self.table, list(exact.values())))
        indexed = _Seen(keys.lookup(self.table + "-lsh", [b for bs in bands.values() for b in bs]))
        decided = {}
        for key in texts:
            decided[key] = self._judge(key, exact.get(key), bands.get(key), seen, indexed, keys)
        keys.insert(self.table, seen.new)
        keys.insert(self.table + "-lsh", indexed.new)
        return decided

    def _judge(
        self,
        key: str,
        digest: bytes | None,
        bands: list[bytes] | None,
        seen: _Seen,
        indexed: _Seen,
        keys: KeyStore,
    ) -> Drop | None:
        if digest is not None:
            if digest in seen.found:
                return Drop("exact_duplicate", f"of {seen.found[digest][1]}")
            seen.add([digest], keys.number(), key)
        if bands is not None:
            hits = [indexed.found[b] for b in bands if b in indexed.found]
            if hits:  # the earliest kept text it collides with
                return Drop("near_duplicate", f"of {min(hits)[1]}")
            indexed.add(bands, keys.number(), key)
        return None

    def _band_keys(self, norm: str) -> list[bytes]:
        """MinHashLSH's band keys of the text's signature (band b: hash values b*r..(b+1)*r), band-tagged."""
        tokens = norm.split()
        n = self.options.shingle
        shingles = {" ".join(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))}
        signature = self._empty.copy()
        signature.update_batch([s.encode() for s in shingles])
        b, r = self.bands
        values = signature.hashvalues
        return [
            band.to_bytes(2, "big") + bytes(values[band * r : (band + 1) * r].byteswap().data)
            for band in range(b)
        ]


class _Seen:
    """One batch's view of a key table: what was stored before it, plus what it adds (inserted at its end)."""

    def __init__(self, found: dict[bytes, tuple[int, str]]) -> None:
        self.found = found
        self.new: list[tuple[bytes, int, str]] = []

    def add(self, keys: list[bytes], number: int, value: str) -> None:
        for k in keys:
            self.found[k] = (number, value)
            self.new.append((k, number, value))


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

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.grams: dict[tuple[str, ...], tuple[str, str]] | None = None

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
        if self.grams is None:
            self.grams = self.index()  # once a run: the benchmarks' n-grams are its only state
        drops = {}
        for i, item in enumerate(items):
            if (drop := self.judge(item.sample.problem)) is not None:
                drops[i] = drop
        return drops

    @functools.lru_cache(maxsize=4096)  # noqa: B019  # a problem's samples are neighbours: judged once each
    def judge(self, problem: str) -> Drop | None:
        n, grams = self.options.ngram, self.grams
        tokens = words(problem)
        hit = next(
            (g for g in (tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1)) if g in grams), None
        )
        return (
            None
            if hit is None
            else Drop("contaminated", f"{grams[hit][0]} ({grams[hit][1]}): '{' '.join(hit)}'")
        )
