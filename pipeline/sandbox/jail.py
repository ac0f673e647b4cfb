"""The sandbox's supervisor: build the program's box, run the program in it as an unprivileged uid, report.

`box.py` starts it as `python -I -S jail.py SPEC_FILE` (a marshalled dict, in the run's 0700 folder: not in
the command line, which a program of the same uid could read in /proc/1/cmdline). By mode:

- "namespaces" (root): unshare new mount, pid, network, IPC, UTS and cgroup namespaces, then fork the box's
  init (pid 1), which builds a root by construction and runs the program as a fresh host uid;
- "userns" (any user): the same inside a new user namespace, where the caller's uid is mapped to one inner uid
  (no chown, no other uid exists); the program's exec drops the namespace's capabilities (its uid is not 0);
- "landlock" (neither works): no namespaces; Landlock lets the program read only the interpreter, the system
  libraries and its own directory and create nothing, and the jail kills every process it left.

The root by construction (namespace modes) is an empty tmpfs holding the interpreter's directories and the
system libraries bound read-only, /dev with null, zero and urandom bound from the host, a fresh /proc of the
new pid namespace (pids only), /sandbox (the program, read-only) and /tmp, a tmpfs of `disk_bytes`, the only
writable place; pivot_root makes it `/` and the host's tree is detached. Every mode then joins a new session
keyring, sets no_new_privs and installs the seccomp filter of seccomp.py before exec.

The jail writes marshalled dicts to the status fd: `{"status": wait status or None, "timed_out", "elapsed"}`, or
`{"error": ...}` when the box could not be built. Standard library only, nothing from `pipeline`: it runs with -S,
and imports as little as it can (no json, re or typing: it starts once per program).
"""

from __future__ import annotations

import ctypes
import fcntl
import marshal
import os
import resource
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
KEYCTL_JOIN_SESSION_KEYRING = 1
INNER_UID = 1000
"""The program's uid inside a user namespace (mode "userns"): the one uid mapped, to the caller's."""
DEVICES = ("null", "zero", "urandom")
CHANNEL_FDS = (3, 4)
"""Where the program finds the request and reply pipes of the harness, when there are any."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = lambda v: v.encode() if v is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data) or None), f"mount {target}")


def _prctl(option: int, arg2: int, arg3: int | None = None) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def _syscall(name: str, *args: object) -> int:
    return _check(_libc.syscall(_sibling("seccomp").SYSCALLS[os.uname().machine][name], *args), name)


# --- the box's namespaces (modes "namespaces" and "userns") -------------------------------------------------


def _enter_namespaces(userns: bool) -> None:
    """New namespaces for this process; with `userns` a user namespace mapping only our own uid and gid."""
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(NAMESPACES | (CLONE_NEWUSER if userns else 0)), "unshare")
    if userns:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")  # required before an unprivileged gid_map
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{INNER_UID} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{INNER_UID} {gid} 1")
    _check(_libc.sethostname(b"sandbox", 7), "sethostname")  # the host's name stays outside too


def _locked_flags(path: str) -> int:
    """The flags a read-only remount of a bind of `path` must restate (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = MS_NOSUID | MS_NODEV | MS_RDONLY
    for st, ms in ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_RELATIME, MS_RELATIME)):
        flags |= ms if f & st else 0
    return flags | (MS_NODIRATIME if f & os.ST_NODIRATIME else 0)


def _bind(source: str, target: str, read_only: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | _locked_flags(source))


def _populate(root: str, spec: dict) -> None:
    """The box's tree under `root` (a fresh tmpfs): /tmp, interpreter, libraries, devices, /proc, /sandbox."""
    # /tmp first: a bind that lies under the host's /tmp (a venv in a CI container's /tmp) then lands inside the
    # box's own tmpfs, which shows the program that one directory chain and nothing else of the host's /tmp
    os.makedirs(root + "/tmp")
    owner = spec["uid"] if spec["mode"] == "namespaces" else INNER_UID
    options = f"size={spec['disk_bytes']},nr_inodes={spec['inodes']},mode=700,uid={owner},gid={owner}"
    _mount("sandbox-tmp", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)
    for path in spec["binds"]:
        os.makedirs(root + path, exist_ok=True)
        _bind(path, root + path, read_only=True)
    for link, target in spec["links"].items():
        os.symlink(target, root + link)
    os.makedirs(root + "/dev")
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        _bind(f"/dev/{name}", f"{root}/dev/{name}", read_only=False)
    os.makedirs(root + "/proc")
    try:
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid,hidepid=2")
    except OSError:  # kernels before 5.8 know no subset=pid
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    _place_files(root + "/sandbox", spec)


