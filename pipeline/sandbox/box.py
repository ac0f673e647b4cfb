"""Running untrusted Python in a box: its own root, namespaces, uid and limits; one program, or a batch.

    sandbox = Sandbox(limits=Limits(memory_bytes=512 << 20), mode="auto")
    result = sandbox.run("print(input()[::-1])", stdin="abc", timeout=5)
    result.ok, result.stdout, result.mode                    # True, "cba\\n", "namespaces"
    result, outcome = sandbox.converse(source, talk, timeout=5)  # the program under runner.py; talk(Channel)

Modes (`sandbox.mode` in recipes; "auto" takes the first that works here, in this order, and logs it):
- "namespaces" (root): new mount, pid, network, IPC, UTS and cgroup namespaces; a root by construction (the
  interpreter's directories and the system libraries read-only, /dev null, zero and urandom, a fresh /proc of
  its pid namespace, /tmp a tmpfs of `disk_bytes`, nothing else of the host); a fresh uid no one else has.
- "userns" (users other than root, uid 0 of a rootless container or `unshare -r` too, where unprivileged user
  namespaces are allowed): the same box inside a new user namespace mapping only the caller's uid; the program
  runs as that one uid (1000 inside), without capabilities.
- "landlock" (Linux >= 6.12, neither of the above): the host's tree, but Landlock lets the program read only
  the interpreter, the system libraries and its own directory, create or write no file (so disk use is its
  capped stdout and stderr), not signal or reach abstract sockets outside; seccomp refuses every socket.
Every mode: a new session keyring, no_new_privs, a seccomp filter (no memfd, SysV shared memory, message
queues, keyring calls, io_uring, new namespaces or mounts), rlimits (CPU, address space, processes, file size,
open files), a minimal environment, and every process of the run killed when it ends. Nothing ever runs
without one: no mode -> `SandboxUnavailable` naming what is missing and how to enable it.

Not bounded by any mode: the total memory of a run's processes (RLIMIT_AS is per process); a cgroup would.
"""

from __future__ import annotations

import functools
import logging
import marshal
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.sandbox import jail, modes, runner
from pipeline.sandbox.channel import Channel, ChannelClosed
from pipeline.sandbox.contents import box_contents, environment, processes_of, site_packages
from pipeline.sandbox.modes import MODES, Mode, ModeChoice

log = logging.getLogger("distill.sandbox")
T = TypeVar("T")
UID_BASE, UID_COUNT = 0x70000000, 1 << 24
"""Run uids (root): systemd's "unused" 1879048192-2147352575, above the container ranges."""
SUPERVISOR_GRACE = 10.0
"""Seconds past the program's limit before the supervisor itself counts as hung and is killed."""
PROBE_TIMEOUT = 20.0
"""Seconds a mode's trial program may take when the mode is checked."""


class SandboxUnavailable(RuntimeError):
    """No sandbox mode works on this machine (or the one asked for does not): nothing was run."""


class SandboxError(RuntimeError):
    """The sandbox failed to set up or supervise a run; says nothing about the program."""


