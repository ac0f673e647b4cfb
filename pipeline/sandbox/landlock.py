"""Landlock, through its three syscalls: what a sandboxed program of mode "landlock" may touch on the host.

    abi()                                   # 0 when the kernel has no Landlock, else its ABI version
    restrict(["/usr", "/opt/py"], "/tmp/d") # in the program's process, after no_new_privs, before exec

After `restrict` the process (and every process it starts) may read and execute files under the listed
directories, read (not write) its own directory, and use /dev/null, /dev/zero and /dev/urandom; nothing else
of the filesystem: no other read, no write, no file, directory, FIFO or socket created anywhere. With ABI >= 6
it can neither signal nor reach the abstract UNIX sockets of processes outside its domain; ptrace of them is
refused by every ABI. Standard library only: the jail imports it under `python -S`.
"""

from __future__ import annotations

import ctypes
import os
import struct

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
CREATE_RULESET_VERSION, RULE_PATH_BENEATH = 1, 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
ALL_FS = (1 << 16) - 1  # every filesystem right of ABI 5 (EXECUTE .. IOCTL_DEV)
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
MINIMUM_ABI = 6
"""Signal scoping: without it a program of the user's own uid could kill the user's other processes."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(number: int, *args: object) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock syscall {number}: {os.strerror(err)}")
    return result


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none or it is disabled (not in `lsm=`)."""
    try:
        return _call(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION)
    except OSError:
        return 0


def _fs_rights(version: int) -> int:
    """The filesystem rights this ABI knows (REFER from 2, TRUNCATE from 3, IOCTL_DEV from 5)."""
    known = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
    return known.get(version, ALL_FS)


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = struct.pack("=Qi", rights, fd)  # struct landlock_path_beneath_attr (packed)
        _call(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.c_char_p(rule), 0)
    finally:
        os.close(fd)


def restrict(readable: list[str], own: str) -> None:
    """Restrict this process as the module docstring says; raises OSError when the kernel cannot."""
    version = abi()
    if version < MINIMUM_ABI:
        raise OSError(f"Landlock ABI {version}, {MINIMUM_ABI} needed")
    handled = _fs_rights(version)
    # struct landlock_ruleset_attr: handled_access_fs, handled_access_net (BIND/CONNECT TCP), scoped
    attr = struct.pack("=QQQ", handled, 3, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _call(SYS_CREATE_RULESET, ctypes.c_char_p(attr), len(attr), 0)
    try:
        for path in readable:
            _allow(ruleset, path, EXECUTE | READ_FILE | READ_DIR)
        _allow(ruleset, own, READ_FILE | READ_DIR)
        for device in ("null", "zero", "urandom"):
            _allow(ruleset, f"/dev/{device}", READ_FILE | WRITE_FILE)
        _call(SYS_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
