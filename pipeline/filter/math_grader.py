"""Grading a model's final math answer against a gold answer with math_verify, under a time limit that holds.

    verdict = grade(gradable_text(completion), gold="\\frac{1}{2}")  # Verdict(True, "0.5", "correct")
    verdicts = math_pool.grade_many([(text, gold), ...], workers=2)  # the same verdicts, in order, in parallel

The answer is the last `\\boxed{}` / `\\fbox{}`, else what follows the last "the answer is" / "final answer:"
/ "Answer:", else what math_verify's own search of the text finds. Answers equal to the gold up to typesetting,
and pairs of integers, are decided without sympy; the rest by `math_verify.parse` and `verify`. A verdict's
`correct` is True, False (wrong, no_answer, timeout) or None: cannot tell (no_gold, gold_unparsable,
grader_error). A timeout counts as wrong, as in math_verify's `verify`: an answer sympy cannot compare within
seconds is a degenerate expression, and a sample is kept only when known correct.

The time limit is a SIGALRM timer, which only a process's main thread receives: `grade` called from another
thread runs without one. `grade_many` (pipeline/filter/math_pool.py) grades in worker processes' main threads
and kills a worker that still overruns (C code that never checks for signals), or replaces one that dies; the
rest of the run goes on.

"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import math_verify
from math_verify import ExprExtractionConfig, LatexExtractionConfig

from pipeline.filter.verdict import Verdict

# --- extraction ---------------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
# what may stand between boxes that together give one answer: `\boxed{1}, \boxed{2} \text{ and } \boxed{3}`
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[,;$]|\\[,;:! ()\[\]]|\\q?quad|\\text\{\s*(?:and|or)?\s*\}|\b(?:and|or)\b)*"
)
# "the answer is", "final answer is", "final answer:", "Answer:", "**Answer:**", "**Final Answer**" (heading)
_ANCHOR = re.compile(
    r"\b(?:final\s+answer|the\s+answer|answer)\s*(?:\*\*\s*)?(?:\bis\b|:)|\*\*final\s+answer\*\*",
    re.IGNORECASE,
)
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)|\n")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{[^{}]*\}")
_PROSE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}\s+[a-zA-Z]{2,}(?![a-zA-Z])")


def _brace_pairs(text: str) -> dict[int, int]:
    """Where each `{` that closes is closed (escaped braces skipped), in one pass: linear in any text."""
    pairs, opened = {}, []
    for token in _BRACE_TOKEN.finditer(text):
        if token.group() == "{":
            opened.append(token.start())
        elif token.group() == "}" and opened:
            pairs[opened.pop()] = token.start()
    return pairs


def _boxes(text: str) -> list[tuple[int, int, int]]:
    """(start, content start, closing brace) of each top-level, balanced, non-empty box, in order."""
    pairs, boxes, outer_end = _brace_pairs(text), [], -1
    for match in _BOX.finditer(text):
        end = pairs.get(match.end() - 1)
        # never closed (truncated: an earlier, complete box is the last answer given), or inside the last box
        if end is None or match.start() < outer_end:
            continue
        if text[match.end() : end].strip():  # `\boxed{}` is the prompt's instruction echoed, not an answer
            boxes.append((match.start(), match.end(), end))
        outer_end = end
    return boxes


def _last_boxed(text: str) -> str | None:
    """The last box's content; boxes side by side (`\\boxed{1}, \\boxed{2}`) are one answer, `1, 2`."""
    boxes = _boxes(text)
    if not boxes:
        return None
    first = len(boxes) - 1
    while first > 0 and _BOX_SEPARATOR.fullmatch(text, boxes[first - 1][2] + 1, boxes[first][0]):
        first -= 1
    contents = [_unwrap(text[start:end].strip()) for _, start, end in boxes[first:]]
    return ", ".join(dict.fromkeys(contents))  # a repeated answer is one answer


def _unwrap(content: str) -> str:
    inner = _boxes(content)
    if len(inner) == 1 and inner[0][0] == 0 and inner[0][2] == len(content) - 1:  # `\boxed{\boxed{x}}`
        return _unwrap(content[inner[0][1] : -1].strip())
    return content


