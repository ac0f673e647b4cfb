"""The seccomp filter every sandboxed program runs under, in every mode: the system calls it may not make.

    install(landlock=False)     # in the program's process, after no_new_privs, before exec; irrevocable

Refused with EPERM (`DENIED`): memory the address-space limit does not count (memfd_create, memfd_secret, SysV
shared memory, message queues, io_uring, userfaultfd), the kernel keyrings (keyctl, add_key, request_key), new
namespaces and mounts (unshare, setns, clone with namespace flags; clone3 gets ENOSYS so libc falls back to clone,
whose flags a classic BPF filter can read), ptrace, perf_event_open, bpf, syslog and pidfd_send_signal. Refused
with EPERM by argument (`TARGETED`): any signal to pid 1 (the box's init; in mode userns it has the program's
uid), and the priority, affinity or limits of any process but the caller's own. Mode "landlock", which has
no namespaces, also refuses sockets and changing any file's mode, owner, times or xattrs (Landlock covers none). A system call of another ABI (x32, i386) kills the process, so none of this can
be sidestepped. Standard library only: the jail imports it under `python -S`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""

# Machine -> syscall numbers the filter needs (AUDIT_ARCH first).
SYSCALLS = {
    "x86_64": {
        "arch": 0xC000003E, "socket": 41, "clone": 56, "clone3": 435, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "keyctl": 250, "add_key": 248, "request_key": 249,
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "mq_open": 240,
        "io_uring_setup": 425, "userfaultfd": 323, "ptrace": 101, "perf_event_open": 298, "bpf": 321,
        "open_tree": 428, "fsopen": 430, "move_mount": 429, "syslog": 103,
        "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "utime": 132, "utimes": 235,
        "futimesat": 261, "fchownat": 260, "fchmodat": 268, "utimensat": 280, "fchmodat2": 452, "setxattr": 188,
        "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199,
        "setxattrat": 463, "removexattrat": 466, "setpriority": 141, "ioprio_set": 251, "sched_setparam": 142,
        "sched_setscheduler": 144, "sched_setaffinity": 203, "sched_setattr": 314, "prlimit64": 302,
        "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
        "pidfd_open": 434, "pidfd_send_signal": 424,
    },
    "aarch64": {
        "arch": 0xC00000B7, "socket": 198, "clone": 220, "clone3": 435, "unshare": 97, "setns": 268,
        "mount": 40, "umount2": 39, "pivot_root": 41, "keyctl": 219, "add_key": 217, "request_key": 218,
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "mq_open": 180,
        "io_uring_setup": 425, "userfaultfd": 282, "ptrace": 117, "perf_event_open": 241, "bpf": 280,
        "open_tree": 428, "fsopen": 430, "move_mount": 429, "syslog": 116,
        "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55, "utimensat": 88, "fchmodat2": 452,
        "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16,
        "setxattrat": 463, "removexattrat": 466, "setpriority": 140, "ioprio_set": 30, "sched_setparam": 118,
        "sched_setscheduler": 119, "sched_setaffinity": 122, "sched_setattr": 274, "prlimit64": 261,
        "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
        "pidfd_open": 434, "pidfd_send_signal": 424,
    },
}  # fmt: skip
SECCOMP_ARCH = set(SYSCALLS)
DENIED = (  # EPERM: memory outside the limits (memfd, SysV shm, message queues), keys, new namespaces, mounts
    "memfd_create", "memfd_secret", "shmget", "msgget", "mq_open", "io_uring_setup", "userfaultfd", "keyctl",
    "add_key", "request_key", "unshare", "setns", "mount", "umount2", "pivot_root", "ptrace", "perf_event_open",
    "bpf", "open_tree", "fsopen", "move_mount", "syslog", "pidfd_send_signal",
)  # fmt: skip
TARGETED = (  # EPERM when (argument, test, value) holds: signals to pid 1 (the box's init, which in mode userns
    # has the program's own uid, so the kernel alone would let them through), and the priority, affinity or
    # limits of any process but the caller's own (pid 0). The kernel reads these arguments as 32-bit ints, so
    # only the low half of each is compared: setting the high half cannot slip past.
    ("kill", 0, "eq", 1), ("tkill", 0, "eq", 1), ("tgkill", 0, "eq", 1), ("rt_sigqueueinfo", 0, "eq", 1),
    ("rt_tgsigqueueinfo", 0, "eq", 1), ("pidfd_open", 0, "eq", 1), ("prlimit64", 0, "ne", 0),
    ("sched_setaffinity", 0, "ne", 0), ("sched_setscheduler", 0, "ne", 0), ("sched_setparam", 0, "ne", 0),
    ("sched_setattr", 0, "ne", 0), ("setpriority", 0, "ne", 0), ("setpriority", 1, "ne", 0),
    ("ioprio_set", 0, "ne", 1), ("ioprio_set", 1, "ne", 0),
)  # fmt: skip
LANDLOCK_DENIED = (  # what Landlock does not cover and a mount namespace would: the host's files' metadata
    # (chmod, chown, times, xattrs on anything the user owns); other processes' priority and limits: `TARGETED`
    "socket", "chmod", "fchmod", "chown", "fchown", "lchown", "utime", "utimes", "futimesat", "fchownat",
    "fchmodat", "utimensat", "fchmodat2", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "setxattrat", "removexattrat",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def _bpf(
    arch: int, denied: list[int], targeted: dict[int, list[tuple[int, str, int]]], clone: int, clone3: int
) -> bytes:
    """A seccomp program: other ABIs (x32, i386) kill, `denied` fail with EPERM, `targeted` with EPERM when one of
    their argument tests holds, clone3 with ENOSYS (so libc falls back to clone, whose flags a classic BPF filter
    can read), clone with namespace flags with EPERM."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    # (code, jump if true, jump if false, k); a jump is a label, resolved below to a forward offset
    prog: list[tuple[int, str | int, str | int, int]] = [
        (ld, 0, 0, 4), (jeq, "next", "kill", arch), (ld, 0, 0, 0), (jge, "kill", "next", 0x40000000),
    ]  # fmt: skip
    prog += [(jeq, "eperm", "next", nr) for nr in denied]
    prog += [(jeq, "enosys", "next", clone3), (jeq, "clone", "next", clone)]
    prog += [(jeq, f"nr{nr}", "next", nr) for nr in targeted]
    labels = {}
    prog.append((ret, 0, 0, 0x7FFF0000))
    labels["clone"] = len(prog)
    prog += [(ld, 0, 0, 16), (jset, "eperm", "allow", NAMESPACE_FLAGS)]
    for nr, tests in targeted.items():
        labels[f"nr{nr}"] = len(prog)
        for index, test, value in tests:  # low 32 bits of argument `index` (little-endian seccomp_data)
            hit, miss = ("eperm", "next") if test == "eq" else ("next", "eperm")
            prog += [(ld, 0, 0, 16 + 8 * index), (jeq, hit, miss, value)]
        prog.append((jeq, "allow", "allow", 0))
    for name, action in (("allow", 0x7FFF0000), ("eperm", eperm), ("enosys", enosys), ("kill", 0x80000000)):
        labels[name] = len(prog)
        prog.append((ret, 0, 0, action))

    def offset(at: int, jump: str | int) -> int:
        return 0 if isinstance(jump, int) else (0 if jump == "next" else labels[jump] - at - 1)

    return b"".join(
        struct.pack("=HBBI", c, offset(i, t), offset(i, f), k) for i, (c, t, f, k) in enumerate(prog)
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(landlock: bool) -> None:
    """Inherited and irrevocable: see `DENIED` and `TARGETED`, and in mode "landlock" `LANDLOCK_DENIED` too."""
    numbers = SYSCALLS[os.uname().machine]
    names = DENIED + (LANDLOCK_DENIED if landlock else ())
    denied = [numbers[name] for name in names if name in numbers]  # aarch64 has no chmod, only fchmodat
    targeted: dict[int, list[tuple[int, str, int]]] = {}
    for name, index, test, value in TARGETED:
        targeted.setdefault(numbers[name], []).append((index, test, value))
    code = _bpf(numbers["arch"], denied, targeted, numbers["clone"], numbers["clone3"])
    buffer = ctypes.create_string_buffer(code)
    fprog = _SockFprog(len(code) // 8, ctypes.addressof(buffer))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
