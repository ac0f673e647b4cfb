"""Several commands at once, shown as one readable display: each output line prefixed with its run's name.

    run_side_by_side({"sft": [...], "kd": [...]}, env)   # -> {"sft": 0, "kd": 0}, after both have ended

Two tqdm bars on one terminal overwrite each other, and in a log file they are carriage-return spam: the demo
starts its runs with `trainer.disable_tqdm=true`, so each reports periodic lines (the trainer's logged metrics),
and any carriage-return update that still arrives is cut into lines too. Lines are printed whole, one at a time,
as `[sft] {'loss': ...}`, so the output reads the same on a terminal and in a file.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import IO

_print_lock = threading.Lock()


def _relay(name: str, stream: IO[str], width: int) -> None:
    for raw in stream:
        for line in raw.replace("\r", "\n").splitlines():
            if line.strip():
                with _print_lock:
                    print(f"[{name:<{width}}] {line}", flush=True)


def run_side_by_side(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, int]:
    """Start every command, relay their output line by line with a name prefix, wait for all; return codes."""
    width = max(map(len, commands))
    procs, threads = {}, []
    for name, cmd in commands.items():
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        procs[name] = proc
        thread = threading.Thread(target=_relay, args=(name, proc.stdout, width), daemon=True)
        thread.start()
        threads.append(thread)
    codes = {name: proc.wait() for name, proc in procs.items()}
    for thread in threads:
        thread.join()
    sys.stdout.flush()
    return codes
