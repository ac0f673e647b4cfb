"""Filter steps: each a small class that keeps a sample or drops it with a reason (datatrove's shape).

    step = cfg.build_steps()[0]          # FilterConfig: the recipe's `steps:` list, e.g. {name: repetition}
    drops = step.run(items, context)     # {item index: Drop(reason, detail)} for the items it drops

A step is chosen and configured by name in the recipe's `steps:` list; its options are a frozen dataclass
(`Options`), checked like the rest of the recipe. Samples reach a step in batches, in input order. Per-sample
steps implement `check(item)`; steps that work on a batch at once (verification in parallel) or remember what
came before (dedup) implement `run`; a step that must see every sample before deciding any (selection) is
`whole_set` and implements `observe` and `decide` too. The stage counts drops per step
and reason and writes every dropped sample to rejected.jsonl. This module holds the per-sample text checks;
verification.py, dedup.py and select.py hold the others.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.filter.keys import KeyStore
from pipeline.filter.parse import split_completion
from pipeline.records.schema import Sample


@dataclass(frozen=True)
class Drop:
    reason: str
    detail: str | None = None


@dataclass
class Item:
    """A sample going through the filter, with what the steps learn about it."""

    sample: Sample
    reasoning: str | None = None
    answer: str | None = None
    correct: bool | None = None
    extracted_answer: str | None = None
    verdict_reason: str | None = None
    reasoning_tokens: int | None = None
    answer_tokens: int | None = None
    parse_error: str | None = None
    """Why the completion is not `<think>` reasoning `</think>` answer (the parse step drops it for this)."""
    index: int = 0
    """The sample's position in the input (the order of the dataset and of rejected.jsonl)."""
    shard: str | None = None
    """The file it was read from (its logprob sidecar sits beside it)."""

    @classmethod
    def from_sample(cls, sample: Sample, index: int = 0, shard: str | None = None) -> Item:
        parsed = split_completion(sample.completion)
        return cls(
            sample, parsed.reasoning, parsed.answer, parse_error=parsed.error, index=index, shard=shard
        )


@dataclass
class Context:
    """What steps share: a token counter, per-problem verdict counts (for pass rates), parallelism."""

    count_tokens: Any = None
    workers: int | None = None
    verdicts: dict[str, Counter] = field(default_factory=dict)
    sandbox: str | None = None
    """The sandbox mode code ran in (the code step sets it), for the report."""
    failed: Counter = field(default_factory=Counter)
    """Per problem, samples dropped before grading for a failure of the teacher (truncated, malformed)."""
    keys: KeyStore = field(default_factory=KeyStore)
    """Where the whole-set steps keep their per-sample keys (the stage puts it on disk)."""

    def record_verdict(self, item: Item) -> None:
        key = {True: "correct", False: "wrong", None: "cannot_tell"}[item.correct]
        self.verdicts.setdefault(item.sample.problem_id, Counter())[key] += 1

    def record_failure(self, item: Item) -> None:
        self.failed[item.sample.problem_id] += 1

    def problems(self) -> set[str]:
        """Problems with a pass rate: those graded, and once anything was graded, those whose every sample
        failed before grading (their rate is 0)."""
        return set(self.verdicts) | (set(self.failed) if self.verdicts else set())

    def graded(self, problem_id: str) -> tuple[int, int]:
        """(correct, attempted) samples of a problem: its pass rate is their ratio when attempted > 0.
        Attempted counts the graded samples and those that failed before grading (cut off, malformed)."""
        c = self.verdicts.get(problem_id) or Counter()
        if not self.verdicts:
            return 0, 0  # no grading step ran: no pass rates at all
        return c["correct"], c["correct"] + c["wrong"] + self.failed[problem_id]


