"""The code sandbox, with real processes, in every mode this machine runs: programs run and report, hostile
ones stay in their box, and the host is checked from outside afterwards.

Processes a program leaves are found by a marker in their command line, whatever uid they run as. Limits are
small so that the fork and memory bombs stay cheap on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.sandbox.box import Job, Limits, RunResult, Sandbox, SandboxUnavailable
from tests.sandbox_user import SandboxUser

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3.11"
SMALL = Limits(cpu_seconds=5, memory_bytes=256 << 20, processes=16, output_bytes=64 << 10, disk_bytes=8 << 20)


def _sandbox(mode: str) -> Sandbox:
    # mode landlock as root runs a fresh uid, which cannot enter /root where the venv's python lives
    python = SYSTEM_PYTHON if mode == "landlock" else Sandbox().python
    sandbox = Sandbox(limits=SMALL, mode=mode, python=python)
    try:
        sandbox.resolved_mode()
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    return sandbox


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return _sandbox("auto")


@pytest.fixture(scope="module")
def user():
    """An unprivileged test user (created once; root only)."""
    if os.geteuid() != 0:
        pytest.skip("creating a test user needs root")
    created = SandboxUser.create()
    yield created
    created.remove()


@pytest.fixture(scope="module", params=["namespaces", "userns", "landlock", "landlock-user"])
def any_mode(request: pytest.FixtureRequest) -> Sandbox:
    """Every mode this machine runs: namespaces and landlock as root, userns and landlock as a plain user."""
    if request.param == "userns" or request.param == "landlock-user":
        mode = request.param.removesuffix("-user")
        return request.getfixturevalue("user").sandbox(mode, SMALL)
    return _sandbox(request.param)


@pytest.fixture(scope="module")
def tmp_venv() -> Path:
    """A real venv whose interpreter lies under /tmp, as in CI containers and clones made in /tmp; world-readable,
    so the test user can run it too."""
    folder = Path(tempfile.mkdtemp(prefix="distill-venv-", dir="/tmp"))
    folder.chmod(0o755)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    yield folder / "venv"
    shutil.rmtree(folder)


@pytest.fixture(scope="module", params=["namespaces", "userns", "landlock", "landlock-user"])
def tmp_venv_mode(request: pytest.FixtureRequest, tmp_venv: Path) -> Sandbox:
    """Every mode, each running the venv under /tmp."""
    python = str(tmp_venv / "bin" / "python")
    if request.param == "userns" or request.param == "landlock-user":
        mode = request.param.removesuffix("-user")
        return request.getfixturevalue("user").sandbox(mode, SMALL, python=python)
    sandbox = Sandbox(limits=SMALL, mode=request.param, python=python)
    try:
        sandbox.resolved_mode()
    except SandboxUnavailable as e:
        pytest.fail(f"a venv under /tmp must work in mode {request.param}: {e}")
    return sandbox


def run(sandbox: Sandbox, source: str, timeout: float = 10.0, stdin: str = "") -> RunResult:
    return sandbox.run(textwrap.dedent(source), stdin=stdin, timeout=timeout)


def processes_with(marker: str) -> list[int]:
    """Pids of the host's processes whose command line holds `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if marker.encode() in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


# --- running ------------------------------------------------------------------------------------------------


def test_a_program_reads_its_input_and_reports_its_output(any_mode):
    result = run(
        any_mode, "import sys\nprint(input()[::-1])\nprint('warning', file=sys.stderr)", stdin="abc\n"
    )
    assert result.ok and result.returncode == 0 and not result.timed_out
    assert (result.stdout, result.stderr, result.mode) == ("cba\n", "warning\n", any_mode.mode)


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


def test_the_box_holds_the_interpreter_its_directory_and_nothing_else_of_the_host(sandbox):
    hidden = [REPO / "README.md", REPO.parent / "shared", "/etc/passwd", "/home", "/var", "/run"]
    source = f"""
        import os
        open('scratch.txt', 'w').write('x')
        print([os.path.exists(p) for p in {[str(p) for p in hidden]!r}])
        print(sorted(os.listdir('/')), sorted(os.listdir('.')), sorted(os.listdir('/dev')))
    """
    result = run(sandbox, source)
    assert result.ok, result.stderr
    seen, listing = result.stdout.splitlines()
    assert seen == str([False] * len(hidden))
    # the interpreter's own directories (here a venv under /work/main and a python under /root) and no more; a
    # fresh /tmp: nothing of another run, only the directory chain of an interpreter that lies under /tmp itself
    from pipeline.sandbox.contents import box_contents

    chains = {
        Path(b).relative_to("/tmp").parts[0] for b in box_contents(sandbox.python)[0] if b.startswith("/tmp/")
    }
    assert listing.endswith(f"{sorted({'scratch.txt'} | chains)!r} ['null', 'urandom', 'zero']")


