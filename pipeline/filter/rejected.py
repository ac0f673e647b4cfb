"""rejected.jsonl, written as samples are dropped: every dropped sample with the step, reason and detail.

Rows come in input order. A one-pass run writes them straight into the file. With a whole-set step (select) the
run takes several passes, each dropping samples in input order of its own: each pass's rows go to a scratch file
(sample index + the JSON line) and `close` merges them by index, so the file reads as if one pass had run.
"""

from __future__ import annotations

import heapq
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.filter.steps import Drop, Item
from pipeline.records.schema import to_row
from pipeline.records.write import fsync_file


def line(item: Item, step: str, drop: Drop) -> str:
    row = {**to_row(item.sample), "step": step, "reason": drop.reason, "detail": drop.detail}
    return json.dumps(row, ensure_ascii=False) + "\n"


class RejectedWriter:
    def __init__(self, path: Path, scratch: Path, passes: int) -> None:
        self.path, self.scratch = path, scratch
        self.direct = passes == 1
        self.count = 0
        """Rows written to rejected.jsonl (known once closed)."""
        self.files: list[IO] = (
            [path.open("w", encoding="utf-8")]
            if self.direct
            else [(scratch / f"rejected-{p}.pickle").open("wb") for p in range(passes)]
        )

    def rejected(self, rows: list[tuple[Item, str, Drop]], pass_number: int) -> None:
        if self.direct:
            self.files[0].writelines(line(*row) for row in rows)
            self.count += len(rows)
        elif rows:
            batch = [(row[0].index, line(*row)) for row in rows]
            pickle.dump(batch, self.files[pass_number], protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        for f in self.files:
            f.close()
        if not self.direct:
            self._merge()
        fsync_file(self.path)

    def _merge(self) -> None:
        parts = [self.scratch / f"rejected-{p}.pickle" for p in range(len(self.files))]
        with self.path.open("w", encoding="utf-8") as out:
            for _, text in heapq.merge(*(_rows(p) for p in parts)):
                out.write(text)
                self.count += 1
        for p in parts:
            p.unlink()


def _rows(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as f:
        while True:
            try:
                yield from pickle.load(f)
            except EOFError:
                return
