"""Compact keys of the whole input on disk: the tables the filter's whole-set checks look things up in.

    keys = KeyStore(scratch / "keys.sqlite")     # KeyStore() keeps them in memory (unit tests, tiny inputs)
    first = keys.first_or_add("ids", b"p1/0", "samples-00000.jsonl:1")   # None the first time, then the value
    keys.commit()                                # once a batch

Sample ids (each must appear once), exact-dedup hashes and MinHash LSH band keys grow with the input: held in
Python dicts they cost ~0.2-2 KB a sample (an R1-size set: GBs). In a sqlite file they cost the page cache
only, so the filter's memory stays flat however many samples stream through it. Nothing here must survive a
crash (the file lives in the run's scratch folder), so journaling and fsync are off.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class KeyStore:
    """Named tables mapping a key (bytes) to the value stored with its first occurrence, in insertion order."""

    def __init__(self, path: Path | None = None, cache_mib: int = 16) -> None:
        self.db = sqlite3.connect(str(path) if path is not None else ":memory:")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # negative: KiB, the bound on its memory
        self.tables: set[str] = set()
        self.added = 0

    def _table(self, name: str) -> str:
        if name not in self.tables:
            self.db.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" (k BLOB PRIMARY KEY, v TEXT, n INTEGER) WITHOUT ROWID'
            )
            self.tables.add(name)
        return f'"{name}"'

    def get(self, table: str, key: bytes) -> str | None:
        row = self.db.execute(f"SELECT v FROM {self._table(table)} WHERE k = ?", (key,)).fetchone()
        return row[0] if row else None

    def first_or_add(self, table: str, key: bytes, value: str) -> str | None:
        """The value stored with `key`'s first occurrence; None (after storing `value`) if this is the first."""
        found = self.get(table, key)
        if found is None:
            self.add(table, [key], value)
        return found

    def earliest(self, table: str, keys: list[bytes]) -> str | None:
        """The value of whichever of `keys` was added first, or None if none was."""
        marks = ",".join("?" * len(keys))
        row = self.db.execute(
            f"SELECT v FROM {self._table(table)} WHERE k IN ({marks}) ORDER BY n LIMIT 1", keys
        ).fetchone()
        return row[0] if row else None

    def add(self, table: str, keys: list[bytes], value: str) -> None:
        """Store `value` under each of `keys` (new keys: callers check first)."""
        self.added += 1
        self.db.executemany(
            f"INSERT INTO {self._table(table)} VALUES (?, ?, ?)", [(k, value, self.added) for k in keys]
        )

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.close()