class Step:
    name: ClassVar[str]
    failure: ClassVar[bool] = False
    """A drop by this step is the teacher failing the problem (counts against its pass rate)."""
    whole_set: ClassVar[bool] = False
    """It decides only once it has seen every sample reaching it (`observe`, then `decide`, then `run`)."""

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: Any) -> None:
        self.options = options

    def prepare(self) -> None:
        """Check what the step needs before the stage runs any step (the code step: its sandbox)."""

    def check(self, item: Item) -> Drop | None:
        raise TypeError(f"step {self.name} implements run(), not check()")

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        """Drops among one batch of the samples still kept, by position in `items`; batches come in input order."""
        return {i: drop for i, item in enumerate(items) if (drop := self.check(item)) is not None}

    def observe(self, items: list[Item], context: Context) -> None:
        """A whole-set step's first pass: take in what it needs of a batch (compact keys, not the items)."""

    def decide(self, context: Context) -> None:
        """A whole-set step's decision, once every batch has been observed."""

    def close(self) -> None:
        """Release what the step kept open across batches (grading processes), once the run is over."""


class Parse(Step):
    """Split reasoning and answer; drop malformed traces (R1's format: `<think>` reasoning `</think>` answer)."""

    name = "parse"
    failure = True

    @dataclass(frozen=True)
    class Options:
        allow_missing_think: bool = False
        """Keep completions with no think block at all (plain chain-of-thought)."""

    def check(self, item: Item) -> Drop | None:
        if item.parse_error == "missing_think" and self.options.allow_missing_think:
            item.reasoning = ""
            return None
        return Drop(item.parse_error) if item.parse_error else None


class Finished(Step):
    """Drop traces cut off by the token budget (`finish_reason == "length"`)."""

    name = "finished"
    failure = True

    def check(self, item: Item) -> Drop | None:
        return Drop("truncated") if item.sample.finish_reason == "length" else None


# --- language mixing ----------------------------------------------------------------------------------------

_LATEX = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|\\[a-zA-Z]+", re.DOTALL)
_CODE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)
_SCRIPTS = (
    "LATIN",
    "CJK",
    "HIRAGANA",
    "KATAKANA",
    "HANGUL",
    "CYRILLIC",
    "GREEK",
    "ARABIC",
    "HEBREW",
    "DEVANAGARI",
    "THAI",
)


@functools.cache  # per letter of every trace: the lookup depends on the letter alone
def script_of(char: str) -> str | None:
    """The writing system of a letter (CJK ideographs, kana and Hangul kept apart), None for non-letters."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return next((s for s in _SCRIPTS if name.startswith(s) or f" {s} " in f" {name} "), "OTHER")


def script_mix(text: str) -> Counter:
    """Letters per script, outside math (LaTeX) and code, where Latin letters are notation, not language."""
    return Counter(s for ch in _CODE.sub(" ", _LATEX.sub(" ", text)) if (s := script_of(ch)))


# Japanese writes with kanji and kana together, Korean may mix in Hanja: one language, several scripts.
_SAME_LANGUAGE = {
    "CJK": {"CJK", "HIRAGANA", "KATAKANA"},
    "HIRAGANA": {"CJK", "HIRAGANA", "KATAKANA"},
    "KATAKANA": {"CJK", "HIRAGANA", "KATAKANA"},
    "HANGUL": {"HANGUL", "CJK"},
}


class Language(Step):
    """R1's language-mixing rule: drop reasoning whose letters stray from the problem's script.

    The problem's dominant script (outside LaTeX and code) is its language's; the reasoning may use it (and the
    scripts the same language writes with) plus at most `max_foreign` of its letters in others.
    """

    name = "language"

    @dataclass(frozen=True)
    class Options:
        max_foreign: float = 0.05
        """Largest share of the reasoning's letters in scripts foreign to the problem's."""
        min_letters: int = 20
        """Shorter reasoning is not judged."""
        expected: str | None = None
        """Force the expected script (e.g. LATIN) instead of reading it from the problem."""

    def check(self, item: Item) -> Drop | None:
        text = item.reasoning if item.reasoning is not None else item.sample.completion
        mix = script_mix(text)
        total = sum(mix.values())
        if total < self.options.min_letters:
            return None
        problem_mix = script_mix(item.sample.problem)
        expected = self.options.expected or (problem_mix.most_common(1)[0][0] if problem_mix else "LATIN")
        allowed = _SAME_LANGUAGE.get(expected, {expected})
        foreign = total - sum(mix[s] for s in allowed)
        if foreign / total > self.options.max_foreign:
            top = ", ".join(f"{s} {n / total:.0%}" for s, n in mix.most_common(3))
            return Drop("language_mixing", f"problem in {expected}; reasoning letters: {top}")
        return None


# --- format -------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```", re.MULTILINE)


class Format(Step):
    """R1's readability rules: no paragraph longer than a limit, no code blocks in the reasoning (math data)."""

    name = "format"

    @dataclass(frozen=True)
    class Options:
        max_paragraph_chars: int = 3000
        """A wall of text this long without a blank line is unreadable reasoning."""
        allow_code_blocks: bool = False
        """Set true for code datasets, whose reasoning legitimately drafts code."""

    def check(self, item: Item) -> Drop | None:
        text = item.reasoning or ""
        longest = max((len(p) for p in re.split(r"\n\s*\n", text)), default=0)
        if longest > self.options.max_paragraph_chars:
            return Drop("long_paragraph", f"{longest} characters without a blank line")
        if not self.options.allow_code_blocks and _FENCE.search(text):
            return Drop("code_block_in_reasoning")
        return None