def test_long_output_is_cut_to_the_limit(sandbox):
    result = run(sandbox, "print('x' * 100_000)")
    assert result.ok and result.truncated and len(result.stdout) == SMALL.output_bytes


# --- containment --------------------------------------------------------------------------------------------


def test_an_infinite_loop_is_killed_at_the_time_limit_with_every_process_it_started(any_mode):
    marker = f"sleeper-{uuid.uuid4().hex}"
    source = f"""
        import subprocess, sys
        sleeper = [sys.executable, "-c", "import time; time.sleep(300)", "{marker}"]
        subprocess.Popen(sleeper)  # a child in its process group
        subprocess.Popen(sleeper, start_new_session=True)  # one that left the group and session
        while True:
            pass
    """
    result = run(any_mode, source, timeout=1.5)
    assert result.timed_out and result.returncode is None and not result.ok
    assert processes_with(marker) == []


def test_a_background_process_does_not_outlive_a_program_that_exits(any_mode):
    marker = f"daemon-{uuid.uuid4().hex}"
    source = f"""
        import os, sys
        if os.fork() == 0:  # a daemon: double fork, new session
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", "{marker}"])
            os._exit(0)
    """
    assert run(any_mode, source).ok
    assert processes_with(marker) == []


def test_a_fork_bomb_stops_at_the_process_limit(any_mode):
    source = """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                print("fork refused", flush=True)
                time.sleep(300)
    """
    result = run(any_mode, source, timeout=2)
    assert result.timed_out and "fork refused" in result.stdout
    assert subprocess.run(["true"]).returncode == 0  # the host still forks


def test_a_memory_bomb_fails_inside_the_sandbox(sandbox):
    result = run(sandbox, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))")
    assert result.returncode == 1 and "MemoryError" in result.stderr


@pytest.mark.parametrize(
    ("limits", "source", "error"),
    [
        (Limits(cpu_seconds=1), "while True: pass", None),  # SIGXCPU long before the 10 s wall clock
        (Limits(file_bytes=1 << 20), "open('/tmp/big', 'wb').write(bytes(2 << 20))", "File too large"),
        (Limits(open_files=16), "files = [open('/dev/null') for _ in range(100)]", "Too many open files"),
        (
            Limits(disk_bytes=1 << 20),
            "[open(f'/tmp/{i}', 'wb').write(bytes(512 << 10)) for i in range(4)]",
            "No space",
        ),
    ],
)
def test_resource_limits_hold_inside(limits, source, error):
    result = Sandbox(limits=limits).run(source, timeout=10)
    assert not result.ok and not result.timed_out
    assert (error in result.stderr) if error else result.returncode == -24


def test_memory_outside_the_address_space_limit_is_refused(any_mode):
    source = """
        import ctypes, os
        for attempt in ("memfd", "shm"):
            try:
                if attempt == "memfd":
                    fd = os.memfd_create("x")
                    os.ftruncate(fd, 256 << 20)
                    os.write(fd, b"x" * (1 << 20))
                else:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.shmget(0, 256 << 20, 0o1600) < 0:
                        raise OSError(ctypes.get_errno(), "shmget")
                print("got", attempt)
            except OSError as e:
                print("refused", attempt, e.errno)
    """
    result = run(any_mode, source)
    assert result.ok and "got" not in result.stdout and result.stdout.count("refused") == 2, result.stdout


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
            server.accept()
    assert result.ok and result.stdout.startswith("refused:"), result.stdout


def test_host_files_sockets_fifos_processes_and_keys_stay_out_of_reach(any_mode):
    host = Path("/tmp") / f"distill-host-{uuid.uuid4().hex}"
    marker = f"host-process-{uuid.uuid4().hex}"
    host.mkdir(mode=0o755)
    try:
        secret = host / "secret.txt"
        secret.write_text("host secret")
        secret.chmod(0o644)
        fifo = host / "fifo"
        os.mkfifo(fifo, 0o666)
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(host / "sock"))
        unix.listen()
        os.chmod(host / "sock", 0o777)
        source = f"""
            import ctypes, os, socket
            def attempt(name, action):
                try:
                    action()
                    print("reached", name)
                except OSError as e:
                    print("refused", name)
            for path in [{str(secret)!r}, {str(REPO / "README.md")!r}, "/etc/passwd", "/work/shared/data/SOURCES.md"]:
                attempt(path, lambda: open(path).read())
            attempt("fifo", lambda: os.open({str(fifo)!r}, os.O_WRONLY | os.O_NONBLOCK))
            attempt("socket", lambda: socket.socket(socket.AF_UNIX).connect({str(host / "sock")!r}))
            def cmdlines():
                lines = [open(f"/proc/{{p}}/cmdline").read() for p in os.listdir("/proc") if p.isdigit()]
                if not any({marker!r} in line for line in lines):
                    raise OSError("no host process in sight")
            attempt("cmdlines", cmdlines)
            libc = ctypes.CDLL(None, use_errno=True)
            def key():  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING), then add_key to it
                if libc.syscall(250, 0, -3, 0) < 0 or libc.syscall(248, b"user", b"x", b"y", 1, -3) < 0:
                    raise OSError(ctypes.get_errno(), "keys")
            attempt("keyring", key)
        """
        unix.settimeout(0.2)
        host_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
        keys_before = Path("/proc/keys").read_text() if Path("/proc/keys").exists() else ""
        result = run(any_mode, source)
        host_process.kill()
        host_process.wait()
        with pytest.raises(TimeoutError):
            unix.accept()
        unix.close()
    finally:
        for child in host.iterdir():
            child.unlink()
        host.rmdir()
    assert result.ok, result.stderr
    assert "reached" not in result.stdout and result.stdout.count("refused") == 8, result.stdout
    assert (Path("/proc/keys").read_text() if Path("/proc/keys").exists() else "") == keys_before


