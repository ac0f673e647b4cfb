"""What the model card and the dataset card share: rendering the templates (push/templates/*.md), figures put in
words (a missing one is "not recorded", never `None`), tables, front matter, and the data and teacher lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.push.lineage import DatasetFacts, Teacher

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "not recorded"


def render(template: str, **values: Any) -> str:
    import jinja2

    # StrictUndefined: a placeholder left unfilled is an error, not an empty hole in a card.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(template).render(**values)


def num(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"`{value}`" if isinstance(value, (list, dict)) else str(value)


def pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def yaml_block(data: dict[str, Any]) -> str:
    import yaml

    kept = {k: v for k, v in data.items() if v not in (None, [], {})}
    return f"---\n{yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)}---\n"


def provenance(manifest: dict[str, Any] | None) -> dict[str, str]:
    m = manifest or {}
    packages = ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items())
    return {
        "packages": packages or MISSING,
        "commit": m.get("git_commit") or MISSING,
        "created": m.get("created") or MISSING,
    }


def teacher_lines(teacher: Teacher | None) -> str:
    if teacher is None:
        return "- Teacher: not recorded (the generate stage's manifest was not reachable from the data)."
    s = teacher.sampling
    settings = ", ".join(f"{k} {num(s[k])}" for k in ("temperature", "top_p", "max_tokens", "n") if k in s)
    text = f"- Teacher: `{teacher.model}`, sampling {settings or MISSING}."
    if teacher.prompt_template:
        prefix = ", assistant turn started with `<think>`" if teacher.think_prefix else ""
        text += f"\n- Prompt template: `{teacher.prompt_template}`{prefix}."
    return text


def filter_table(data: DatasetFacts) -> str:
    if data.manifest is None:
        return "No filter manifest: the filter figures are not recorded."
    rows = [
        [
            f"`{s.step}`",
            num(s.seen),
            num(s.kept),
            ", ".join(f"{r}: {n:,}" for r, n in s.dropped.items()) or "-",
        ]
        for s in data.steps
    ]
    rows.append(["**total**", num(data.total), num(data.kept), f"{num(data.rejected)} rejected"])
    return table(["step", "in", "kept", "dropped (reason: count)"], rows)


def grading_line(data: DatasetFacts) -> str:
    """How often the teacher was right, per problem, and the verifier's verdicts over all samples."""
    rates = data.teacher_pass
    verdicts = ", ".join(f"{k} {v:,}" for k, v in data.verdicts.items())
    if not rates.get("graded_problems"):
        return "Teacher pass rate: not recorded (no verification step)."
    return (
        f"Teacher pass rate per problem: mean {pct(rates.get('mean'))} over {num(rates['graded_problems'])} "
        f"graded problems ({num(rates.get('solved_by_none'))} solved by no sample, "
        f"{num(rates.get('solved_by_all'))} by all); verdicts: {verdicts or MISSING}."
    )