def _is_prose(answer: str) -> bool:
    return _PROSE.search(_TEXT_COMMAND.sub(" ", answer)) is not None


def _answer_phrase(text: str) -> tuple[str, str] | None:
    """(answer, its sentence from the anchor on) after the last answer phrase: a math span or a sentence."""
    anchors = list(_ANCHOR.finditer(text))
    if not anchors:
        return None
    rest = text[anchors[-1].end() :].lstrip(" \t\n*:")
    start = len(text) - len(rest)
    for opener, closer in _DELIMITERS:
        if rest.startswith(opener) and (end := rest.find(closer, len(opener))) != -1:
            return rest[len(opener) : end].strip(), text[anchors[-1].start() : start + end + len(closer)]
    end = match.start() if (match := _SENTENCE_END.search(rest)) else len(rest)
    answer = rest[:end].strip(" *,")
    if _is_prose(answer):  # "Final Answer: the largest $n$ is 34."
        answer = re.split(r"\bis\b", answer)[-1].strip()
    return answer, text[anchors[-1].start() : start + end]


def _locate(text: str) -> tuple[str | None, str | None]:
    """(the final answer as written, or None; the sentence it was found in when it follows an answer phrase)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed, None
    found = _answer_phrase(text)
    if found is None or not found[0]:
        return None, None
    return found


def extract_answer(text: str) -> str | None:
    """The final answer in `text` as written: the last `\\boxed{}`, else what follows the last answer phrase."""
    return _locate(text)[0]


# --- comparison ---------------------------------------------------------------------------------------------

_LATEX = LatexExtractionConfig(boxed_match_priority=0)  # a box is the answer, before any "answer is" phrase
_EXPR = ExprExtractionConfig()
_TYPESETTING = re.compile(r"\\[!,;: ]|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\s+")
_DELIMITED = re.compile(r"(?<!\\)\$|\\boxed|\\fbox|\\\(|\\\[")
_INTEGER = re.compile(r"-?\d+")


def _typeset_key(answer: str) -> str:
    """The answer without what only changes how it is typeset: spacing, `\\left`/`\\right`, `\\dfrac`, `$`."""
    key = _TYPESETTING.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return key.strip("$").rstrip(".")


def _integer_key(digits: str) -> tuple[bool, str]:
    magnitude = digits.lstrip("-").lstrip("0") or "0"  # strings, not int(): no limit on digits, no cost
    return digits.startswith("-") and magnitude != "0", magnitude


def shortcut(answer: str, gold: str) -> bool | None:
    """A verdict that needs no sympy: the same up to typesetting (True), two integers (equal or not), else None."""
    a, g = _typeset_key(answer), _typeset_key(_last_boxed(gold) if _BOX.match(gold.strip()) else gold)
    if a and a == g:
        return True
    if _INTEGER.fullmatch(a) and _INTEGER.fullmatch(g):
        return _integer_key(a) == _integer_key(g)
    return None


def _parse(text: str, configs: list[Any]) -> list[Any]:
    # math_verify's own timeouts are off: they are SIGALRM timers too and would cancel ours (`_time_limit`)
    return math_verify.parse(text, configs, parsing_timeout=None)


def _has_math(parsed: list[Any]) -> bool:
    return any(not isinstance(value, str) for value in parsed)  # a str is math_verify's unparsed fallback


def parse_gold(gold: str) -> list[Any]:
    """math_verify's reading of a gold answer: as LaTeX (bare LaTeX is boxed first), else as an expression."""
    text = gold.strip()
    parsed = _parse(text if _DELIMITED.search(text) else f"\\boxed{{{text}}}", [_LATEX, _EXPR])
    return parsed if _has_math(parsed) else _parse(text, [_EXPR]) or parsed


def _read_answer(answer: str | None, sentence: str | None, text: str) -> tuple[list[Any], str | None]:
    """(math_verify's parse of the final answer, the answer as written).

    A math answer is read as the content of a box; a sentence ("the answer: 3 hours") or a text with no
    answer found is left to math_verify's own search, which knows "final answer is" phrasing and units.
    """
    if answer is not None and not _is_prose(answer):
        parsed = _parse(f"\\boxed{{{answer}}}", [_LATEX, _EXPR])
        return (parsed if _has_math(parsed) else _parse(answer, [_LATEX, _EXPR]) or parsed), answer
    parsed = _parse(sentence or text, [_LATEX, _EXPR])
    return parsed, next((value for value in parsed if isinstance(value, str)), answer)