# --- repetition ---------------------------------------------------------------------------------------------


def repeated_ngram_ratio(words: list[str], n: int) -> float:
    """Share of words covered by word n-grams that occur more than once (a looping trace repeats long spans)."""
    if len(words) < 2 * n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = bytearray(len(words))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(covered) / len(words)


class Repetition(Step):
    """Drop degenerate loops: reasoning whose repeated word n-grams cover more than `max_ratio` of it."""

    name = "repetition"

    @dataclass(frozen=True)
    class Options:
        ngram: int = 10
        max_ratio: float = 0.5

    def check(self, item: Item) -> Drop | None:
        words = (item.reasoning if item.reasoning is not None else item.sample.completion).split()
        ratio = repeated_ngram_ratio(words, self.options.ngram)
        if ratio > self.options.max_ratio:
            return Drop("repetitive", f"{ratio:.0%} of words in repeated {self.options.ngram}-grams")
        return None


# --- length -------------------------------------------------------------------------------------------------


class Length(Step):
    """Token bounds on the reasoning and the answer (counted with the recipe's tokenizer)."""

    name = "length"

    @dataclass(frozen=True)
    class Options:
        min_reasoning_tokens: int = 1
        max_reasoning_tokens: int | None = None
        min_answer_tokens: int = 1
        max_answer_tokens: int | None = None

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        count_tokens(items, context)
        return super().run(items, context)

    def check(self, item: Item) -> Drop | None:
        o = self.options
        for part, n, low, high in (
            ("reasoning", item.reasoning_tokens, o.min_reasoning_tokens, o.max_reasoning_tokens),
            ("answer", item.answer_tokens, o.min_answer_tokens, o.max_answer_tokens),
        ):
            if n is None:
                continue
            if n < low:
                return Drop(f"{part}_too_short", f"{n} tokens < {low}")
            if high is not None and n > high:
                return Drop(f"{part}_too_long", f"{n} tokens > {high}")
        return None


def count_tokens(items: list[Item], context: Context) -> None:
    """Fill reasoning/answer token counts where missing, in one batch through the tokenizer."""
    todo = [it for it in items if it.reasoning_tokens is None and it.reasoning is not None]
    if not todo or context.count_tokens is None:
        return
    counts = context.count_tokens([it.reasoning for it in todo] + [it.answer or "" for it in todo])
    for it, r, a in zip(todo, counts[: len(todo)], counts[len(todo) :], strict=True):
        it.reasoning_tokens, it.answer_tokens = r, a
