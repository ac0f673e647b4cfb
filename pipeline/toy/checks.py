"""Toy task v2: the same column-by-column working as task.py, with each column checked by the inverse operation,
and a failed check repaired in the trace. A teacher trained on traces with injected errors learns to repair a
wrong column it never makes itself; on-policy distillation can pass that on to a student.

    checked_solution(47, 38, "+")
    # <think>\n47+38 c0 r\n7+8+0=15\nchk 15-8-0=7 7-7=0 ok\n4+3 c1 r5\n4+3+1=8\nchk 8-3-1=4 4-4=0 ok\nc0 r85\n...
    text, spans = checked_solution_with_errors(47, 38, "+", random.Random(0), rate=0.3)
    # a column line with one wrong digit, then `chk ... no`, `fix`, the right line and a passing check; `spans`
    # are the (start, end) characters of each wrong digit, which carry no loss in the teacher's training

A check compares against the state line above the column (which the column line cannot change):
- addition `7+8+0=15` -> `chk 15-8-0=7 7-7=0 ok`: the total minus the lower digit and the carry in must give the
  upper digit of the state;
- subtraction `0-0+10-7=3` -> `chk 3+7+0=10 10-10=0 ok`: the digit plus the lower digit and the borrow in must give
  the upper digit, plus 10 when the column line borrowed (`+10`).
The check then subtracts the value it must give and the verdict says whether that is 0 (`14-8-0=6 6-7=-1 no`).
Two earlier forms taught the verdict badly: a bare verdict, and `vs 7` before it (a teacher said `ok` to
`=2 vs 1`: equal-or-not of two nearby digits is a narrow function a tiny model learns late; a difference is a
subtraction it does on every line, and `=0` is one token).
"""

from __future__ import annotations

import random
import re

from pipeline.toy.task import addition_lines, subtraction_lines

FIX = "fix"
_STATE = re.compile(r"^(\d+)([+-])(\d+) [cb](\d) r\d*$")


def check_line(state: str, column: str) -> str:
    """The check of `column` (a column line, maybe wrong) against the `state` line above it:
    `chk <inverse>=V V-N=D ok|no`, N the value the check must give (the state's digit), D the difference, and the
    verdict `ok` exactly when D is 0: the comparison is a subtraction the model already does everywhere, and the
    verdict reads the token before it."""
    x, op, y, flag = _STATE.match(state).groups()
    top, bottom, flag = int(x[-1]), int(y[-1]), int(flag)
    result = int(column.rsplit("=", 1)[1])
    if op == "+":
        value, want = result - bottom - flag, top
        inverse = f"{result}-{bottom}-{flag}"
    else:
        value, want = result + bottom + flag, top + (10 if "+10" in column else 0)
        inverse = f"{result}+{bottom}+{flag}"
    diff = value - want
    return f"chk {inverse}={value} {value}-{want}={diff} {'ok' if diff == 0 else 'no'}"


def corrupt(column: str, rng: random.Random) -> tuple[str, int]:
    """`column` with one digit of its result changed (the slip that changes the answer: a wrong operand copied
    with the right result changes nothing): the line, and the index of the changed character."""
    equals = column.rindex("=")
    digits = [i for i, ch in enumerate(column) if ch.isdigit() and i > equals]
    i = rng.choice(digits)
    wrong = rng.choice([d for d in "0123456789" if d != column[i]])
    return column[:i] + wrong + column[i + 1 :], i


def _lines(a: int, b: int, op: str) -> list[str]:
    return addition_lines(a, b) if op == "+" else subtraction_lines(a, b)


def _is_column(line: str) -> bool:
    return "=" in line