# --- grading under a time limit -----------------------------------------------------------------------------


class GradingTimeout(BaseException):
    """Raised by the timer; a BaseException so that math_verify's `except Exception` handlers let it through."""


def _expire(signum: int, frame: Any) -> None:
    raise GradingTimeout


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise GradingTimeout after `seconds` (wall clock); a no-op outside the main thread, where signals can't go."""
    if seconds <= 0:
        raise ValueError("timeout must be > 0 seconds")
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's timer (pytest-timeout, say) was running: give it back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 1e-3))


def grade(
    completion_text: str | None,
    gold: str | None,
    timeout: float = 5.0,
    *,
    float_rounding: int = 6,
    strict: bool = True,
    allow_set_relation_comp: bool = False,
    memory: Memory | None = None,
) -> Verdict:
    """Grade the text a model wrote after `</think>` (None: no final answer) against `gold`.

    The keyword options are math_verify's `verify` options: decimal places compared, whether variable names
    matter, whether `1 < x < 2` may equal `(1, 2)`. `memory` carries parsed golds and verdicts from one call
    to the next (the pool's workers keep one per chunk of samples).
    """
    options = dict(
        float_rounding=float_rounding, strict=strict, allow_set_relation_comp=allow_set_relation_comp
    )
    return _grade(completion_text, gold, timeout, memory or Memory(), options)


@dataclass
class Memory:
    """What grading remembers across the samples of a chunk: golds parsed (None: unparsable) and verdicts given.

    Samples of one problem share the gold and often the very answer string; a verdict depends on nothing else.
    """

    golds: dict[str, list[Any] | None] = field(default_factory=dict)
    verdicts: dict[tuple[str | None, str, str | None], Verdict] = field(default_factory=dict)


def _grade(text: str | None, gold: str | None, timeout: float, memory: Memory, options: dict) -> Verdict:
    if text is None:  # an unterminated think block gives no final answer, whatever the gold
        return Verdict(False, None, "no_answer")
    answer, sentence = _locate(text)  # linear-time regexes: safe outside the time limit
    if answer is None:  # graded from the whole text: nothing to share with other samples
        return _judge_in_time(text, answer, sentence, gold, timeout, memory, options)
    key = (gold, answer, sentence)
    if key not in memory.verdicts:
        memory.verdicts[key] = _judge_in_time(text, answer, sentence, gold, timeout, memory, options)
    return memory.verdicts[key]


def _judge_in_time(
    text: str,
    answer: str | None,
    sentence: str | None,
    gold: str | None,
    timeout: float,
    memory: Memory,
    options: dict,
) -> Verdict:
    try:
        with _time_limit(timeout):
            return _judge(text, answer, sentence, gold, memory.golds, options)
    except GradingTimeout:
        if gold in memory.golds and memory.golds[gold] is None:  # it struck while parsing the gold
            return Verdict(None, answer, "gold_unparsable")
        return Verdict(False, answer, "timeout")


def _judge(
    text: str, answer: str | None, sentence: str | None, gold: str | None, golds: dict, options: dict
) -> Verdict:
    if gold is None or not gold.strip():
        return Verdict(None, answer, "no_gold")
    if answer is not None and (quick := shortcut(answer, gold)) is not None:
        return Verdict(quick, answer, "correct" if quick else "wrong")
    if gold not in golds:
        golds[gold] = None  # stays None if the time limit strikes mid-parse: the gold is then unparsable
        golds[gold] = parse_gold(gold)
    if not _has_math(golds[gold] or []):
        return Verdict(None, answer, "gold_unparsable")
    predicted, answer = _read_answer(answer, sentence, text)
    if not predicted:
        return Verdict(False, answer, "no_answer")
    ok = math_verify.verify(golds[gold], predicted, timeout_seconds=None, **options)
    return Verdict(ok, answer, "correct" if ok else "wrong")


# math_verify warns once per process that its timeouts are off; ours (`_time_limit`) replace them
class _DropTimeoutDisabledWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())