@dataclass(frozen=True)
class SandboxConfig:
    """The `sandbox:` block of the code step, eval and verify."""

    mode: ModeChoice = "auto"
    """auto (strongest available), namespaces (root), userns (unprivileged user namespaces) or landlock."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. RLIMIT_* hold per process, except `processes`, per run."""

    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    """Address space per process: a larger allocation raises MemoryError inside the sandbox."""
    processes: int = 32
    """Processes and threads of the run together: a fork bomb stops here."""
    file_bytes: int = 16 << 20
    """Largest file it may write, stdout and stderr included (SIGXFSZ past it)."""
    open_files: int = 64
    disk_bytes: int = 64 << 20
    """Size of /tmp, its only writable directory (namespace modes; mode landlock writes no file)."""
    output_bytes: int = 1 << 20
    """stdout and stderr kept in the result, each; the rest is cut."""
    reply_bytes: int = 16 << 20
    """Longest reply of the harness (one function call's result as JSON)."""

    def rlimits(self, processes: int | None = None) -> dict[str, tuple[int, int]]:
        nproc = processes or self.processes
        return {
            "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 1),
            "RLIMIT_AS": (self.memory_bytes, self.memory_bytes),
            "RLIMIT_NPROC": (nproc, nproc),
            "RLIMIT_FSIZE": (self.file_bytes, self.file_bytes),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_MSGQUEUE": (0, 0),
            "RLIMIT_MEMLOCK": (0, 0),
        }


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    """Exit status; minus the signal when killed by one (-9 SIGKILL, -24 SIGXCPU); None when it timed out."""
    timed_out: bool
    stdout: str
    stderr: str
    elapsed: float
    truncated: bool = False
    mode: Mode | None = None
    """The sandbox mode it ran in."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Job:
    source: str
    stdin: str = ""
    timeout: float = 10.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _private(path: Path, mode: str = "wb") -> Any:
    """A new file of the run, 0600 whatever the umask: no other user reads a program or its output."""
    return open(path, mode, opener=lambda p, flags: os.open(p, flags, 0o600))  # noqa: SIM115


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _reports(status: Any) -> list[dict[str, Any]]:
    """The marshalled dicts the jail (and the program's child before exec) wrote to the status file."""
    reports = []
    while True:
        try:
            reports.append(marshal.load(status))
        except (EOFError, ValueError, TypeError):
            return reports


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


# --- running ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """How programs run: the limits, the mode ("auto": the strongest this machine allows) and the interpreter."""

    limits: Limits = field(default_factory=Limits)
    mode: ModeChoice = "auto"
    python: str = sys.executable

    def resolved_mode(self) -> Mode:
        """The mode runs use; SandboxUnavailable, naming what is missing, when there is none."""
        return resolve_mode(self.mode, self.python)

    def run(self, source: str, stdin: str = "", timeout: float = 10.0) -> RunResult:
        """Run `source` as a Python program, with `stdin` as its input, for at most `timeout` seconds."""
        return self.run_in(self.resolved_mode(), source, stdin, timeout, None)[0]

    def converse(
        self, source: str, talk: Callable[[Channel], T], timeout: float = 10.0
    ) -> tuple[RunResult, T]:
        """Run `source` under the harness (runner.py) while `talk(channel)` calls its functions; both results.

        ChannelClosed from `talk` is kept as its result (the run's status says why the program stopped).
        """
        return self.run_in(self.resolved_mode(), source, "", timeout, talk)

    def run_many(self, jobs: Sequence[Job], max_workers: int | None = None) -> list[RunResult]:
        """Run jobs concurrently, at most `max_workers` at a time (default: one per core); results in order."""
        with ThreadPoolExecutor(max_workers=max_workers or cores(), thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda job: self.run(job.source, job.stdin, job.timeout), jobs))

    def run_in(
        self, mode: Mode, source: str, stdin: str, timeout: float, talk: Callable[[Channel], T] | None
    ) -> tuple[RunResult, T | ChannelClosed | None]:
        """One run in `mode` (no detection: the probes of modes.py use this)."""
        box = Path(tempfile.mkdtemp(prefix="distill-sandbox-"))  # 0700: the run's files are ours alone
        try:
            files = {"main.py": box / "main.py"}
            with _private(files["main.py"]) as f:
                f.write(source.encode())
            files["runner.py"] = Path(runner.__file__)
            with _private(box / "stdin") as f:
                f.write(stdin.encode())
            spec = self._spec(mode, box, files, timeout, talk is not None)
            return self._supervise(spec, box, timeout, talk)
        finally:
            shutil.rmtree(box, ignore_errors=True)

    def _spec(
        self, mode: Mode, box: Path, files: dict[str, Path], timeout: float, talk: bool
    ) -> dict[str, Any]:
        binds, links = box_contents(self.python)
        root = os.geteuid() == 0
        uid = UID_BASE + secrets.randbelow(UID_COUNT) if root and mode != "userns" else None
        if mode == "landlock":
            box.chmod(0o711)  # the run's uid passes through to its directory; the files beside it stay 0600
            cwd = str(box / "work")
            where = cwd
        else:
            (box / "root").mkdir()
            cwd, where = "/tmp", "/sandbox"
        serve = ["--serve"] if talk else []
        processes = None if root or mode != "landlock" else processes_of(os.getuid()) + self.limits.processes
        return {
            "mode": mode,
            "uid": uid,
            "root": str(box / "root"),
            "cwd": cwd,
            "files": {name: str(path) for name, path in files.items()},
            "argv": [f"{where}/runner.py", *serve, f"{where}/main.py", *site_packages(self.python)],
            "python": self.python,
            "binds": binds,
            "links": links,
            "timeout": timeout,
            "rlimits": self.limits.rlimits(processes),
            "disk_bytes": self.limits.disk_bytes,
            "inodes": 4096,
        }

    def _supervise(
        self, spec: dict[str, Any], box: Path, timeout: float, talk: Callable[[Channel], T] | None
    ) -> tuple[RunResult, T | ChannelClosed | None]:
        requests, replies = (os.pipe(), os.pipe()) if talk else ((-1, -1), (-1, -1))
        with (
            open(box / "stdin", "rb") as stdin,
            _private(box / "stdout") as stdout,
            _private(box / "stderr") as stderr,
            _private(box / "status", "w+b") as status,
        ):
            spec["fds"] = {"status": status.fileno()}
            if talk:
                spec["fds"].update(requests=requests[0], replies=replies[1])
            with _private(box / "spec") as f:
                marshal.dump(spec, f)
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", jail.__file__, str(box / "spec")],
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=tuple(spec["fds"].values()),
                    env=environment(spec["cwd"], "/tmp" if spec["mode"] != "landlock" else spec["cwd"]),
                    start_new_session=True,  # no controlling terminal, and a process group to kill if it hangs
                )
            finally:
                _close(requests[0], replies[1])  # the jail's ends: EOF reaches us when the program's close
            try:
                answer = self._talk(talk, requests[1], replies[0], timeout) if talk else None
            finally:
                _close(requests[1], replies[0])  # the harness reads end of input and exits
                self._wait(proc, timeout)
            status.seek(0)
            reports = _reports(status)
        return self._result(spec["mode"], proc.returncode, reports, box), answer

    def _talk(self, talk: Callable[[Channel], T], requests: int, replies: int, timeout: float) -> Any:
        os.set_blocking(requests, False)
        try:
            return talk(Channel(requests, replies, time.monotonic() + timeout, self.limits.reply_bytes))
        except ChannelClosed as e:
            return e

    @staticmethod
    def _wait(proc: subprocess.Popen, timeout: float) -> None:
        try:
            proc.wait(timeout + SUPERVISOR_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the jail's pid 1 dies with it, and the kernel ends its namespace
            proc.wait()
            raise SandboxError(
                f"the sandbox supervisor did not finish in {timeout + SUPERVISOR_GRACE} s"
            ) from None

    def _result(self, mode: Mode, returncode: int, reports: list[dict], box: Path) -> RunResult:
        errors = [r["error"] for r in reports if "error" in r]
        if returncode != 0 or errors or not reports:
            stderr, _ = _read_capped(box / "stderr", 4000)
            raise SandboxError(
                f"sandbox ({mode}) failed (supervisor exit {returncode}): {'; '.join(errors) or stderr}"
            )
        report = reports[-1]
        stdout, cut_out = _read_capped(box / "stdout", self.limits.output_bytes)
        stderr, cut_err = _read_capped(box / "stderr", self.limits.output_bytes)
        return RunResult(
            returncode=None if report["status"] is None else os.waitstatus_to_exitcode(report["status"]),
            timed_out=report["timed_out"],
            stdout=stdout,
            stderr=stderr,
            elapsed=report["elapsed"],
            truncated=cut_out or cut_err,
            mode=mode,
        )


# --- which mode (pipeline/sandbox/modes.py says what each needs) ---------------------------------------------


@functools.cache
def _why_not(mode: Mode, python: str) -> str | None:
    """None when a trivial program runs in `mode`, else why it does not."""
    reason = modes.precheck(mode, python)
    if reason is None:
        try:
            result, _ = Sandbox(mode=mode, python=python).run_in(mode, "pass", "", PROBE_TIMEOUT, None)
            reason = None if result.ok else f"a trivial program failed: {result.stderr.strip()[-300:]}"
        except (SandboxError, OSError) as e:
            reason = str(e)
    if reason is not None and mode == "userns":
        reason = f"{reason}; {modes.userns_fix()}"
    return reason


@functools.cache
def resolve_mode(choice: ModeChoice = "auto", python: str = sys.executable) -> Mode:
    """The mode runs use (see the module docstring); SandboxUnavailable when none works. Logged once."""
    why = {}
    for mode in MODES if choice == "auto" else (choice,):
        why[mode] = _why_not(mode, python)
        if why[mode] is None:
            skipped = "; ".join(f"{m}: {r}" for m, r in why.items() if r)
            (log.warning if skipped else log.info)(
                "code sandbox: mode %s%s",
                mode,
                f" (stronger modes unavailable: {skipped})" if skipped else "",
            )
            return mode
    reasons = "; ".join(f"{m}: {r}" for m, r in why.items())
    raise SandboxUnavailable(f"no code sandbox available (sandbox.mode={choice}): {reasons}. Nothing was run")


def require_mode(choice: ModeChoice, python: str = sys.executable) -> Mode:
    """`resolve_mode`, named for the check a stage does before its first step."""
    return resolve_mode(choice, python)