def checked_lines(
    a: int, b: int, op: str, rng: random.Random | None = None, rate: float = 0.0
) -> tuple[list[str], list[tuple[int, int]]]:
    """The working with a check after each column; with `rng` and `rate`, each column line is first written wrong
    (one digit) with probability `rate`, then checked, fixed and checked again. Returns the lines and, per wrong
    digit, (line index, character index)."""
    out: list[str] = []
    wrong: list[tuple[int, int]] = []
    lines = _lines(a, b, op)
    for i, line in enumerate(lines):
        if not _is_column(line):
            out.append(line)
            continue
        state = lines[i - 1]
        if rng is not None and rng.random() < rate:
            bad, at = corrupt(line, rng)
            if check_line(state, bad).endswith(" no"):  # a change the check cannot see is not an error to fix
                wrong.append((len(out), at))
                out += [bad, check_line(state, bad), FIX]
        out += [line, check_line(state, line)]
    return out, wrong


def _trace(a: int, b: int, op: str, lines: list[str]) -> str:
    answer = a + b if op == "+" else a - b
    body = "\n".join([*lines, f"so {a}{op}{b}={answer}"])
    return f"<think>\n{body}\n</think>\n\n\\boxed{{{answer}}}"


def checked_solution(a: int, b: int, op: str) -> str:
    """The v2 worked solution: every column checked, no error."""
    return _trace(a, b, op, checked_lines(a, b, op)[0])


def checked_solution_with_errors(
    a: int, b: int, op: str, rng: random.Random, rate: float
) -> tuple[str, list[tuple[int, int]]]:
    """A training trace with injected, checked and fixed errors, and the (start, end) character span of each
    wrong digit in the returned text."""
    lines, wrong = checked_lines(a, b, op, rng, rate)
    text = _trace(a, b, op, lines)
    offsets = [len("<think>\n")]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    return text, [(offsets[n] + at, offsets[n] + at + 1) for n, at in wrong]


def forced_error_prefix(a: int, b: int, op: str, column: int, rng: random.Random) -> str | None:
    """The start of a checked trace up to and including a wrong `column`-th column line (0 = the last digits),
    for measuring recovery: a model continuing it should write the failing check, `fix` and the right line. None
    when the problem has no such column."""
    lines = _lines(a, b, op)
    columns = [i for i, line in enumerate(lines) if _is_column(line)]
    if column >= len(columns):
        return None
    done = checked_lines(a, b, op)[0]
    target = columns[column]
    kept = done[: target + column]  # each earlier column line gained its check line
    state = lines[target - 1]
    for _ in range(20):
        bad, _ = corrupt(lines[target], rng)
        if check_line(state, bad).endswith(" no"):
            return "<think>\n" + "\n".join([*kept, bad]) + "\n"
    return None


def columns_of(a: int, b: int, op: str) -> int:
    """How many column lines the working of a problem has (the injection points of forced errors)."""
    return sum(map(_is_column, _lines(a, b, op)))


def recovered(continuation: str, a: int, b: int, op: str, column: int) -> bool:
    """Whether a model's continuation of `forced_error_prefix(a, b, op, column, ...)` repairs the error, judged
    here, not by the model's own checks: its next lines are a failing check, `fix`, the right column line and
    that line's passing check."""
    lines = _lines(a, b, op)
    target = [i for i, line in enumerate(lines) if _is_column(line)][column]
    right = lines[target]
    got = continuation.split("\n")
    return got[:4] == [got[0], FIX, right, check_line(lines[target - 1], right)] and got[0].endswith(" no")


_COLUMN = re.compile(r"^\d+[+-]\d+(\+10)?[+-]\d+=\d+$")


def first_pass_errors(completion: str, a: int, b: int, op: str) -> tuple[int, int]:
    """(wrong, attempted) first attempts at the columns of a model's trace: each column line not written right
    after a `fix`, compared in order with the right column lines (a repaired error still counts as made)."""
    truth = [line for line in _lines(a, b, op) if _is_column(line)]
    lines = completion.split("\n")
    attempts = [
        line for prev, line in zip(["", *lines], lines, strict=False) if _COLUMN.match(line) and prev != FIX
    ]
    pairs = list(zip(attempts, truth, strict=False))
    return sum(x != y for x, y in pairs), len(pairs)
