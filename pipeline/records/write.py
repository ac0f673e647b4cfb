"""Writing records so a crash never leaves a torn file: atomic file writes (temporary, fsync, rename), JSONL and
JSON writers, numbered shards, and the clean-up of temporaries a killed writer left.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.records.schema import to_row


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
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def fsync_file(path: str | Path) -> None:
    """Make a written file's bytes durable (before a rename publishes it)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


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
