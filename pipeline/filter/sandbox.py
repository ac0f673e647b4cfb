"""Running untrusted Python in a sandbox: a wall-clock limit, resource limits, no network, no writes outside its
own temporary directory, nothing inherited from the environment; one program, or a batch a few at a time.

    sandbox = Sandbox(limits=Limits(memory_bytes=512 << 20))
    result = sandbox.run("print(input()[::-1])", stdin="abc", timeout=5)
    result.ok, result.stdout                                     # True, "cba\\n"
    results = sandbox.run_many([Job(source) for source in sources])  # in order, one per core at a time

Mode "namespaces" (root with CAP_SYS_ADMIN; what the filter stage runs with):
- a fresh uid and gid per run, random in a range no distribution assigns (0x70000000 + 2**24): file
  permissions, signals and RLIMIT_NPROC (counted per real uid: useless for root, shared under `nobody`) then
  separate it from the host and from concurrent runs; no groups, no capabilities, no_new_privs;
- new network, pid, mount and IPC namespaces (util-linux `unshare`): the only interface is a loopback that is
  down, so no connection goes anywhere; the supervisor (`jail.py`) is pid 1, so when it exits the kernel
  kills every process the program left, even one that escaped its process group or session;
- every mount read-only, /home, /root and /run hidden, and the working directory a tmpfs of `disk_bytes` that
  vanishes with the run: there is nowhere else to write, not even the world-writable /tmp;
- a new, minimal environment (PATH, LANG, HOME, TMPDIR, one-thread BLAS), `python -I`, and setrlimit: CPU
  time, address space, processes, file size, open files, no core dumps.
Mode "seccomp", the fallback where namespaces are refused (a container without CAP_SYS_ADMIN): the same uid,
environment and limits, and a seccomp filter that makes socket(2) fail, so still no network, and leftover
processes are killed by uid. It is weaker: the host's filesystem is visible, world-writable directories (/tmp,
/dev/shm) stay writable, disk use is bounded per file only, and the interpreter must be reachable by an
unprivileged user. Without root neither mode is possible, and `run` raises `SandboxUnavailable` rather than
run code unconfined.

Not bounded by any mode: the total memory of a run's processes (RLIMIT_AS is per process; 32 processes of 1 GiB
is 32 GiB). A cgroup per run would bound it; not done here, where the memory cgroup belongs to the host's
supervisor.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.filter import jail

Isolation = Literal["namespaces", "seccomp"]

UID_BASE, UID_COUNT = 0x70000000, 1 << 24
"""Run uids: systemd's "unused" 1879048192-2147352575, above the container ranges, below the foreign range."""
NAMESPACES = ("--net", "--pid", "--mount", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")
SUPERVISOR_GRACE = 10.0
"""Seconds past the program's limit before the supervisor itself counts as hung and is killed."""


class SandboxUnavailable(RuntimeError):
    """This machine cannot confine a program (not root, or an unreachable interpreter): nothing was run."""


class SandboxError(RuntimeError):
    """The sandbox failed to set up or supervise a run; says nothing about the program."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. RLIMIT_* hold per process, except `processes`, per run (its own uid)."""

    cpu_seconds: int = 10
    """CPU time: SIGXCPU at the limit, SIGKILL a second later."""
    memory_bytes: int = 1 << 30
    """Address space per process: a larger allocation raises MemoryError inside the sandbox."""
    processes: int = 32
    """Processes and threads of the run together: a fork bomb stops here."""
    file_bytes: int = 16 << 20
    """Largest file it may write, stdout and stderr included (SIGXFSZ past it)."""
    open_files: int = 64
    disk_bytes: int = 64 << 20
    """Size of the working directory's tmpfs (mode "namespaces")."""
    output_bytes: int = 1 << 20
    """stdout and stderr kept in the result, each; the rest is cut."""

    def rlimits(self) -> dict[str, tuple[int, int]]:
        return {
            "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 1),
            "RLIMIT_AS": (self.memory_bytes, self.memory_bytes),
            "RLIMIT_NPROC": (self.processes, self.processes),
            "RLIMIT_FSIZE": (self.file_bytes, self.file_bytes),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
            "RLIMIT_CORE": (0, 0),
        }


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    """Exit status; minus the signal when killed by one (-9 SIGKILL, -24 SIGXCPU); None when it timed out."""
    timed_out: bool
    stdout: str
    stderr: str
    elapsed: float
    """Wall-clock seconds from start to exit (or to the limit)."""
    truncated: bool = False
    """stdout or stderr was longer than `Limits.output_bytes` and is cut."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Job:
    """One program of a batch."""

    source: str
    stdin: str = ""
    timeout: float = 10.0


def cores() -> int:
    """CPU cores this process may use: the default number of programs run at a time."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "the code sandbox runs each program as a fresh unprivileged uid, which needs root: run the filter "
            "stage as root (as in its container or VM)"
        )


@functools.cache
def detect_isolation() -> Isolation:
    """The strongest mode this machine allows; raises SandboxUnavailable when there is none."""
    _require_root()
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, *NAMESPACES, "true"], capture_output=True).returncode == 0:
        return "namespaces"
    if platform.machine() in jail.SECCOMP_ARCH:
        return "seccomp"
    raise SandboxUnavailable(f"no network namespaces and no seccomp filter for {platform.machine()}")


def _blocked_ancestor(path: Path) -> Path | None:
    """The outermost directory on `path` that other users cannot enter (no o+x), if any."""
    for directory in [*reversed(path.parents), path]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def _installs(python: str) -> set[Path]:
    """The prefixes the interpreter needs: its venv (if any) and the installation the venv's python links to."""
    return {Path(python).absolute().parent.parent, Path(python).resolve().parent.parent}


