"""Progress of a generate run: a live bar (samples, completion tokens/s, ETA) and the closing figures."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.logs import duration


@dataclass
class Stats:
    total: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: Counter = field(default_factory=Counter)
    problems: int | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, completion: Any) -> None:
        self.samples += 1
        self.prompt_tokens += completion.num_prompt_tokens
        self.completion_tokens += completion.num_completion_tokens
        self.finish_reasons[completion.finish_reason] += 1

    @classmethod
    def from_records(cls, rows: Iterable[dict[str, Any]]) -> Stats:
        """The figures of written sample rows, read once as they stream by."""
        stats, problems = cls(), set()
        for row in rows:
            stats.samples += 1
            stats.prompt_tokens += row["num_prompt_tokens"]
            stats.completion_tokens += row["num_completion_tokens"]
            stats.finish_reasons[row["finish_reason"]] += 1
            problems.add(row["problem_id"])
        stats.total, stats.problems = stats.samples, len(problems)
        return stats

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def counts(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "problems": self.problems,
            "finish_reasons": dict(sorted(self.finish_reasons.items())),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "mean_completion_tokens": round(self.completion_tokens / self.samples, 1)
            if self.samples
            else 0.0,
        }

    def throughput(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        return {
            "seconds": round(s, 2),
            "samples_per_s": round(self.samples / s, 3),
            "completion_tokens_per_s": round(self.completion_tokens / s, 1),
        }

    def summary(self, timed: bool = True) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.finish_reasons.items()))
        text = (
            f"{self.samples} samples ({reasons}); {self.prompt_tokens:,} prompt + {self.completion_tokens:,} "
            "completion tokens"
        )
        if timed:
            t = self.throughput()
            text += f"; {t['completion_tokens_per_s']:,.0f} completion tok/s over {t['seconds']:.1f} s"
        return text


def plain_progress(stats: Stats, every_s: float = 60.0) -> Callable[[], None]:
    """An update that prints `plain_line` at each tenth of the run and at least every `every_s` seconds."""
    marks = {int(stats.total * f / 10) for f in range(1, 11)}
    last = [time.perf_counter()]

    def update() -> None:
        now = time.perf_counter()
        if stats.samples in marks or now - last[0] >= every_s:
            last[0] = now
            print(plain_line(stats), file=sys.stderr, flush=True)

    return update


def plain_line(stats: Stats) -> str:
    """`generate: 600/6000 samples (10%), 2,480 completion tok/s, 1m12s elapsed, ETA 10m48s`."""
    seconds, t = stats.seconds, stats.throughput()
    line = f"generate: {stats.samples}/{stats.total} samples"
    if stats.total:
        line += f" ({100 * stats.samples // stats.total}%)"
    line += f", {t['completion_tokens_per_s']:,.0f} completion tok/s, {duration(seconds)} elapsed"
    if stats.samples:
        line += f", ETA {duration(seconds / stats.samples * max(stats.total - stats.samples, 0))}"
    return line


@contextlib.contextmanager
def progress_bar(stats: Stats) -> Iterator[Callable[[], None]]:
    """A rich progress bar on a terminal; on a pipe or file, a line every ~10% or minute instead of redrawing."""
    if not sys.stderr.isatty():
        yield plain_progress(stats)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tps]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("generate", total=stats.total, tps="")

        def update() -> None:
            tps = stats.completion_tokens / max(stats.seconds, 1e-9)
            bar.update(task, completed=stats.samples, tps=f"{tps:,.0f} tok/s")

        yield update