def test_no_writes_outside_its_directory(any_mode):
    name = f"outside-{uuid.uuid4().hex}"
    targets = [Path(d) / name for d in ("/tmp", "/dev/shm", "/var/tmp", REPO, Path.cwd())]
    source = f"""
        import os, shutil, sys
        for path in {[str(t) for t in targets]!r}:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as e:
                print("refused", path)
        try:  # a setuid copy of python for later
            shutil.copy(sys.executable, "/tmp/{name}-python")
            os.chmod("/tmp/{name}-python", 0o4755)
        except OSError:
            pass
    """
    result = run(any_mode, source)
    assert result.ok, result.stderr
    # the box's own /tmp may take the write; the host's never sees it
    assert [line for line in result.stdout.splitlines() if "wrote" in line and "/tmp/" not in line] == []
    assert not any(t.exists() for t in targets) and not Path(f"/tmp/{name}-python").exists()


def test_the_parents_environment_and_secrets_stay_out(any_mode, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-123")
    source = """
        import os
        print(dict(os.environ))
        for path in ["/proc/self/environ", "/proc/1/environ"]:
            try:
                print(open(path).read())
            except OSError as e:
                print(path, e.strerror)
    """
    result = run(any_mode, source)
    assert result.ok and "secret-123" not in result.stdout + result.stderr and "PATH" in result.stdout


def test_a_forced_mode_that_cannot_work_is_one_clear_error():
    sandbox = Sandbox(mode="landlock", python="/root/.pyenv/nowhere/bin/python")
    if os.geteuid() != 0:
        pytest.skip("as root: the run's uid cannot enter /root")
    with pytest.raises(SandboxUnavailable, match="landlock: "):
        sandbox.run("print(1)")


# --- batches ------------------------------------------------------------------------------------------------


def test_a_batch_runs_concurrently_but_never_more_than_max_workers_at_once(sandbox):
    source = "import time\nstart = time.time()\ntime.sleep(1)\nprint({index}, start, time.time())"
    jobs = [Job(source.format(index=i), timeout=20) for i in range(4)]
    results = sandbox.run_many(jobs, max_workers=2)
    rows = [result.stdout.split() for result in results]
    assert [int(row[0]) for row in rows] == [0, 1, 2, 3]
    spans = [(float(row[1]), float(row[2])) for row in rows]
    overlaps = [sum(start <= s < end for start, end in spans) for s, _ in spans]
    assert max(overlaps) == 2


def test_mode_landlock_cannot_touch_the_users_own_files_or_processes(user):
    """What Landlock does not cover, seccomp refuses: the metadata of files the user owns, and the user's other
    processes (there is no pid namespace to hide them)."""
    folder = Path(tempfile.mkdtemp(prefix="distill-owned-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        owned = folder / "owned.txt"
        owned.write_text("mine")
        owned.chmod(0o600)
        os.chown(owned, user.uid, user.gid)
        before = owned.stat()
        other = subprocess.Popen(["sleep", "60"], user=user.uid, group=user.gid, extra_groups=[])
        niceness = os.getpriority(os.PRIO_PROCESS, 0)  # the test's own (pytest may run under `nice`)
        source = f"""
            import os, resource
            for name, action in [
                ("chmod", lambda: os.chmod({str(owned)!r}, 0o666)),
                ("utime", lambda: os.utime({str(owned)!r}, (0, 0))),
                ("xattr", lambda: os.setxattr({str(owned)!r}, "user.x", b"1")),
                ("nice", lambda: os.setpriority(os.PRIO_PROCESS, {other.pid}, 19)),
                ("limit", lambda: resource.prlimit({other.pid}, resource.RLIMIT_NOFILE, (3, 3))),
                ("kill", lambda: os.kill({other.pid}, 9)),
            ]:
                try:
                    action()
                    print("did", name)
                except OSError:
                    print("refused", name)
        """
        result = user.sandbox("landlock", SMALL).run(textwrap.dedent(source))
        alive = other.poll() is None
        nice = int(Path(f"/proc/{other.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        other.kill()
        other.wait()
        after = owned.stat()
    finally:
        shutil.rmtree(folder)
    assert result.ok and "did" not in result.stdout and result.stdout.count("refused") == 6, result.stdout
    assert (after.st_mode, after.st_mtime) == (before.st_mode, before.st_mtime) and alive and nice == niceness


def test_a_concurrent_run_cannot_find_another_runs_program_or_output(any_mode):
    marker = f"other-run-{uuid.uuid4().hex}"
    other = f"import time\nprint({marker!r}, flush=True)\ntime.sleep(3)\n# {marker}\n"
    spy = f"""
        import glob, os
        found = []
        for pattern in ["/tmp/distill-sandbox-*/*", "/tmp/*/*", "/proc/*/cwd/*", "/proc/*/fd/*"]:
            for path in glob.glob(pattern):
                try:
                    if {marker!r} in open(path, errors="replace").read():
                        found.append(path)
                except OSError:
                    pass
        print("found", found)
    """
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(any_mode.run, other, "", 10.0)
        time.sleep(1.0)  # the other run is sleeping, its main.py and stdout in place
        result = run(any_mode, spy)
        assert first.result().ok
    assert result.ok and result.stdout.strip() == "found []", result.stdout + result.stderr


def test_an_interpreter_in_a_venv_under_tmp_works_in_every_mode_and_the_box_tmp_stays_its_own(
    tmp_venv_mode, tmp_venv
):
    host_file = Path("/tmp") / f"distill-host-{uuid.uuid4().hex}"
    host_file.write_text("host")
    name = f"box-{uuid.uuid4().hex}"
    source = f"""
        import os, sys
        print([p for p in sys.path if p.startswith("/tmp/")])
        try:
            readable = open({str(host_file)!r}).read() == "host"
        except OSError:
            readable = False
        print(readable, sorted(os.listdir("/tmp")) if {tmp_venv_mode.mode != "landlock"} else [])
        try:
            open("/tmp/{name}", "w").write("x")
            print("wrote")
        except OSError:
            print("refused")
    """
    try:
        result = run(tmp_venv_mode, source)
    finally:
        host_file.unlink()
    assert result.ok, result.stderr
    on_path, seen, wrote = result.stdout.splitlines()
    site_packages = str(next(tmp_venv.glob("lib/python3*/site-packages")))
    assert on_path == str([site_packages]) and result.mode == tmp_venv_mode.mode  # the venv's own packages
    if tmp_venv_mode.mode == "landlock":  # the host's tree, read-only where listed: nothing written anywhere
        assert wrote == "refused" and seen == "False []"
    else:  # its own /tmp: the venv's directory chain, nothing else of the host's /tmp; its writes stay inside
        assert wrote == "wrote" and seen == f"False {[tmp_venv.parent.name]!r}"
    assert not (Path("/tmp") / name).exists()


def test_the_box_init_is_out_of_the_programs_reach_and_holds_no_more_than_it(any_mode):
    """Mode userns runs the box's init (pid 1) as the program's own uid: no signal reaches it, its limits
    cannot be changed, and its own limits are the program's. Other modes: pid 1 is another uid or not ours."""
    source = """
        import ctypes, os, resource, signal
        for name, action in [
            ("kill", lambda: os.kill(1, signal.SIGKILL)),
            ("interrupt", lambda: os.kill(1, signal.SIGINT)),
            ("terminate", lambda: os.kill(1, signal.SIGTERM)),
            ("limit", lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (3, 3))),
            ("nice", lambda: os.setpriority(os.PRIO_PROCESS, 1, 19)),
            ("nice-user", lambda: os.setpriority(os.PRIO_USER, 0, 19)),
            ("affinity", lambda: os.sched_setaffinity(1, {0})),
            ("pidfd", lambda: os.pidfd_open(1)),
        ]:
            try:
                action()
                print("did", name)
            except OSError:
                print("refused", name)
        resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))  # its own: allowed
        try:
            print(open("/proc/1/limits").read() == open("/proc/self/limits").read())
        except OSError:
            print("unreadable")
    """
    result = run(any_mode, source)
    assert result.ok, result.stderr
    *attempts, limits = result.stdout.splitlines()
    assert [a for a in attempts if not a.startswith("refused")] == [], result.stdout
    assert limits in ("True", "unreadable")  # userns: readable, and the same; other modes: not the program's