def _hidden_and_exposed(python: str) -> tuple[list[str], list[str]]:
    """Directories hidden in the sandbox, and the interpreter's installs that must be bound back in."""
    installs = _installs(python)
    hidden = {Path(h) for h in jail.HIDDEN} | {b for p in installs if (b := _blocked_ancestor(p))}
    exposed = {p for p in installs if any(p.is_relative_to(h) for h in hidden)}
    return sorted(map(str, hidden)), sorted(map(str, exposed))


def _environment(work: Path) -> dict[str, str]:
    """All a run sees of the environment: nothing inherited, so no token or key of the parent's."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONDONTWRITEBYTECODE": "1",  # for a python it starts without -I
        "OMP_NUM_THREADS": "1",  # BLAS thread pools count against `processes` and `memory_bytes`
        "OPENBLAS_NUM_THREADS": "1",
    }


def _read_capped(path: Path, limit: int) -> tuple[str, bool]:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


@dataclass(frozen=True)
class Sandbox:
    """How programs run: the limits, the isolation mode (detected when None) and the interpreter."""

    limits: Limits = field(default_factory=Limits)
    isolation: Isolation | None = None
    python: str = sys.executable

    def run(self, source: str, stdin: str = "", timeout: float = 10.0) -> RunResult:
        """Run `source` as a Python program, with `stdin` as its input, for at most `timeout` seconds."""
        _require_root()
        mode = self.isolation or detect_isolation()
        uid = UID_BASE + secrets.randbelow(UID_COUNT)
        # 0700 by mkdtemp, then 0711: the run's uid may pass through to its working directory, never list or
        # read the program, input and outputs kept beside it
        box = Path(tempfile.mkdtemp(prefix="distill-sandbox-"))
        try:
            box.chmod(0o711)
            work = box / "work"
            work.mkdir(mode=0o700)
            os.chown(work, uid, uid)
            (box / "main.py").write_text(source, encoding="utf-8")
            (box / "stdin").write_text(stdin, encoding="utf-8")
            spec = self._spec(mode, uid, box, timeout)
            return self._supervise(mode, spec, box, timeout)
        finally:
            shutil.rmtree(box, ignore_errors=True)

    def run_many(self, jobs: Sequence[Job], max_workers: int | None = None) -> list[RunResult]:
        """Run jobs concurrently, at most `max_workers` at a time (default: one per core); results in order."""
        # threads only wait on their child processes, so the GIL is no bottleneck
        with ThreadPoolExecutor(max_workers=max_workers or cores(), thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda job: self.run(job.source, job.stdin, job.timeout), jobs))

    def _spec(self, mode: Isolation, uid: int, box: Path, timeout: float) -> dict:
        hidden, exposed = _hidden_and_exposed(self.python)
        if mode == "seccomp" and any(_blocked_ancestor(p) for p in _installs(self.python)):
            raise SandboxUnavailable(
                f"{self.python} lives where an unprivileged uid cannot reach; set `python`"
            )
        return {
            "mode": mode,
            "uid": uid,
            "work": str(box / "work"),
            "program": str(box / "main.py"),
            "python": self.python,
            "timeout": timeout,
            "rlimits": self.limits.rlimits(),
            "disk_bytes": self.limits.disk_bytes,
            "hidden": hidden,
            "exposed": exposed,
        }

    def _supervise(self, mode: Isolation, spec: dict, box: Path, timeout: float) -> RunResult:
        prefix = [shutil.which("unshare") or "unshare", *NAMESPACES, "--"] if mode == "namespaces" else []
        with (
            open(box / "stdin", "rb") as stdin,
            open(box / "stdout", "wb") as stdout,
            open(box / "stderr", "wb") as stderr,
            open(box / "status", "w+b") as status,
        ):
            spec["status_fd"] = status.fileno()
            command = [*prefix, sys.executable, "-I", "-S", jail.__file__, json.dumps(spec)]
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(status.fileno(),),
                env=_environment(box / "work"),
                start_new_session=True,  # its own session and process group, killed whole if it hangs
            )
            try:
                proc.wait(timeout + SUPERVISOR_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # and --kill-child takes the namespace's pid 1 with it
                proc.wait()
                raise SandboxError(
                    f"the sandbox supervisor did not finish in {timeout + SUPERVISOR_GRACE} s"
                ) from None
            status.seek(0)
            reports = [json.loads(line) for line in status.read().splitlines() if line.strip()]
        return self._result(proc.returncode, reports, box)

    def _result(self, returncode: int, reports: list[dict], box: Path) -> RunResult:
        errors = [r["error"] for r in reports if "error" in r]
        if returncode != 0 or errors or not reports:
            stderr, _ = _read_capped(box / "stderr", 4000)
            raise SandboxError(
                f"sandbox failed (supervisor exit {returncode}): {'; '.join(errors) or stderr}"
            )
        report = reports[-1]
        stdout, cut_out = _read_capped(box / "stdout", self.limits.output_bytes)
        stderr, cut_err = _read_capped(box / "stderr", self.limits.output_bytes)
        status = report["status"]
        return RunResult(
            returncode=None if status is None else os.waitstatus_to_exitcode(status),
            timed_out=report["timed_out"],
            stdout=stdout,
            stderr=stderr,
            elapsed=report["elapsed"],
            truncated=cut_out or cut_err,
        )
