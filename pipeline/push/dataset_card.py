"""Card text: the dataset card, and the pieces both cards share (tables, figures, front matter, rendering).

    text = dataset_card(read_dataset_facts("runs/filter"), "me/traces", None, "data/*.parquet", True, True)

The prose lives in pipeline/templates/*.md (Jinja; the model card's values come from pipeline/push/model_card.py).
Every figure comes from a manifest, report or results file; a missing one is put in words here, so a card
never shows `None` and never breaks because a stage has not run yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.push.lineage import DatasetFacts, Teacher

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "not recorded"
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


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


# --- pieces both cards use -----------------------------------------------------------------------------


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


def token_table(data: DatasetFacts) -> str:
    if not data.tokens:
        return "Not recorded (the filter report has no token statistics)."
    rows = [
        [kind, num(t.count), f"{t.mean:,.0f}", f"{t.p50:,.0f}", f"{t.p90:,.0f}", num(t.max)]
        for kind, t in data.tokens.items()
    ]
    return table(["tokens of the kept samples", "count", "mean", "median", "90th percentile", "max"], rows)


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


# --- dataset card ----------------------------------------------------------------------------------------------


def dataset_front_matter(data: DatasetFacts, license_: str | None, data_files: str, rejected: bool) -> str:
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}]
    if rejected:  # a second config: the viewer and `load_dataset(repo, "rejected")` show what was dropped
        configs.append(
            {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected.jsonl"}]}
        )
    n = data.examples
    size = None if n is None else next((name for limit, name in SIZES if n < limit), "n>1M")
    return yaml_block(
        {
            "license": license_,
            "task_categories": ["text-generation"],
            "tags": ["distillation", "reasoning", "synthetic"],
            "size_categories": [size] if size else [],
            "configs": configs,
        }
    )


def dataset_card(
    data: DatasetFacts, repo_id: str, license_: str | None, data_files: str, picture: bool, rejected: bool
) -> str:
    import yaml

    from pipeline.redact import redact

    config = redact((data.manifest or {}).get("config"))
    return render(
        "dataset_card.md",
        front_matter=dataset_front_matter(data, license_, data_files, rejected),
        name=repo_id.split("/")[-1],
        repo_id=repo_id,
        picture=picture,
        rejected=rejected,
        teacher=f"`{data.teacher.model}`" if data.teacher else "a teacher not recorded in the manifests",
        kept=num(data.kept),
        total=num(data.total),
        kept_fraction=pct(data.kept_fraction),
        grading=grading_line(data),
        rows=num(data.examples),
        teacher_lines=teacher_lines(data.teacher),
        filter_table=filter_table(data),
        token_table=token_table(data),
        columns=table(["column", "type"], [[f"`{n}`", f"`{t}`"] for n, t in data.columns])
        if data.columns
        else MISSING,
        recipe=yaml.safe_dump(config, sort_keys=False).strip() if config else MISSING,
        **provenance(data.manifest),
    )
