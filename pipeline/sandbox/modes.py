"""The sandbox's modes and what each needs from this machine (sandbox.resolve_mode picks one, once per process).

    mode = sandbox.resolve_mode("auto")  # "namespaces" as root, "userns" for users, else "landlock"
    sandbox.require_mode("userns")       # the same for a forced mode; SandboxUnavailable saying why, and the fix

Each mode is first checked here for what it needs (root; user namespaces allowed; Landlock ABI 6 and seccomp),
then proven by running a trivial program in it, so a container profile or an LSM that refuses some step is
found here, not in the middle of a filter run. "auto" logs the mode it picked, and why stronger ones are out.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Literal

from pipeline.sandbox import landlock, seccomp
from pipeline.sandbox.contents import blocked_ancestor, box_contents

Mode = Literal["namespaces", "userns", "landlock"]
ModeChoice = Literal["auto", "namespaces", "userns", "landlock"]
MODES: tuple[Mode, ...] = ("namespaces", "userns", "landlock")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def userns_fix() -> str:
    """How to allow unprivileged user namespaces where a known switch forbids them."""
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return (
            "AppArmor restricts unprivileged user namespaces (Ubuntu >= 23.10): an admin can run `sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0`, or add an AppArmor profile granting `userns,` to "
            f"{os.path.realpath(sys.executable)}"
        )
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "an admin can run `sysctl -w kernel.unprivileged_userns_clone=1`"
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        return "an admin can run `sysctl -w user.max_user_namespaces=15000`"
    return "in a container, its seccomp profile may refuse unshare(2): run it with user namespaces allowed"


def real_root() -> bool:
    """uid 0 of the host, not of a user namespace (where uid_map maps 0 to some user's uid)."""
    return os.geteuid() == 0 and (_read("/proc/self/uid_map") or "").split() == ["0", "0", "4294967295"]


def precheck(mode: Mode, python: str) -> str | None:
    """Why `mode` cannot work here, from what it needs; None when it may."""
    if platform.machine() not in seccomp.SECCOMP_ARCH:
        return f"no seccomp filter for {platform.machine()} (x86_64 and aarch64 only)"
    if mode != "userns" and os.geteuid() == 0 and not real_root():
        return "uid 0 of a user namespace (rootless container, `unshare -r`) cannot hand out uids: use userns"
    if mode == "namespaces" and os.geteuid() != 0:
        return "needs root"
    if mode == "userns" and real_root():  # the host's root skips RLIMIT_NPROC, even in a user namespace
        return "is for users other than root (root uses mode namespaces)"
    if mode != "landlock" and "/tmp" in box_contents(python)[0]:
        return (
            f"{python} is installed in /tmp itself, which the box's own /tmp replaces: install it in a folder"
        )
    if mode == "landlock":
        if (version := landlock.abi()) < landlock.MINIMUM_ABI:
            return (
                f"needs Landlock ABI >= {landlock.MINIMUM_ABI} (Linux >= 6.12 with landlock in the `lsm=` boot "
                f"list), this kernel has {version or 'none'}"
            )
        blocked = [b for p in box_contents(python)[0] if (b := blocked_ancestor(Path(p)))]
        if blocked and os.geteuid() == 0:
            return f"{python} lies under {blocked[0]}, which the run's uid cannot enter: use a world-readable python"
    return None
