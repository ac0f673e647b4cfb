"""The code sandbox, with real processes: programs run and report, and hostile ones stay contained.

Each hostile program prints its uid first, so the test can check afterwards, from the host, that no process
of that uid is left. Limits are small so that the fork and memory bombs stay cheap on a 2-core machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from pipeline.filter.sandbox import Job, Limits, RunResult, Sandbox

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the sandbox runs programs as fresh uids: needs root"
)

SMALL = Limits(cpu_seconds=5, memory_bytes=256 << 20, processes=16, output_bytes=64 << 10)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(limits=SMALL)


def _seccomp_sandbox() -> Sandbox:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"mode seccomp needs an interpreter an unprivileged uid can run, like {SYSTEM_PYTHON}")
    return Sandbox(limits=SMALL, isolation="seccomp", python=SYSTEM_PYTHON)


@pytest.fixture(params=["namespaces", "seccomp"])
def any_mode(request: pytest.FixtureRequest, sandbox: Sandbox) -> Sandbox:
    """The sandbox in each isolation mode: what must hold in the fallback too."""
    return sandbox if request.param == "namespaces" else _seccomp_sandbox()


def run(sandbox: Sandbox, source: str, timeout: float = 10.0, stdin: str = "") -> RunResult:
    return sandbox.run(textwrap.dedent(source), stdin=stdin, timeout=timeout)


def processes_of(uid: int) -> list[int]:
    """Pids of the host's processes whose real uid is `uid`, zombies included."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # not a process, or one that just ended
        if any(line.split()[1] == str(uid) for line in status.splitlines() if line.startswith("Uid:")):
            pids.append(int(entry.name))
    return pids


def first_line_uid(result: RunResult) -> int:
    return int(result.stdout.splitlines()[0])


# --- running ------------------------------------------------------------------------------------------------


def test_a_program_reads_its_input_and_reports_its_output(sandbox):
    result = run(
        sandbox, "import sys\nprint(input()[::-1])\nprint('warning', file=sys.stderr)", stdin="abc\n"
    )
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert (result.stdout, result.stderr) == ("cba\n", "warning\n")
    assert 0 < result.elapsed < 10


@pytest.mark.parametrize(
    ("source", "returncode"),
    [
        ("import sys; sys.exit(3)", 3),
        ("raise ValueError('no')", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15),  # not pid 1: the signal lands
    ],
)
def test_exit_status_and_killing_signal_are_reported(sandbox, source, returncode):
    result = run(sandbox, source)
    assert result.returncode == returncode and not result.ok and not result.timed_out


def test_each_run_gets_a_fresh_directory_of_its_own_removed_afterwards(sandbox):
    source = "import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getuid(), os.getcwd(), sorted(os.listdir('.')))"
    first, second = run(sandbox, source), run(sandbox, source)
    (uid1, cwd1, *_), (uid2, cwd2, *_) = first.stdout.split(maxsplit=2), second.stdout.split(maxsplit=2)
    assert cwd1 != cwd2 and uid1 != uid2 and int(uid1) >= 0x70000000
    assert "['main.py', 'scratch.txt']" in first.stdout  # nothing of the previous run
    assert not Path(cwd1).exists() and not Path(cwd1).parent.exists()


def test_long_output_is_cut_to_the_limit(sandbox):
    result = run(sandbox, "print('x' * 100_000)")
    assert result.ok and result.truncated and len(result.stdout) == SMALL.output_bytes


# --- containment --------------------------------------------------------------------------------------------


def test_an_infinite_loop_is_killed_at_the_time_limit_with_every_process_it_started(any_mode):
    source = """
        import os, subprocess, sys
        print(os.getuid(), flush=True)
        sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
        subprocess.Popen(sleeper)  # a child in its process group
        subprocess.Popen(sleeper, start_new_session=True)  # one that left the group and session
        while True:
            pass
    """
    result = run(any_mode, source, timeout=1.5)
    assert result.timed_out and result.returncode is None and not result.ok
    assert 1.5 <= result.elapsed < 10
    assert processes_of(first_line_uid(result)) == []


