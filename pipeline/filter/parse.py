"""Splitting a completion into reasoning and answer around `<think>` ... `</think>`.

    parsed = split_completion("<think>\\nwork\\n</think>\\n\\nThe answer is 5.")
    parsed.reasoning, parsed.answer, parsed.error  # "work", "The answer is 5.", None

Handles a completion that starts inside the think block (the `<think>` was in the prompt), missing or
duplicated tags, empty reasoning, an empty answer and an unterminated think block. `gradable_text` is what
a verifier grades: the text after `</think>`, the whole completion when there is no think block at all
(plain chain-of-thought), and nothing when the think block never closes (no final answer).
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Parsed:
    reasoning: str | None
    answer: str | None
    error: str | None = None
    """None when well formed, else one of: missing_think, unterminated_think, duplicated_tags,
    empty_reasoning, empty_answer."""


def split_completion(completion: str) -> Parsed:
    opens, closes = completion.count(OPEN), completion.count(CLOSE)
    if opens == 0 and closes == 0:
        return Parsed(None, completion.strip(), "missing_think")
    if closes == 0:
        return Parsed(completion.split(OPEN, 1)[1].strip(), None, "unterminated_think")
    head, _, answer = completion.rpartition(CLOSE)
    reasoning = head.split(OPEN, 1)[1] if opens else head  # no <think>: it was prefilled in the prompt
    reasoning, answer = reasoning.strip(), answer.strip()
    if opens > 1 or closes > 1 or (opens == 1 and head.split(OPEN, 1)[0].strip()):
        return Parsed(
            reasoning, answer, "duplicated_tags" if opens > 1 or closes > 1 else "text_before_think"
        )
    if not reasoning:
        return Parsed(reasoning, answer, "empty_reasoning")
    if not answer:
        return Parsed(reasoning, answer, "empty_answer")
    return Parsed(reasoning, answer)


def gradable_text(completion: str) -> str | None:
    """The text a verifier grades, or None when there is no final answer (unterminated think block)."""
    if CLOSE in completion:
        return completion.rpartition(CLOSE)[2]
    if OPEN in completion:
        return None
    return completion
