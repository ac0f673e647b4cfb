"""The records stages hand each other: Problem (input of generate and eval), Sample (a teacher completion),
where they are read from (DataSource), and the checks that turn a raw row into one (errors name file, line, field).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError


class RecordError(UserError, ValueError):
    """A record that does not fit its schema; the message names file, line and field."""


@dataclass(frozen=True)
class DataSource:
    """Where records come from: a local file or folder (JSONL / parquet) or a Hub dataset."""

    path: str | None = None
    """A .jsonl or .parquet file, or a folder of them (shard outputs are read as one dataset)."""
    hub: str | None = None
    """A Hugging Face Hub dataset name, e.g. `HuggingFaceH4/MATH-500`."""
    config: str | None = None
    """The Hub dataset's configuration name."""
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)
    """Renames applied to each row, source -> record field: `{question: problem, solution: answer}`."""
    limit: int | None = None
    """Read only the first `limit` records."""

    def __post_init__(self) -> None:
        if (self.path is None) == (self.hub is None):
            raise ValueError("set exactly one of 'path' (local file or folder) and 'hub' (dataset name)")
        if self.limit is not None and self.limit < 0:
            raise ValueError("'limit' must be >= 0")

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        return f"hub:{self.hub}" + (f"/{self.config}" if self.config else "") + f"[{self.split}]"


@dataclass(slots=True)
class Problem:
    """Input of `generate` (and of `eval`)."""

    id: str
    problem: str
    answer: str | None = None
    source: str = ""
    tests: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Sample:
    """One teacher completion: output of `generate`, input of `filter`. `id` is `{problem_id}/{sample_index}`."""

    id: str
    problem_id: str
    sample_index: int
    problem: str
    answer: str | None
    prompt: list[dict[str, str]]
    completion: str
    finish_reason: str
    num_prompt_tokens: int
    num_completion_tokens: int
    teacher: str
    sampling: dict[str, Any]
    source: str = ""
    tests: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def problem_id(text: str) -> str:
    """A stable id for a problem without one: a hash of its text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _field(row: dict[str, Any], where: str, name: str, kinds: tuple[type, ...], required: bool = True) -> Any:
    if name not in row or row[name] is None:
        if required:
            raise RecordError(f"{where}: field '{name}' is missing")
        return None
    value = row[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RecordError(f"{where}: field '{name}' must be {names}, got {type(value).__name__}")
    return value


def problem_from_row(row: dict[str, Any], where: str) -> Problem:
    text = _field(row, where, "problem", (str,))
    if not text.strip():
        raise RecordError(f"{where}: field 'problem' is empty")
    answer = _field(row, where, "answer", (str, int, float), required=False)
    pid = _field(row, where, "id", (str, int), required=False)
    metadata = _field(row, where, "metadata", (dict,), required=False) or {}
    known = {"id", "problem", "answer", "source", "tests", "metadata"}
    metadata = {**{k: v for k, v in row.items() if k not in known}, **metadata}
    return Problem(
        id=str(pid) if pid is not None else problem_id(text),
        problem=text,
        answer=str(answer) if answer is not None else None,
        source=str(_field(row, where, "source", (str,), required=False) or ""),
        tests=row.get("tests"),
        metadata=metadata,
    )


_SAMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "problem_id": (str,),
    "sample_index": (int,),
    "problem": (str,),
    "prompt": (list,),
    "completion": (str,),
    "finish_reason": (str,),
    "num_prompt_tokens": (int,),
    "num_completion_tokens": (int,),
    "teacher": (str,),
    "sampling": (dict,),
}


def sample_from_row(row: dict[str, Any], where: str) -> Sample:
    values = {name: _field(row, where, name, kinds) for name, kinds in _SAMPLE_TYPES.items()}
    values["answer"] = _field(row, where, "answer", (str,), required=False)
    values["source"] = _field(row, where, "source", (str,), required=False) or ""
    values["tests"] = row.get("tests")
    values["metadata"] = _field(row, where, "metadata", (dict,), required=False) or {}
    return Sample(**values)


def to_row(record: Any) -> dict[str, Any]:
    """A record as a dict for writing: shallow (no deep copy), since it is serialised right away."""
    if dataclasses.is_dataclass(record):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return dict(record)
