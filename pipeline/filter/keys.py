"""Compact keys of the whole input on disk: the tables the filter's whole-set checks look things up in.

    keys = KeyStore(scratch / "keys.sqlite")     # KeyStore() keeps them in memory (unit tests, tiny inputs)
    found = keys.lookup("ids", [b"p1/0", ...])    # a batch's keys at once: {key: (number, value)} of those stored
    keys.insert("ids", [(b"p1/0", keys.number(), "samples-00000.jsonl:1"), ...])   # the batch's new ones
    keys.commit()                                 # once a batch

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

    def lookup(self, table: str, keys: list[bytes]) -> dict[bytes, tuple[int, str]]:
        """(number, value) of each of `keys` already stored; numbers give the order they were added in."""
        found: dict[bytes, tuple[int, str]] = {}
        for start in range(0, len(keys), 500):  # a query's parameters are limited
            chunk = keys[start : start + 500]
            query = f"SELECT k, n, v FROM {self._table(table)} WHERE k IN ({','.join('?' * len(chunk))})"
            found.update((k, (n, v)) for k, n, v in self.db.execute(query, chunk))
        return found

    def number(self) -> int:
        """The next number in the order of addition (several keys added together share one)."""
        self.added += 1
        return self.added

    def insert(self, table: str, rows: list[tuple[bytes, int, str]]) -> None:
        """Store (key, number, value) rows, keys not stored yet (callers look them up first)."""
        self.db.executemany(f"INSERT INTO {self._table(table)} (k, n, v) VALUES (?, ?, ?)", rows)

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.close()
