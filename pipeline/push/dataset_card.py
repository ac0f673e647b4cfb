"""The dataset card: README.md of a pushed filter output, from the filter's manifest, report and data files.

    text = dataset_card(read_dataset_facts("runs/filter"), "me/traces", None, "data/*.parquet", True, True)

The prose lives in push/templates/dataset_card.md; the pieces it shares with the model card in card_text.py.
"""

from __future__ import annotations

from pipeline.push import card_text as text
from pipeline.push.lineage import DatasetFacts

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def token_table(data: DatasetFacts) -> str:
    if not data.tokens:
        return "Not recorded (the filter report has no token statistics)."
    rows = [
        [kind, text.num(t.count), f"{t.mean:,.0f}", f"{t.p50:,.0f}", f"{t.p90:,.0f}", text.num(t.max)]
        for kind, t in data.tokens.items()
    ]
    return text.table(
        ["tokens of the kept samples", "count", "mean", "median", "90th percentile", "max"], rows
    )


def dataset_front_matter(data: DatasetFacts, license_: str | None, data_files: str, rejected: bool) -> str:
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}]
    if rejected:  # a second config: the viewer and `load_dataset(repo, "rejected")` show what was dropped
        configs.append(
            {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected.jsonl"}]}
        )
    n = data.examples
    size = None if n is None else next((name for limit, name in SIZES if n < limit), "n>1M")
    return text.yaml_block(
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
    return text.render(
        "dataset_card.md",
        front_matter=dataset_front_matter(data, license_, data_files, rejected),
        name=repo_id.split("/")[-1],
        repo_id=repo_id,
        picture=picture,
        rejected=rejected,
        teacher=f"`{data.teacher.model}`" if data.teacher else "a teacher not recorded in the manifests",
        kept=text.num(data.kept),
        total=text.num(data.total),
        kept_fraction=text.pct(data.kept_fraction),
        grading=text.grading_line(data),
        rows=text.num(data.examples),
        teacher_lines=text.teacher_lines(data.teacher),
        filter_table=text.filter_table(data),
        token_table=token_table(data),
        columns=text.table(["column", "type"], [[f"`{n}`", f"`{t}`"] for n, t in data.columns])
        if data.columns
        else text.MISSING,
        recipe=yaml.safe_dump(config, sort_keys=False).strip() if config else text.MISSING,
        **text.provenance(data.manifest),
    )
