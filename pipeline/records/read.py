"""Reading records: JSONL, JSON, parquet files, folders of shards, or a Hub dataset, as (location, row) pairs and
as Problems / Samples. A folder of generate shards is read as one dataset; a bad line is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.records.schema import (
    DataSource,
    Problem,
    RecordError,
    Sample,
    problem_from_row,
    sample_from_row,
)


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
            yield from _parquet_rows(file)  # a batch at a time: a file of samples can be GBs
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


def _parquet_rows(file: Path, batch_rows: int = 1024) -> Iterator[tuple[str, dict[str, Any]]]:
    """A parquet file's rows, a batch at a time: memory holds one batch, not the file."""
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            yield f"{file} row {i}", row
            i += 1


def _load_hub(source: DataSource) -> Any:
    """A Hub dataset, or one line saying it cannot be had from here and what to use instead. With `limit` it is
    streamed, so only the rows read are downloaded (the first 30 of a 1M-row set cost 30 rows, not the set)."""
    import datasets
    from datasets.exceptions import DatasetsError

    try:
        streaming = source.limit is not None
        return datasets.load_dataset(source.hub, source.config, split=source.split, streaming=streaming)
    # offline, unreachable (OSError: the Hub's HTTP errors too), no such dataset (DatasetNotFoundError), config or
    # split (ValueError): the user's to fix; anything else is a bug and keeps its traceback
    except (OSError, ValueError, DatasetsError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise RecordError(
            f"cannot load {source.describe()}: {type(e).__name__}: {first}; give a reachable Hub id "
            "(network, HF_HUB_OFFLINE unset), or a local copy with 'path:' instead of 'hub:'"
        ) from e


def load_problems(source: DataSource) -> list[Problem]:
    """Problems from a file, folder or Hub dataset; duplicate ids are an error (they would collide in Samples)."""
    return [p for _, p in located_problems(source)]


def located_problems(source: DataSource) -> list[tuple[str, Problem]]:
    """(`file:line`, problem) for each problem, so later checks (prompt length) can say where it came from."""
    return list(iter_located_problems(source))


def iter_located_problems(source: DataSource) -> Iterator[tuple[str, Problem]]:
    """`located_problems` one at a time: only the ids seen so far stay in memory."""
    seen: dict[str, str] = {}
    for where, row in read_rows(source):
        if row.get("problem") is None:
            raise _missing_problem(source, row, where)
        p = problem_from_row(row, where)
        if p.id in seen:
            raise RecordError(f"{where}: field 'id': duplicate id {p.id!r} (first at {seen[p.id]})")
        seen[p.id] = where
        yield where, p


# column names other datasets give the problem text and its gold answer, for the mapping an error suggests
PROBLEM_NAMES = (
    "question",
    "prompt",
    "query",
    "input",
    "instruction",
    "text",
    "content",
    "Problem",
    "Question",
)
ANSWER_NAMES = ("final_answer", "expected_answer", "gold", "target", "label", "solution", "output", "Answer")


def _missing_problem(source: DataSource, row: dict[str, Any], where: str) -> RecordError:
    """No `problem` column: the error names the columns the file has and the `fields:` mapping to write."""
    columns = list(row)
    unmapped = [old for old, new in source.fields.items() if new == "problem" and old not in row]
    if unmapped:
        return RecordError(
            f"{where}: field 'problem' is missing: 'fields' maps column '{unmapped[0]}' to it, but the columns "
            f"here are: {', '.join(columns) or 'none'}; map one of them instead"
        )
    text = next((c for c in PROBLEM_NAMES if c in row), None)
    text = text or next((c for c, v in row.items() if isinstance(v, str) and c != "answer"), "COLUMN")
    mapping = {text: "problem"}
    if "answer" not in row and (gold := next((c for c in ANSWER_NAMES if c in row), None)):
        mapping[gold] = "answer"
    written = ", ".join(f"{old}: {new}" for old, new in mapping.items())
    return RecordError(
        f"{where}: field 'problem' is missing; the columns here are: {', '.join(columns) or 'none'}; map the "
        f"problem's column to it in the recipe, e.g. `problems.fields: {{{written}}}` (the `fields:` of this "
        "source)"
    )


def read_samples(path: str | Path) -> Iterator[Sample]:
    """Samples from a .jsonl file or a folder of shards (shard folders included), in a stable order."""
    for where, row in read_rows(DataSource(path=str(path))):
        yield sample_from_row(row, where)


def located_samples(path: str | Path) -> Iterator[tuple[Path, str, Sample]]:
    """(file, `file:line`, sample) for each sample of `path`, streamed, in the order of `read_samples`."""
    for file in _data_files(Path(path)):
        for where, row in read_rows(DataSource(path=str(file))):
            yield file, where, sample_from_row(row, where)


def count_rows(path: str | Path) -> int | None:
    """About how many records `path` holds, cheaply (JSONL lines, parquet metadata), for progress and ETA;
    None for a JSON list, which would have to be parsed."""
    total = 0
    for file in _data_files(Path(path)):
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(file).metadata.num_rows
        elif file.suffix == ".jsonl":
            with file.open("rb") as f:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        else:
            return None
    return total


def read_unique_samples(path: str | Path) -> list[Sample]:
    """All samples of `path`; a sample id seen twice is an error naming both places."""
    return [sample for _, sample in iter_unique_samples(path)]


def iter_unique_samples(path: str | Path) -> Iterator[tuple[str, Sample]]:
    """(`file:line`, sample) for each sample of `path`, one at a time; a sample id seen twice is an error naming
    both places (only the ids seen so far stay in memory)."""
    seen: dict[str, str] = {}
    for where, row in read_rows(DataSource(path=str(path))):
        sample = sample_from_row(row, where)
        if sample.id in seen:
            raise RecordError(
                f"{where}: field 'id': sample id {sample.id!r} appears twice (first at {seen[sample.id]})"
            )
        seen[sample.id] = where
        yield where, sample
