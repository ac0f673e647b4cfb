"""Training data: the filter stage's dataset (or any prompt/completion or messages dataset), as a mixture.

    dataset = load_mixture(cfg.data, seed=42)

Local folders are read as parquet / JSONL files (a filter output folder holds `data/*.parquet` beside its
report); Hub datasets load by name. Only the columns TRL trains on are kept (`prompt` + `completion`, or
`messages`, or TRL's pre-tokenized `input_ids` with optional `labels` (-100: no loss on that token)), plus `id`
for tracing; teacher logprob columns are left to the kd stage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.records.schema import RecordError
from pipeline.train.sft.config import DatasetEntry

TRAIN_COLUMNS = ("prompt", "completion", "messages", "input_ids", "labels", "id")
TEXT_COLUMNS = ("prompt", "completion", "messages")
TEACHER_COLUMNS = ("teacher_token_ids", "teacher_topk_ids", "teacher_topk_logprobs")


def data_files(path: Path) -> tuple[str, list[str]]:
    """The loader name and files of a local dataset: a file, or a folder of parquet (preferred) / JSONL files."""
    if path.is_file():
        return ("parquet" if path.suffix == ".parquet" else "json"), [str(path)]
    if not path.is_dir():
        raise RecordError(f"{path}: no such dataset file or folder")
    for kind, pattern in (("parquet", "*.parquet"), ("json", "*.jsonl")):
        files = sorted(
            str(p) for p in path.rglob(pattern) if not p.name.startswith(".") and p.name != "rejected.jsonl"
        )
        if files:
            return kind, files
    raise RecordError(f"{path}: no .parquet or .jsonl files in this folder")


def load_entry(entry: DatasetEntry, columns: tuple[str, ...] = TRAIN_COLUMNS) -> Any:
    """One dataset with only `columns` (those present among TRAIN_COLUMNS; any other one is required)."""
    import datasets

    if entry.hub is not None:
        ds = datasets.load_dataset(entry.hub, entry.config, split=entry.split)
    else:
        kind, files = data_files(Path(entry.path))
        ds = datasets.load_dataset(kind, data_files=files, split="train")
    renames = {old: new for old, new in entry.fields.items() if old in ds.column_names}
    if renames:
        ds = ds.rename_columns(renames)
    found = set(ds.column_names)
    if not ({"prompt", "completion"} <= found or "messages" in found or "input_ids" in found):
        raise RecordError(
            f"{entry.describe()}: expected 'prompt' and 'completion' columns (TRL prompt/completion "
            f"format), 'messages', or pre-tokenized 'input_ids' (and 'labels'); found {sorted(found)}"
        )
    check_text_columns(ds, entry)
    missing = [c for c in columns if c not in TRAIN_COLUMNS and c not in found]
    if missing:
        raise RecordError(
            f"{entry.describe()}: no {', '.join(missing)} column: offline KD needs the teacher's logprobs "
            "(generate with `logprobs: k`, then filter), or use kd.teacher: online"
        )
    tokenized = "input_ids" in found  # then the text columns, if any, are not what is trained on
    ds = ds.select_columns([c for c in columns if c in found and not (tokenized and c in TEXT_COLUMNS)])
    return ds.select(range(min(entry.limit, len(ds)))) if entry.limit is not None else ds


def _is_text(feature: Any) -> bool:
    """A string, or a list of chat messages whose `content` is a string."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    item = getattr(feature, "feature", None)
    if item is None and isinstance(feature, list) and feature:
        item = feature[0]
    return isinstance(item, dict) and _is_text(item.get("content"))


def check_text_columns(ds: Any, entry: DatasetEntry) -> None:
    """prompt / completion / messages hold text or chat messages, so TRL gets what it can tokenize."""
    for column in ("prompt", "completion", "messages"):
        feature = ds.features.get(column)
        if feature is not None and not _is_text(feature):
            raise RecordError(
                f"{entry.describe()}: field '{column}': must be text or a list of chat messages "
                f"({{role, content}}), got {feature}",
                hint="fix the dataset (the filter stage writes this format)",
            )


def weighted(ds: Any, weight: float, seed: int) -> Any:
    """`weight` < 1 keeps a seeded random fraction; > 1 repeats the dataset (whole copies plus a fraction)."""
    import datasets

    whole, frac = divmod(weight, 1.0)
    parts = [ds] * int(whole)
    if frac > 1e-9:
        keep = math.floor(len(ds) * frac)
        parts.append(ds.shuffle(seed=seed).select(range(keep)))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def load_mixture(entries: list[DatasetEntry], seed: int, columns: tuple[str, ...] = TRAIN_COLUMNS) -> Any:
    import datasets

    parts = [weighted(load_entry(e, columns), e.weight, seed + i) for i, e in enumerate(entries)]
    if len({tuple(sorted(p.column_names)) for p in parts}) > 1:
        raise RecordError(
            "the datasets of a mixture must share a format: "
            + "; ".join(
                f"{e.describe()}: {sorted(p.column_names)}" for e, p in zip(entries, parts, strict=True)
            )
        )
    mixed = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(mixed) == 0:
        raise RecordError("the training mixture is empty")
    return mixed
