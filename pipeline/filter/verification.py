"""Verification steps: math answers against the gold with math-verify, code against the problem's tests.

Both grade all the items at once in parallel (worker processes with a per-sample time limit for math, the
code sandbox's concurrent runs for code), so one pathological answer costs its own time limit, not the run.
A verdict is correct / wrong / cannot tell; `cannot_tell` decides what happens to the last (open-r1 drops
them: a gold that does not parse says nothing about the trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.filter.parse import gradable_text
from pipeline.filter.steps import Context, Drop, Item, Step
from pipeline.sandbox.box import Sandbox, SandboxConfig


def apply_verdicts(items: list[Item], verdicts: list, context: Context, cannot_tell: str) -> dict[int, Drop]:
    drops = {}
    for i, (item, verdict) in enumerate(zip(items, verdicts, strict=True)):
        item.correct, item.extracted_answer, item.verdict_reason = (
            verdict.correct,
            verdict.extracted_answer,
            verdict.reason,
        )
        context.record_verdict(item)
        if verdict.correct is False:
            drops[i] = Drop(verdict.reason, f"extracted {verdict.extracted_answer!r}"[:300])
        elif verdict.correct is None and cannot_tell == "drop":
            drops[i] = Drop(f"cannot_tell_{verdict.reason}")
    return drops


class Math(Step):
    """The final answer (last `\\boxed{}`, else "the answer is ...") after `</think>` against the gold."""

    name = "math"

    @dataclass(frozen=True)
    class Options:
        timeout: float = 5.0
        """Seconds to grade one sample; an answer sympy cannot compare in time is wrong."""
        cannot_tell: Literal["drop", "keep"] = "drop"
        """No gold, or a gold math-verify cannot parse."""

    grader: Any = None
    """The grading processes, started with the first batch and kept for the next (`close` stops them)."""

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        from pipeline.filter.math_pool import Grader

        if self.grader is None:
            self.grader = Grader(context.workers, self.options.timeout)
        pairs = [(gradable_text(it.sample.completion), it.sample.answer) for it in items]
        verdicts = self.grader.grade(pairs)
        return apply_verdicts(items, verdicts, context, self.options.cannot_tell)

    def close(self) -> None:
        if self.grader is not None:
            self.grader.close()
            self.grader = None


class Code(Step):
    """The final Python block after `</think>`, run against the problem's tests in the sandbox."""

    name = "code"

    @dataclass(frozen=True)
    class Options:
        timeout: float = 10.0
        """Seconds of wall clock per program (per case for stdin/stdout tests)."""
        cannot_tell: Literal["drop", "keep"] = "drop"
        """Problems without tests."""
        sandbox: SandboxConfig = field(default_factory=SandboxConfig)
        """`sandbox.mode`: auto, namespaces, userns or landlock (see pipeline/sandbox/box.py)."""

    def prepare(self) -> None:
        from pipeline.sandbox.box import require_mode

        require_mode(self.options.sandbox.mode)  # SandboxUnavailable before the stage runs any step

    def run(self, items: list[Item], context: Context) -> dict[int, Drop]:
        from pipeline.filter.code_grader import grade_code_many
        from pipeline.records.code_tests import normalize_tests

        tests = [normalize_tests(it.sample.tests) if it.sample.tests is not None else None for it in items]
        pairs = [(gradable_text(it.sample.completion), t) for it, t in zip(items, tests, strict=True)]
        sandbox = Sandbox(mode=self.options.sandbox.mode)
        context.sandbox = sandbox.resolved_mode()
        verdicts = grade_code_many(pairs, self.options.timeout, context.workers, sandbox)
        return apply_verdicts(items, verdicts, context, self.options.cannot_tell)
