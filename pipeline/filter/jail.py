"""The sandbox's supervisor, run as root inside the sandbox: lock it down, run the program as the run's uid, report.

`sandbox.py` starts it as `python -I -S jail.py SPEC_JSON`, under `unshare --net --pid --mount --ipc --fork`
(mode "namespaces", where it is pid 1 of a fresh pid namespace) or directly (mode "seccomp"). It

1. (namespaces) remounts every mount read-only, hides HIDDEN behind empty tmpfs (binding the interpreter's
   install back in when it lives there) and mounts a tmpfs of `disk_bytes`, owned by the run's uid, on the
   working directory, the one writable place;
2. forks the program: the child drops to the run's uid (no groups, no capabilities, no_new_privs; in mode
   "seccomp" also a filter that makes socket(2) fail), sets the resource limits and execs `python -I main.py`;
3. waits up to the wall-clock limit, then ends every process of the run. In "namespaces" it just exits: the
   kernel kills everything in a pid namespace whose init exits, however the program daemonised. In "seccomp"
   it kill(-1)s as the run's uid, which reaches exactly that uid's processes, and reaps them (it is their
   subreaper);
4. writes one JSON line to the status fd: `{"status": wait status or null, "timed_out", "elapsed"}`, or
   `{"error": ...}` when the program could not be started.

The user program is never pid 1: init ignores signals it has no handler for (SIGXCPU, SIGTERM, its own
os.kill), and would have to reap orphans. Standard library only, nothing from `pipeline`: it runs with -S.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import resource
import shutil
import signal
import struct
import sys
import time
from typing import Any

HIDDEN = ("/home", "/root", "/run")
"""Behind an empty tmpfs in the sandbox: home directories (tokens, keys) and /run (host daemons' sockets)."""

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_RELATIME = 1024, 2048, 4096, 1 << 21
# A read-only remount replaces a mount's flags: restate the ones it had (as mountinfo spells them).
_MOUNT_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 22, 2, 36, 38
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
"""Machine -> (AUDIT_ARCH value, socket(2) number, io_uring_setup(2) number)."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _mount(
    source: str | bytes | None, target: str | bytes, fstype: str | None, flags: int, data: str = ""
) -> None:
    def c(value: str | bytes | None) -> bytes | None:
        return value.encode() if isinstance(value, str) else value

    if _libc.mount(c(source), c(target), c(fstype), flags, c(data) or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target!r}: {os.strerror(err)}")


def _prctl(option: int, arg2: int, arg3: int | None = None) -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# --- the filesystem (mode "namespaces": this mount namespace is private, nothing here reaches the host) -----


def _remount_all_read_only() -> None:
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        # mountinfo escapes space, tab, newline and backslash in paths as \ooo
        target = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for option in fields[5].decode().split(","):
            flags |= _MOUNT_OPTIONS.get(option, 0)
        _mount(None, target, None, flags)


def _hide(hidden: list[str], exposed: list[str]) -> None:
    """Empty read-only tmpfs over `hidden` (parents first), with the `exposed` directories bound back in."""
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in exposed}
    for directory in hidden:
        if os.path.isdir(directory):
            _mount("sandbox", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for path, fd in fds.items():
        os.makedirs(path, exist_ok=True)  # a mount point in the empty tmpfs, where the real directory was
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(fd)
    for directory in hidden:
        if os.path.ismount(directory):
            _mount(None, directory, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _lock_filesystem(spec: dict[str, Any]) -> None:
    _remount_all_read_only()
    _hide(spec["hidden"], spec["exposed"])
    uid, disk = spec["uid"], spec["disk_bytes"]
    options = f"size={disk},nr_inodes=4096,mode=700,uid={uid},gid={uid}"
    _mount("sandbox", spec["work"], "tmpfs", MS_NOSUID | MS_NODEV, options)


# --- the program --------------------------------------------------------------------------------------------


def _refuse_sockets() -> None:
    """A seccomp filter, inherited and irrevocable: socket(2) and io_uring_setup(2) fail with EACCES, and a
    syscall of another ABI (x32, i386) kills, so it cannot be sidestepped."""
    arch, socket_nr, io_uring_nr = SECCOMP_ARCH[platform.machine()]
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    program = [  # (code, jump if true, jump if false, k); jumps skip that many instructions
        (load, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, 6, arch),
        (load, 0, 0, 0),  # seccomp_data.nr
        (jge, 4, 0, 0x40000000),  # x32 syscall numbers
        (jeq, 2, 0, socket_nr),
        (jeq, 1, 0, io_uring_nr),
        (ret, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
        (ret, 0, 0, 0x00050000 | errno.EACCES),  # SECCOMP_RET_ERRNO
        (ret, 0, 0, 0x80000000),  # SECCOMP_RET_KILL_PROCESS
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    fprog = _SockFprog(len(program), ctypes.addressof(code))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def _become(uid: int, seccomp: bool) -> None:
    """Drop root for good: the run's uid and gid, no supplementary groups; capabilities go with uid 0."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.umask(0o077)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount) cannot give anything back
    if seccomp:
        _refuse_sockets()


def _exec_program(spec: dict[str, Any], status_fd: int) -> None:
    """In the forked child: become the run's uid, set the limits, exec the program. Never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the mask survives exec; the jail blocked SIGCHLD
        _become(spec["uid"], seccomp=spec["mode"] == "seccomp")
        os.chdir(spec["work"])
        for name, (soft, hard) in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        python = spec["python"]
        os.execve(python, [python, "-I", "-B", "main.py"], os.environ)
    except BaseException as e:
        os.write(status_fd, json.dumps({"error": f"cannot start the program: {e}"}).encode() + b"\n")
    os._exit(126)


def _wait(pid: int, timeout: float) -> int | None:
    """The program's wait status, or None when the wall-clock limit passes first. Reaps orphans too (pid 1)."""
    deadline = time.monotonic() + timeout
    while True:
        while True:
            reaped, status = os.waitpid(-1, os.WNOHANG)
            if reaped == pid:
                return status
            if reaped == 0:
                break
        remaining = deadline - time.monotonic()
        if remaining <= 0 or signal.sigtimedwait([signal.SIGCHLD], remaining) is None:
            return None


def _end_all(uid: int) -> None:
    """Kill every process of the run and reap them all (mode "seccomp"; in a pid namespace the kernel does it).

    kill(-1) from a helper running as `uid` reaches exactly that uid's processes, all at once: the kernel walks
    the process list under the lock fork takes, and a process being killed can no longer fork. The jail is the
    subreaper of all of them, so once `waitpid` has no child left, none is left at all.
    """
    helper = os.fork()
    if helper == 0:
        os.setresuid(uid, uid, uid)
        os.kill(-1, signal.SIGKILL)
        os._exit(0)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main(spec: dict[str, Any]) -> None:
    status_fd = spec["status_fd"]
    os.set_inheritable(status_fd, False)  # the program must not inherit it
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the program become the jail's children, not init's
    if spec["mode"] == "namespaces":
        _lock_filesystem(spec)
    program = os.path.join(spec["work"], "main.py")
    shutil.copyfile(spec["program"], program)
    os.chown(program, spec["uid"], spec["uid"])
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # before fork, so no exit goes unseen
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _exec_program(spec, status_fd)
    status = _wait(pid, spec["timeout"])
    elapsed = time.monotonic() - start
    if spec["mode"] == "seccomp":
        _end_all(spec["uid"])
    report = {"status": status, "timed_out": status is None, "elapsed": round(elapsed, 4)}
    os.write(status_fd, json.dumps(report).encode() + b"\n")
    # mode "namespaces": returning ends pid 1, and with it every process the program left behind


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
