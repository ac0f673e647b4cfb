"""Toy task: addition and subtraction of 2-3 digit numbers, solved digit by digit with carries and borrows.

    problems = make_problems(seed=0, count=1000, split="train")   # deterministic; train / heldout never overlap
    worked_solution(472, 389, "+")  # "<think>\\n472+389, right to left:\\n2+9=11 write 1 carry 1 ... \\boxed{861}"

The reasoning is R1-formatted (`<think>` working `</think>` then the boxed answer) and short (a line per digit),
so a ~1M-parameter model learns the algorithm in minutes on CPU, and a smaller one cannot without being taught.
A problem belongs to the held-out split when a hash of its text says so (1 in 8): splits are disjoint by
construction, whatever the seed or count.
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from pipeline.records import Problem

Split = Literal["train", "heldout"]
OPS = ("+", "-")


def problem_text(a: int, b: int, op: str) -> str:
    return f"What is {a} {op} {b}?"


def split_of(a: int, b: int, op: str) -> Split:
    digest = hashlib.sha256(problem_text(a, b, op).encode()).digest()
    return "heldout" if digest[0] % 8 == 0 else "train"


def digits(n: int, width: int) -> list[int]:
    return [int(c) for c in str(n).rjust(width, "0")][::-1]  # least significant first


def addition_lines(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    lines, carry = [], 0
    for x, y in zip(digits(a, width), digits(b, width), strict=True):
        total = x + y + carry
        step = f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}"
        carry = total // 10
        lines.append(f"{step} write {total % 10}" + (" carry 1" if carry else ""))
    if carry:
        lines.append("write the carry 1")
    return lines


def subtraction_lines(a: int, b: int) -> list[str]:
    width = len(str(a))
    lines, borrow = [], 0
    for x, y in zip(digits(a, width), digits(b, width), strict=True):
        top = x - borrow
        if top < y:
            lines.append(
                f"{x}" + (f"-{borrow}" if borrow else "") + f"<{y} borrow: {top + 10}-{y}={top + 10 - y}"
            )
            borrow = 1
        else:
            lines.append(f"{x}" + (f"-{borrow}" if borrow else "") + f"-{y}={top - y}")
            borrow = 0
    return lines


def worked_solution(a: int, b: int, op: str) -> str:
    lines = addition_lines(a, b) if op == "+" else subtraction_lines(a, b)
    answer = a + b if op == "+" else a - b
    body = "\n".join([f"{a}{op}{b}, right to left:", *lines, f"so {a}{op}{b}={answer}"])
    return f"<think>\n{body}\n</think>\n\n\\boxed{{{answer}}}"


def sample_operands(rng: random.Random) -> tuple[int, int, str]:
    op = rng.choice(OPS)
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    if op == "-" and b > a:
        a, b = b, a  # non-negative results: the borrow algorithm above
    return a, b, op


def make_problems(seed: int, count: int, split: Split) -> list[Problem]:
    """`count` distinct problems of `split`, deterministic for a seed."""
    rng, seen, problems = random.Random(seed), set(), []
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
