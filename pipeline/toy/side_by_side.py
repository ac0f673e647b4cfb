"""Several commands at once, shown as one readable display: each output line prefixed with its run's name.

    run_side_by_side({"sft": [...], "kd": [...], "opd": [...]}, env, ready={"opd": start_saved})
    # -> {"sft": 0, "kd": 0, "opd": 0}, after all have ended

Two tqdm bars on one terminal overwrite each other, and in a log file they are carriage-return spam. The runs'
output is a pipe, so each trains with readable progress lines instead (pipeline/train/progress.py), and any
carriage-return update that still arrives is cut into lines. Lines are printed whole, one at a time, a training
run's progress without its logging prefix:

    [sft] step 120/4000 (3%) loss 0.9226 lr 3.0e-03 2,480 tok/s ETA 6m12s

The full metrics dicts (`pipeline.train.metrics: {...}`, or a trainer's raw `{'loss': ...}` print) are left out
of the display; with `logs=FOLDER` every line of each run, those included, is kept in `FOLDER/<name>.log`.

A command named in `ready` waits until its predicate holds (checked every `poll` seconds; e.g. until the
checkpoint it starts from has been saved by another run). It is not started, and its code is `None`, when a
running command fails first or when every other command has ended without making it ready.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

_print_lock = threading.Lock()


PROGRESS = re.compile(r"^[\d:]+ INFO pipeline\.train\.progress: ")  # logging's `time level logger: ` prefix
METRICS = re.compile(r"^([\d:]+ INFO pipeline\.train\.metrics: )?\{.*\}$")


def displayed(line: str) -> str | None:
    """What the display shows of a run's output line: progress without its logging prefix, no metrics dicts."""
    if METRICS.match(line.strip()):
        return None
    return PROGRESS.sub("", line)


def _relay(name: str, stream: IO[str], width: int, log: IO[str] | None) -> None:
    for raw in stream:
        for line in raw.replace("\r", "\n").splitlines():
            if not line.strip():
                continue
            if log is not None:
                log.write(line + "\n")
                log.flush()
            if (shown := displayed(line)) is not None:
                _say(name, width, shown)
    if log is not None:
        log.close()


def _say(name: str, width: int, line: str) -> None:
    with _print_lock:
        print(f"[{name:<{width}}] {line}", flush=True)


class _Runs:
    """The started commands, their output relays and the common prefix width."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], logs: Path | None) -> None:
        self.commands, self.env, self.logs = commands, env, logs
        self.width = max(map(len, commands))
        self.procs: dict[str, subprocess.Popen] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str) -> None:
        proc = subprocess.Popen(
            self.commands[name], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace",
        )  # fmt: skip
        self.procs[name] = proc
        log = None
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            log = (self.logs / f"{name}.log").open("w", encoding="utf-8")
        relay = threading.Thread(target=_relay, args=(name, proc.stdout, self.width, log), daemon=True)
        relay.start()
        self.threads.append(relay)

    def start_when_ready(self, waiting: dict[str, Callable[[], bool]], poll: float) -> None:
        """Start each waiting command once its predicate holds; give up on the rest when a run fails or when
        every run has ended without making them ready."""
        while waiting:
            # polled before the predicates: a run that has ended has saved all it ever will
            ended = [p.poll() for p in self.procs.values()]
            now = [name for name, check in waiting.items() if check()]
            for name in now:
                del waiting[name]
                _say(name, self.width, "starting: what it waited for is ready")
                self.start(name)
            failed = any(code not in (None, 0) for code in ended)
            if waiting and (failed or (not now and None not in ended)):
                for name in waiting:
                    _say(name, self.width, "not started: the run it waited for failed or ended without it")
                return
            if waiting:
                time.sleep(poll)

    def wait(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {name: None for name in self.commands}
        codes.update({name: proc.wait() for name, proc in self.procs.items()})
        for thread in self.threads:
            thread.join()
        sys.stdout.flush()
        return codes


def run_side_by_side(
    commands: dict[str, list[str]],
    env: dict[str, str],
    ready: dict[str, Callable[[], bool]] | None = None,
    poll: float = 2.0,
    logs: Path | None = None,
) -> dict[str, int | None]:
    """Start every command (those in `ready` once their predicate holds), relay their output line by line with a
    name prefix (and whole into `logs/<name>.log`), wait for all; their return codes (None: never started)."""
    runs = _Runs(commands, env, logs)
    waiting = {name: check for name, check in (ready or {}).items() if name in commands}
    for name in commands:
        if name not in waiting:
            runs.start(name)
    runs.start_when_ready(waiting, poll)
    return runs.wait()