def _place_files(directory: str, spec: dict) -> None:
    """The run's files (program, harness) copied in, 0400 and owned by the program's uid."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, source in spec["files"].items():
        with open(source, "rb") as src:
            data = src.read()
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        os.write(fd, data)
        os.close(fd)
        if spec["mode"] != "userns" and spec["uid"] is not None:  # in a user namespace we already own them
            os.chown(path, spec["uid"], spec["uid"])
    if spec["mode"] != "userns" and spec["uid"] is not None:
        os.chown(directory, spec["uid"], spec["uid"])


def _build_root(spec: dict) -> None:
    """Make the box's tree `/`; nothing of the host's tree stays reachable."""
    root = spec["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing of ours propagates back to the host
    _mount("sandbox-root", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,nr_inodes=4096,mode=755")
    _populate(root, spec)
    os.makedirs(root + "/.old")
    _syscall("pivot_root", root.encode(), (root + "/.old").encode())
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount /.old")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


# --- the program's restrictions (every mode) ----------------------------------------------------------------


def _become(spec: dict) -> None:
    """Drop root for good (modes run as root); in a user namespace the exec of a non-zero uid drops the caps."""
    uid = spec["uid"]
    if uid is not None and spec["mode"] != "userns":
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.umask(0o077)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries give nothing back, and Landlock/seccomp need it


def _limit(spec: dict) -> None:
    """The program's rlimits, on this process (and so on what it forks)."""
    for name, (soft, hard) in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _sibling(name: str) -> object:
    """landlock.py or seccomp.py, beside this file (`python -I` puts no script directory on sys.path)."""
    if name not in sys.modules:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        __import__(name)
    return sys.modules[name]


def _exec_program(spec: dict, fds: dict[str, int]) -> None:
    """In the forked child: channel fds to 3 and 4, restrictions, limits, exec. Never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the mask survives exec; the jail blocked SIGCHLD
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # mode landlock: the jail's death takes the program along
        for target, name in zip(CHANNEL_FDS, ("requests", "replies"), strict=True):
            if name in fds:
                os.dup2(fds[name], target)
        os.setsid()
        _become(spec)
        os.chdir(spec["cwd"])
        _limit(spec)
        if spec["mode"] == "landlock":
            _sibling("landlock").restrict(spec["binds"], spec["cwd"])
        _sibling("seccomp").install(landlock=spec["mode"] == "landlock")
        os.execve(spec["python"], [spec["python"], "-I", "-S", "-B", *spec["argv"]], os.environ)
    except BaseException as e:
        os.write(fds["status"], marshal.dumps({"error": f"cannot start the program: {e}"}))
    os._exit(126)


# --- supervising ----------------------------------------------------------------------------------------------


def _wait(pid: int, timeout: float) -> int | None:
    """The program's wait status, or None when the wall-clock limit passes first. Reaps orphans too."""
    deadline = time.monotonic() + timeout
    while True:
        while True:
            try:
                reaped, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if reaped == pid:
                return status
            if reaped == 0:
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0 or signal.sigtimedwait([signal.SIGCHLD], remaining) is None:
            return None


def _descendants() -> list[int]:
    """Pids whose parent is this process (the subreaper of every process the program left)."""
    me, pids = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if ppid.decode() == me:
            pids.append(int(entry))
    return pids


def _end_all() -> None:
    """Mode "landlock": kill every process of the run. Orphans come to the jail (subreaper); killing its
    children until none is left also gets those forked meanwhile (their parents' death hands them to us)."""
    while True:
        for pid in _descendants():
            try:  # noqa: SIM105 (contextlib: one more import per program)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.001)


def _supervise(spec: dict, fds: dict[str, int]) -> None:
    """Run the program, wait for it or the limit, write the report. In a pid namespace this is pid 1: when it
    returns the kernel kills every process the program left, however it daemonised."""
    _prctl(PR_SET_DUMPABLE, 0)  # the program (same uid in userns) cannot ptrace or read the jail's fds
    _syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, None)  # a fresh session keyring, no key of the grader's
    if spec["mode"] == "landlock":
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _place_files(spec["cwd"], spec)
    else:
        _build_root(spec)
        # The box's init (this process, pid 1) is the program's own uid in mode userns: seccomp refuses the
        # program any signal to it and any change of its limits; it also holds no more than the program may.
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # pid 1 with no handler: no signal from inside lands
        _limit(spec)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # before fork, so no exit goes unseen
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _exec_program(spec, fds)
    for name in ("requests", "replies"):
        if name in fds:
            os.close(fds[name])  # the grader sees EOF when the program's copies close
    status = _wait(pid, spec["timeout"])
    elapsed = time.monotonic() - start
    if spec["mode"] == "landlock":
        _end_all()
    report = {"status": status, "timed_out": status is None, "elapsed": round(elapsed, 4)}
    os.write(fds["status"], marshal.dumps(report))


def _high_fds(spec: dict) -> dict[str, int]:
    """The inherited fds moved above 64, so placing the channel at 3 and 4 in the program clobbers none."""
    fds = {name: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for name, fd in spec["fds"].items()}
    for fd in spec["fds"].values():
        os.close(fd)
    return fds


def main(spec: dict) -> None:
    fds = _high_fds(spec)
    _sibling("seccomp")  # imported while the host's files are still readable by us
    if spec["mode"] == "landlock":
        _sibling("landlock")
    try:
        if spec["mode"] != "landlock":
            _enter_namespaces(userns=spec["mode"] == "userns")
            init = os.fork()  # the first child in the new pid namespace is its pid 1
            if init:
                for name in ("requests", "replies"):
                    if name in fds:
                        os.close(fds[name])
                _, status = os.waitpid(init, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        _supervise(spec, fds)
    except BaseException as e:
        os.write(fds["status"], marshal.dumps({"error": f"{type(e).__name__}: {e}"}))
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as spec_file:
        main(marshal.load(spec_file))
