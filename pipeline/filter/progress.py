"""Progress of a long loop as plain log lines: done / total, rate and ETA, every few seconds.

    progress = Progress("pass 1/2", total=100_000, log=log)
    progress.advance(1000)      # after each batch; logs at most every `every` seconds
    progress.done()             # the closing line: count, rate, elapsed

One whole line at a time (no carriage returns), so a terminal and a log file read the same.
"""

from __future__ import annotations

import logging
import time


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, what: str, total: int | None, log: logging.Logger, every: float = 10.0) -> None:
        self.what, self.total, self.log, self.every = what, total, log, every
        self.count = 0
        self.started = self.shown = time.monotonic()

    def advance(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.shown >= self.every:
            self.shown = now
            self.log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        if not self.total:
            return f"{self.what}: {self.count:,} samples, {rate:,.0f}/s, {duration(elapsed)} elapsed"
        left = max(self.total - self.count, 0)
        eta = duration(left / rate) if rate > 0 else "?"
        share = self.count / self.total
        return f"{self.what}: {self.count:,}/{self.total:,} samples ({share:.0%}), {rate:,.0f}/s, ETA {eta}"

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.count / max(elapsed, 1e-9)
        self.log.info(
            "%s: %s samples in %s (%s/s)", self.what, f"{self.count:,}", duration(elapsed), f"{rate:,.0f}"
        )
