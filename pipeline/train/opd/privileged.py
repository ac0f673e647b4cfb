"""Privileged context in opd: the teacher reads each problem's reference in its prompt, the student does not.

    teachers: {"*": {self_distill: true, privileged: {reference: answer}}}     # recipes/demo/opd-self.yaml

The student answers the problem as always; its teacher (usually a frozen copy of the student itself: on-policy
self-distillation, as TRL's SDFT trainer and OPSD do it) scores the very same completion tokens after a longer
prompt, whose last user message is `template` filled with the student's message (`{prompt}`) and the
reference (`{reference}`): the problem's gold `answer`, or another field of its record (a column the problem
files carry beyond the schema's is kept in its `metadata`, e.g. MATH's `solution`). The teacher then knows
where the solution should end up and judges each of the student's tokens with that knowledge; the student
learns to behave, without the reference, as it would with it. Every problem routed to such a teacher must have
a reference, checked with the problems before anything loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

COLUMN = "teacher_prompt"
"""The rollout dataset's column with the privileged teacher's messages (JSON), empty for other teachers."""


@dataclass(frozen=True)
class PrivilegedContext:
    reference: str = "answer"
    """The problem field the teacher sees: `answer` (the gold answer), or the name of another column of the
    problem records (kept in each Problem's `metadata`), e.g. `solution`."""
    template: str = (
        "{prompt}\n\nHere is a reference solution:\n{reference}\n\n"
        "After understanding the reference solution, solve the problem yourself."
    )
    """The teacher's last user message; `{prompt}` is the student's, `{reference}` the problem's reference (TRL
    SDFT's `teacher_prompt_template`)."""

    def __post_init__(self) -> None:
        if "{prompt}" not in self.template or "{reference}" not in self.template:
            raise ValueError("privileged.template needs both '{prompt}' and '{reference}'")
        if not self.reference:
            raise ValueError("privileged.reference names a problem field, e.g. answer")


def reference_of(problem: Any, field: str) -> str | None:
    """The problem's reference text for `field`, or None when it has none (missing, null or blank)."""
    value = problem.answer if field == "answer" else problem.metadata.get(field)
    return None if value is None or not str(value).strip() else str(value)


def check_references(cfg: Any, problems: list[Any]) -> None:
    """Every problem routed to a privileged teacher has a reference to show it; else one error, before any
    model loads, naming the recipe field, how many lack one and the first of them."""
    for key, spec in cfg.teachers.items():
        if isinstance(spec, list) or spec.privileged is None:  # a mixture has no privileged member (config)
            continue
        field = spec.privileged.reference
        routed = [p for p in problems if cfg.teacher_for(p.source) == key]
        missing = [p for p in routed if reference_of(p, field) is None]
        if missing:
            raise UserError(
                f"{len(missing)} of the {len(routed)} problems of {cfg.problems.describe()} routed to teacher "
                f"'{key}' have no {field!r} to show it as privileged context (the first: {missing[0].id})",
                field=f"teachers.{key}.privileged.reference",
                hint="give every problem a reference (its answer, or a column mapped with problems.fields), "
                "route the problems without one to another teacher, or name another field",
            )


def teacher_messages(
    messages: list[dict[str, str]], reference: str, context: PrivilegedContext
) -> list[dict]:
    """The student's chat messages with the last user turn rewritten to carry the reference."""
    *before, last = messages
    content = context.template.format(prompt=last["content"], reference=reference)
    return [*before, {**last, "content": content}]


def add_teacher_prompts(cfg: Any, problems: list[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rollout rows, each with the messages its privileged teacher reads (JSON; "" for other teachers)."""
    for problem, row in zip(problems, rows, strict=True):
        spec = cfg.teachers[cfg.teacher_for(problem.source)]
        context = None if isinstance(spec, list) else spec.privileged
        row[COLUMN] = (
            json.dumps(teacher_messages(row["prompt"], reference_of(problem, context.reference), context))
            if context is not None
            else ""
        )
    return rows


def teacher_prompt_ids(
    inputs: list[dict[str, Any]],
    prompts: list[list[int]],
    teacher_of: Callable[[dict[str, Any]], Any],
    think_prefix: bool,
) -> list[list[int]]:
    """Each rollout's prompt as its teacher reads it: the student's own ids, or, for a privileged teacher, its
    longer prompt rendered by the teacher's own template (the completion's ids are the student's either way)."""
    return [
        teacher_of(x).prompt_ids(json.loads(x[COLUMN]), think_prefix) if x.get(COLUMN) else p
        for x, p in zip(inputs, prompts, strict=True)
    ]
