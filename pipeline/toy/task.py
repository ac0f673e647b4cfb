"""Toy task: addition and subtraction of two-digit numbers, worked column by column with carries and borrows.

    problems = make_problems(seed=0, count=1000, split="train")   # deterministic; train / heldout never overlap
    worked_solution(47, 38, "+")  # "<think>\\n47+38 c0 r\\n7+8+0=15\\n4+3 c1 r5\\n4+3+1=8\\nc0 r85\\n..."

The reasoning is R1-formatted (`<think>` working `</think>` then the boxed answer) and written as a chain of
states, each line computed from the one just above it (see `addition_lines`), so a ~1M-parameter model learns
the algorithm in minutes on CPU, and a smaller one only when taught.

A problem belongs to the held-out split when a hash of its text says so (1 in 8): splits are disjoint by
construction, whatever the seed or count.
"""

from __future__ import annotations

import functools
import hashlib
import random
from typing import Literal

from pipeline.records.schema import Problem

Split = Literal["train", "heldout"]
OPS = ("+", "-")
# two-digit operands: learnable from scratch by a 0.6M-parameter student in minutes on CPU
OPERANDS = (10, 99)


def problem_text(a: int, b: int, op: str) -> str:
    return f"What is {a} {op} {b}?"


def split_of(a: int, b: int, op: str) -> Split:
    digest = hashlib.sha256(problem_text(a, b, op).encode()).digest()
    return "heldout" if digest[0] % 8 == 0 else "train"


def addition_lines(a: int, b: int) -> list[str]:
    """Column addition as a chain of states, each line computed from the one above it alone.

    `472+389 c0 r` means: numbers still to add, the carry, the result digits so far. The next line adds the last
    digits (`2+9+0=11`), and the next state drops them, carries 1 and puts 1 in front of the result. Every step
    copies or combines text that is right next to it, which small models learn in minutes.
    """
    width = max(len(str(a)), len(str(b)))
    x, y, carry, result, lines = str(a).rjust(width, "0"), str(b).rjust(width, "0"), 0, "", []
    while x:
        lines.append(f"{x}+{y} c{carry} r{result}")
        total = int(x[-1]) + int(y[-1]) + carry
        lines.append(f"{x[-1]}+{y[-1]}+{carry}={total}")
        x, y, carry, result = x[:-1], y[:-1], total // 10, str(total % 10) + result
    lines.append(f"c{carry} r{result}")
    return lines + ([f"r1{result}"] if carry else [])


def subtraction_lines(a: int, b: int) -> list[str]:
    """Column subtraction with borrows, in the same chain-of-states form as `addition_lines`."""
    width = len(str(a))
    x, y, borrow, result, lines = str(a), str(b).rjust(width, "0"), 0, "", []
    while x:
        lines.append(f"{x}-{y} b{borrow} r{result}")
        top, bottom = int(x[-1]) - borrow, int(y[-1])
        borrow = 1 if top < bottom else 0
        digit = top + 10 * borrow - bottom
        lines.append(f"{x[-1]}-{int(x[-1]) - top}" + ("+10" if borrow else "") + f"-{bottom}={digit}")
        x, y, result = x[:-1], y[:-1], str(digit) + result
    return [*lines, f"b0 r{result}"]


def worked_solution(a: int, b: int, op: str) -> str:
    lines = addition_lines(a, b) if op == "+" else subtraction_lines(a, b)
    answer = a + b if op == "+" else a - b
    body = "\n".join([*lines, f"so {a}{op}{b}={answer}"])
    return f"<think>\n{body}\n</think>\n\n\\boxed{{{answer}}}"


def sample_operands(rng: random.Random) -> tuple[int, int, str]:
    op = rng.choice(OPS)
    a, b = rng.randint(*OPERANDS), rng.randint(*OPERANDS)
    if op == "-" and b > a:
        a, b = b, a  # non-negative results: the borrow algorithm above
    return a, b, op


@functools.cache
def split_size(split: Split) -> int:
    """How many distinct problems a split has (a larger `count` could never be drawn); hashed once per split."""
    lo, hi = OPERANDS
    pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    every = [(a, b, "+") for a, b in pairs] + [(a, b, "-") for a, b in pairs if a >= b]
    return sum(split_of(a, b, op) == split for a, b, op in every)


def make_problems(seed: int, count: int, split: Split) -> list[Problem]:
    """`count` distinct problems of `split`, deterministic for a seed."""
    rng, seen, problems = random.Random(seed), set(), []
    if count > (distinct := split_size(split)):
        raise ValueError(f"the toy task's {split} split has {distinct} distinct problems, not {count}")
    while len(problems) < count:
        a, b, op = sample_operands(rng)
        if split_of(a, b, op) != split or (a, b, op) in seen:
            continue
        seen.add((a, b, op))
        answer = a + b if op == "+" else a - b
        pid = f"toy-{'add' if op == '+' else 'sub'}-{a}-{b}"
        problems.append(
            Problem(
                pid,
                problem_text(a, b, op),
                str(answer),
                f"toy-{'add' if op == '+' else 'sub'}",
                metadata={"a": a, "b": b, "op": op},
            )
        )
    return problems


def solution_of(problem: Problem) -> str:
    m = problem.metadata
    return worked_solution(m["a"], m["b"], m["op"])
