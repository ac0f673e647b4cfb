"""Grading code answers: the answer's final Python code block, run against the problem's tests in the sandbox.

    verdict = grade_code(gradable_text(sample.completion), sample.tests)
    verdict.correct, verdict.extracted_answer, verdict.reason  # True, "def f(x): ...", "passed"
    verdicts = grade_code_many([(text, tests), ...], workers=2)  # same verdicts, in input order

A problem's `tests`, normalised (`normalize_tests` builds it from raw HumanEval, MBPP and APPS-style records):

    {"kind": "humaneval", "test": "def check(candidate): ...", "entry_point": "f", "prelude": "<the prompt>"}
    {"kind": "asserts", "asserts": ["assert f(1) == 2", ...], "setup": "tree = Node(1)"}
    {"kind": "stdio", "cases": [{"input": "1 2\\n", "output": "3\\n"}, ...]}

Two optional pieces of code (default "") in the first two kinds: `prelude` runs before the answer's code
(HumanEval's prompt, whose imports and helper functions the answer may rely on; the answer's own definitions
come after, so they win) and `setup` after it (MBPP's `test_setup_code`, which may use the answer's classes).
The program prelude + code + setup runs in the sandbox under the harness (runner.py), which only loads it and
calls its functions on request; the tests run on the grader's side (judge.py), calling those functions over a
pipe and getting back plain data, so no program text can reach an assert, an expected value or the verdict.
A stdio program is the code alone, run once per case (stopping at the first failure); its output is compared
here with the expected one, which never enters the sandbox, line by line, each line's runs of whitespace
collapsed and blank lines at either end ignored.

Verdicts: `correct` True: passed; False: failed (an assertion or any other error), wrong_output (stdio),
syntax_error, timeout, no_code; None: no_tests (nothing to run it against).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.filter.verdict import Verdict
from pipeline.records.code_tests import check_tests
from pipeline.sandbox.box import RunResult, Sandbox, cores
from pipeline.sandbox.channel import ChannelClosed, ChannelTimeout
from pipeline.sandbox.judge import Outcome, judge

PYTHON_TAGS = ("python", "python3", "py", "py3")
_SYNTAX_ERRORS = ("SyntaxError", "IndentationError", "TabError")


# --- the code -----------------------------------------------------------------------------------------------


def _opening_tag(line: str) -> str | None:
    """The language tag of an opening fence line ("" when bare), or None when the line opens no fence."""
    rest = line.lstrip("`")
    if len(line) - len(rest) < 3 or "`" in rest:  # not a fence, or ```inline code```
        return None
    return (rest.split() or [""])[0].lower()


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) of each closed ``` fence, in order; an unclosed last fence is not a block."""
    blocks: list[tuple[str, str]] = []
    tag, lines = None, []
    for line in text.splitlines():
        stripped = line.strip()
        if tag is None:
            tag, lines = _opening_tag(stripped), []
        elif stripped.startswith("```") and not stripped.strip("`"):
            blocks.append((tag, textwrap.dedent("\n".join(lines))))  # fences inside a list are indented
            tag = None
        else:
            lines.append(line)
    return blocks


def extract_code(text: str) -> str | None:
    """The last ```python block of the answer, else its last bare ``` block, else None.

    A python-tagged block wins over a later bare one: text after the code is mostly sample output.
    """
    blocks = [(tag, code) for tag, code in _code_blocks(text) if code.strip()]
    for wanted in (PYTHON_TAGS, ("",)):
        chosen = [code for tag, code in blocks if tag in wanted]
        if chosen:
            return chosen[-1]
    return None


def _has_tests(tests: dict[str, Any]) -> bool:
    return tests["kind"] == "humaneval" or bool(tests.get("asserts") or tests.get("cases"))


# --- grading ------------------------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


def _failure(code: str, result: RunResult, timeout: float, late: bool = False) -> Verdict:
    if result.timed_out or late:
        return Verdict(False, code, "timeout", f"still running after {timeout} s", result.mode)
    error = _last_line(result.stderr)
    reason = "syntax_error" if error.startswith(_SYNTAX_ERRORS) else "failed"
    if result.returncode == 0 and not error:
        error = "exited before the tests finished"
    return Verdict(False, code, reason, error or f"exit status {result.returncode}", result.mode)


def _run_tests(code: str, tests: dict[str, Any], timeout: float, sandbox: Sandbox) -> Verdict:
    """humaneval and asserts: the program in the sandbox, its tests here (judge.py)."""
    pieces = [tests.get("prelude", ""), code, tests.get("setup", "")]
    program = "\n\n".join(piece for piece in pieces if piece) + "\n"
    result, outcome = sandbox.converse(program, lambda channel: judge(tests, channel), timeout=timeout)
    if isinstance(outcome, ChannelClosed):  # it ended, crashed or timed out before the tests were done
        return _failure(code, result, timeout, late=isinstance(outcome, ChannelTimeout))
    assert isinstance(outcome, Outcome)
    if outcome.passed:
        return Verdict(True, code, "passed", "", result.mode)
    return Verdict(False, code, "failed", outcome.detail, result.mode)


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().splitlines()]


def _run_cases(code: str, cases: list[dict[str, str]], timeout: float, sandbox: Sandbox) -> Verdict:
    for number, case in enumerate(cases):
        result = sandbox.run(code, stdin=case["input"], timeout=timeout)
        if not result.ok:
            verdict = _failure(code, result, timeout)
            return Verdict(False, code, verdict.reason, f"case {number}: {verdict.detail}", result.mode)
        if _lines(result.stdout) != _lines(case["output"]):
            expected, got = case["output"].strip()[:100], result.stdout.strip()[:100]
            detail = f"case {number}: expected {expected!r}, got {got!r}"
            return Verdict(False, code, "wrong_output", detail, result.mode)
    return Verdict(True, code, "passed", "", result.mode)


def grade_code(
    text: str | None, tests: dict[str, Any] | None, timeout: float = 10.0, sandbox: Sandbox | None = None
) -> Verdict:
    """Grade the answer `text` (after `</think>`; None when there is none) against normalised `tests`.

    `timeout` holds for each run: the whole program, or each stdio case.
    """
    code = extract_code(text) if text is not None else None
    if not tests or not _has_tests(check_tests(tests)):
        return Verdict(None, code, "no_tests")
    if code is None:
        return Verdict(False, None, "no_code")
    sandbox = sandbox or Sandbox()
    if tests["kind"] == "stdio":
        return _run_cases(code, tests["cases"], timeout, sandbox)
    return _run_tests(code, tests, timeout, sandbox)


def grade_code_many(
    items: Iterable[tuple[str | None, dict[str, Any] | None]],
    timeout: float = 10.0,
    workers: int | None = None,
    sandbox: Sandbox | None = None,
) -> list[Verdict]:
    """`grade_code` for each (text, tests), `workers` at a time (default: one per core); verdicts in order."""
    sandbox = sandbox or Sandbox()
    with ThreadPoolExecutor(max_workers=workers or cores(), thread_name_prefix="grade-code") as pool:
        return list(pool.map(lambda item: grade_code(item[0], item[1], timeout, sandbox), items))
