"""Running the filter's steps over the samples in batches, one pass per whole-set step plus one.

    log = Passes(steps, context, scratch, batch_size).run(batches, output, tally)

Samples flow through the steps a batch at a time (datatrove's way), in input order, so memory holds one batch.
A whole-set step (select) cannot decide before it has seen every sample reaching it: a pass ends there. The pass
lets the step `observe` each batch's survivors (it keeps compact keys), spills the survivors to a scratch file,
and once the input is through, the step `decide`s; the next pass reads the spill back in the same order and
runs the steps from that one on. Dropped samples go to `output.rejected` as soon as their batch is through (each
pass's in input order), the survivors of the last pass to `output.kept`; every sample's fate reaches `tally`.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pipeline.filter.progress import Progress
from pipeline.filter.report import Tally
from pipeline.filter.steps import Context, Drop, Item, Step, count_tokens

log = logging.getLogger("distill.filter")


class Output(Protocol):
    def rejected(self, rows: list[tuple[Item, str, Drop]], pass_number: int) -> None: ...

    def kept(self, items: list[Item]) -> None: ...


class StepLog:
    """One step's line of the report: samples in, dropped, drops per reason (in order of first drop), seconds."""

    def __init__(self, step: Step) -> None:
        self.step, self.seen, self.dropped, self.seconds = step, 0, 0, 0.0
        self.reasons: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step.name,
            "in": self.seen,
            "dropped": self.dropped,
            "reasons": self.reasons,
            "seconds": round(self.seconds, 3),
        }


class Passes:
    def __init__(self, steps: list[Step], context: Context, scratch: Path, batch_size: int) -> None:
        self.steps, self.context, self.scratch, self.batch_size = steps, context, scratch, batch_size
        self.logs = [StepLog(s) for s in steps]
        ends = [i for i, s in enumerate(steps) if s.whole_set]
        self.spans = list(zip([0, *ends], [*ends, len(steps)], strict=True))
        """Per pass, the steps it runs: [start, end); a whole-set step at `end` observes what is left."""

    def run(
        self, batches: Iterable[list[Item]], output: Output, tally: Tally, total: int | None
    ) -> list[dict[str, Any]]:
        """Every pass over `batches` (`total` samples, when known); returns the report's step lines."""
        for number, (start, end) in enumerate(self.spans):
            progress = Progress(f"pass {number + 1}/{len(self.spans)}", total, log)
            if end == len(self.steps):  # the last pass: what is left is kept
                for batch in batches:
                    output.kept(self._batch(batch, start, end, number, output, tally))
                    progress.advance(len(batch))
                    del batch  # before the next is read: one batch in memory, not two
                progress.done()
                break
            spill = self.scratch / f"pass-{number}.pickle"
            with open(spill, "wb") as sink:
                total = 0
                for batch in batches:
                    survivors = self._batch(batch, start, end, number, output, tally)
                    self._timed(end, self.steps[end].observe, survivors, self.context)
                    pickle.dump(survivors, sink, protocol=pickle.HIGHEST_PROTOCOL)
                    total += len(survivors)
                    progress.advance(len(batch))
                    del batch, survivors  # before the next is read: one batch in memory, not two
            progress.done()
            self._timed(end, self.steps[end].decide, self.context)
            batches = rebatch(read_spill(spill), self.batch_size)
        for entry in self.logs:
            log.info(
                "%-13s %6d in, %6d dropped %s",
                entry.step.name,
                entry.seen,
                entry.dropped,
                entry.reasons or "",
            )
        return [entry.as_dict() for entry in self.logs]

    def _timed(self, at: int, call: Any, *args: Any) -> None:
        started = time.perf_counter()
        call(*args)
        self.logs[at].seconds += time.perf_counter() - started

    def _batch(
        self, batch: list[Item], start: int, end: int, number: int, output: Output, tally: Tally
    ) -> list[Item]:
        """Run steps[start:end] over one batch; hand on its drops; return its survivors."""
        if number == 0:
            for item in batch:
                tally.read(item)
        alive, dropped = batch, []
        for entry in self.logs[start:end]:
            alive = self._step(entry, alive, dropped)
        count_tokens(batch, self.context)  # the report's and the dataset's token counts, all in one call
        self.context.keys.commit()
        dropped.sort(key=lambda row: row[0].index)
        for item, _, _ in dropped:
            tally.settle(item, kept=False)
        output.rejected(dropped, number)
        if end == len(self.steps):
            for item in alive:
                tally.settle(item, kept=True)
        return alive

    def _step(self, entry: StepLog, alive: list[Item], dropped: list) -> list[Item]:
        step, started = entry.step, time.perf_counter()
        drops = step.run(alive, self.context) if alive else {}
        for j, drop in drops.items():
            dropped.append((alive[j], step.name, drop))
            entry.reasons[drop.reason] = entry.reasons.get(drop.reason, 0) + 1
            if step.failure:
                self.context.record_failure(alive[j])
        entry.seen += len(alive)
        entry.dropped += len(drops)
        entry.seconds += time.perf_counter() - started
        return [item for j, item in enumerate(alive) if j not in drops] if drops else alive


def read_spill(path: Path) -> Iterator[list[Item]]:
    """The batches a pass spilled, in the order written; the file is removed once read."""
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                break
    path.unlink()


def rebatch(batches: Iterable[list[Item]], size: int) -> Iterator[list[Item]]:
    """Batches of `size` items (the last smaller) out of batches of any size, order kept."""
    pending: list[Item] = []
    for batch in batches:
        pending.extend(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending
