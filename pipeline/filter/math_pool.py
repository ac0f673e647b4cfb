"""Grading math answers in parallel: worker processes, each grading chunks of samples under a time limit.

    verdicts = grade_many([(text, gold), ...], workers=2)  # as math_grader.grade, in input order

One hung or dead worker costs one sample, never the run: a worker silent for longer than the hard limit is
killed and replaced, and the samples it had not reported are retried one by one to find the one at fault.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline.filter.math_grader import Memory, Verdict, extract_answer, grade
from pipeline.sandbox.box import cores

log = logging.getLogger("distill.filter")


def grade_many(
    items: Iterable[tuple[str | None, str | None]], workers: int | None = None, timeout: float = 5.0
) -> list[Verdict]:
    """Grade (text, gold) pairs in worker processes, in input order; one hung or dead worker stops one sample.

    Items go out in chunks of consecutive pairs (the samples of a problem are neighbours, so each worker
    parses a gold once per chunk). A worker silent for longer than the hard limit is killed and a new one
    takes the rest; the sample at fault (its unreported samples are retried one by one to find it) is a
    timeout, or grader_error when the worker died instead.
    """
    items = list(items)
    with Grader(max(1, min(workers or cores(), len(items))), timeout) as grader:
        return grader.grade(items)


class Grader:
    """`grade_many` over batch after batch with the same worker processes (the filter grades a batch at a time)."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.workers, self.timeout = workers or cores(), timeout
        self.pool: _Pool | None = None  # started with the first batch

    def grade(self, items: list[tuple[str | None, str | None]]) -> list[Verdict]:
        results: list[Verdict | None] = [None] * len(items)
        if not items:
            return results  # type: ignore[return-value]
        if self.pool is None:
            self.pool = _Pool(self.workers, self.timeout)
        size = max(1, min(64, -(-len(items) // (8 * self.workers))))  # ~8 chunks a worker balance the load
        chunks = deque(
            list(range(start, min(start + size, len(items)))) for start in range(0, len(items), size)
        )
        self.pool.run(items, chunks, results)
        return results  # type: ignore[return-value]  # every slot is filled

    def close(self) -> None:
        if self.pool is not None:
            self.pool.__exit__()
            self.pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Connection, timeout: float) -> None:
    """A worker's main loop: grade each chunk received, sending its verdicts at least every 50 ms while busy."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then stops its workers
    try:
        conn.send("ready")
        while (chunk := conn.recv()) is not None:
            memory, done, sent = Memory(), [], time.monotonic()
            for text, gold in chunk:
                # verdicts go in batches (a message each costs as much as grading); the 50 ms bound keeps
                # the worker heard from long before the parent's hard limit
                if done and time.monotonic() - sent > 0.05:
                    conn.send(done)
                    done, sent = [], time.monotonic()
                try:
                    done.append(grade(text, gold, timeout, memory=memory))
                except Exception:  # a bug in a parser must cost one sample, not the run, and be seen
                    log.exception("grading sample %r against gold %r failed: a bug, please report it",
                                  (text or "")[-200:], gold)  # fmt: skip
                    done.append(Verdict(None, None, "grader_error"))
            conn.send(done)
    except (EOFError, OSError):  # the parent has gone
        return


class _Worker:
    """One grading process and the input indices of the chunk it is working through."""

    def __init__(self, context: Any, timeout: float) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, timeout), daemon=True)
        self.process.start()
        child.close()
        try:  # a worker that cannot start (its imports fail, say) would fail the same way for every sample
            if not self.conn.poll(60.0) or self.conn.recv() != "ready":
                raise EOFError
        except (EOFError, OSError):
            self.stop()
            raise RuntimeError("a grading worker failed to start: see its error above") from None
        self.todo: deque[int] = deque()
        self.since = time.monotonic()  # when it last gave a sign of life (took a chunk, sent a verdict)

    def give(self, chunk: list[int], items: list[tuple[str | None, str | None]]) -> None:
        self.todo, self.since = deque(chunk), time.monotonic()
        self.conn.send([items[i] for i in chunk])

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class _Pool:
    """Grading processes, each working through a chunk at a time, watched against a hard time limit."""

    def __init__(self, workers: int, timeout: float) -> None:
        # fork starts a worker in milliseconds with math_verify loaded, but forking a process that runs other
        # threads can copy a lock one of them holds: then a fork server (with this module loaded) starts them
        if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            self.context = multiprocessing.get_context("fork")
        else:
            self.context = multiprocessing.get_context("forkserver")
            self.context.set_forkserver_preload([__name__])
        self.timeout = timeout
        self.hard_limit = timeout + max(timeout, 2.0)  # for a worker that even its own timer cannot stop
        self.workers: list[_Worker] = []
        try:
            self.workers.extend(_Worker(self.context, timeout) for _ in range(workers))
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()

    def run(self, items: list, chunks: deque[list[int]], results: list[Verdict | None]) -> None:
        while chunks or any(w.todo for w in self.workers):
            for slot, worker in enumerate(self.workers):
                if not worker.todo and chunks:
                    self._give(slot, chunks.popleft(), items)
            busy = [w for w in self.workers if w.todo]
            wake = min(w.since for w in busy) + self.hard_limit - time.monotonic()
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=max(wake, 0.0))
            for slot, worker in enumerate(self.workers):
                if worker.todo:
                    self._collect(slot, worker, chunks, results, items)

    def _give(self, slot: int, chunk: list[int], items: list) -> None:
        try:
            self.workers[slot].give(chunk, items)
        except OSError:  # it died while idle: a new one gets the chunk (and a second failure is raised)
            self._replace(slot)
            self.workers[slot].give(chunk, items)

    def _collect(
        self, slot: int, worker: _Worker, chunks: deque[list[int]], results: list, items: list
    ) -> None:
        dead = False
        try:
            while worker.todo and worker.conn.poll():
                for verdict in worker.conn.recv():
                    results[worker.todo.popleft()] = verdict
                worker.since = time.monotonic()
        except (EOFError, OSError):
            dead = True
        if not worker.todo:
            return
        dead = dead or not worker.process.is_alive()
        if not dead and time.monotonic() - worker.since < self.hard_limit:
            return
        if len(worker.todo) > 1:  # which of the samples not yet reported did it? each alone will tell
            chunks.extendleft([index] for index in reversed(worker.todo))
        else:
            index = worker.todo[0]
            answer = extract_answer(items[index][0]) if items[index][0] is not None else None  # linear: safe
            if dead:
                log.error("a grading worker died on sample %d (exit %s): counted as grader_error; a bug, please "
                          "report it", index, worker.process.exitcode)  # fmt: skip
            results[index] = (
                Verdict(None, answer, "grader_error") if dead else Verdict(False, answer, "timeout")
            )
        self._replace(slot)

    def _replace(self, slot: int) -> None:
        self.workers[slot].stop()
        self.workers[slot] = _Worker(self.context, self.timeout)
