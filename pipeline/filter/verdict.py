"""A grader's verdict on one answer: the math grader's and the code grader's alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """The grade of one answer (math) or program (code)."""

    correct: bool | None
    """True / False, or None when it cannot be told (math: no gold, gold that does not parse, grader crash;
    code: the problem has no tests)."""
    extracted_answer: str | None
    """The final answer read from the text (math), or the code that was run (code)."""
    reason: str
    """math: correct, wrong, no_answer, timeout, no_gold, gold_unparsable or grader_error;
    code: passed, failed, wrong_output, syntax_error, timeout, no_code or no_tests."""
    detail: str = ""
    """What went wrong in a program: the error's last line, or the stdio case, expected and actual output."""
    sandbox: str | None = None
    """The sandbox mode the code ran in (None when nothing ran, and for math)."""