def test_a_background_process_does_not_outlive_a_program_that_exits(any_mode):
    source = """
        import os, time
        print(os.getuid(), flush=True)
        if os.fork() == 0:  # a daemon: double fork, new session
            os.setsid()
            if os.fork() == 0:
                time.sleep(300)
            os._exit(0)
    """
    result = run(any_mode, source)
    assert result.ok
    assert processes_of(first_line_uid(result)) == []


def test_a_fork_bomb_stops_at_the_process_limit(any_mode):
    # each process sleeps once refused, so at most `processes` (16) idle pythons until the time limit
    source = """
        import os, time
        print(os.getuid(), flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                print("fork refused", flush=True)
                time.sleep(300)
    """
    result = run(any_mode, source, timeout=2)
    assert result.timed_out and "fork refused" in result.stdout
    assert processes_of(first_line_uid(result)) == []
    assert subprocess.run(["true"]).returncode == 0  # the host still forks


def test_a_memory_bomb_fails_inside_the_sandbox(sandbox):
    source = """
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))
    """
    result = run(sandbox, source)
    assert result.returncode == 1 and "MemoryError" in result.stderr


@pytest.mark.parametrize(
    ("limits", "source", "error"),
    [
        (Limits(cpu_seconds=1), "while True: pass", None),  # SIGXCPU long before the 10 s wall clock
        (Limits(file_bytes=1 << 20), "open('big', 'wb').write(bytes(2 << 20))", "File too large"),
        (Limits(open_files=16), "files = [open('main.py') for _ in range(100)]", "Too many open files"),
    ],
)
def test_resource_limits_hold_inside(limits, source, error):
    result = Sandbox(limits=limits).run(source, timeout=10)
    assert not result.ok and not result.timed_out
    assert (error in result.stderr) if error else result.returncode == -24


def test_no_network_even_to_a_server_listening_on_the_host_loopback(any_mode):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        source = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3)
                print("connected")
            except OSError as e:
                print("refused:", e)
        """
        result = run(any_mode, source)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever reached it
    assert result.ok and result.stdout.startswith("refused:"), result.stdout


def test_no_writes_outside_its_directory(sandbox):
    name = f"outside-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / name, REPO / name, Path("/dev/shm") / name]
    source = f"""
        for path in {[str(t) for t in targets]!r}:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as e:
                print("refused", path, e.strerror)
        open("inside.txt", "w").write("fine")
        print(open("inside.txt").read())
    """
    result = run(sandbox, source)
    assert result.ok and "wrote" not in result.stdout and result.stdout.endswith("fine\n")
    assert not any(target.exists() for target in targets)


def test_the_parents_environment_and_secrets_stay_out(any_mode, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-123")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")  # ignored twice: not passed on, and python -I
    source = """
        import os, sys
        print(dict(os.environ), sys.path, sys.flags.isolated)
        for path in ["/proc/self/environ", "/proc/1/environ", f"/proc/{os.getppid()}/environ"]:
            try:
                print(open(path).read())
            except OSError as e:
                print(path, e.strerror)
    """
    result = run(any_mode, source)
    assert result.ok and "HF_TOKEN" not in result.stdout and "secret-123" not in result.stdout + result.stderr
    assert "/nowhere" not in result.stdout and "PATH" in result.stdout


# --- batches ------------------------------------------------------------------------------------------------


def test_a_batch_runs_concurrently_but_never_more_than_max_workers_at_once(sandbox):
    source = "import time\nstart = time.time()\ntime.sleep(1)\nprint({index}, start, time.time())"
    jobs = [Job(source.format(index=i), timeout=20) for i in range(4)]
    results = sandbox.run_many(jobs, max_workers=2)
    rows = [result.stdout.split() for result in results]
    assert [int(row[0]) for row in rows] == [0, 1, 2, 3]  # results in job order
    spans = [(float(row[1]), float(row[2])) for row in rows]
    # how many programs were running at each start: the clock is the host's, the same for every run
    overlaps = [sum(start <= s < end for start, end in spans) for s, _ in spans]
    assert max(overlaps) == 2
