"""What a run's box holds and sees: the interpreter's directories, the system libraries, an environment.

    binds, links = box_contents(sys.executable)   # (["/usr/lib", "/work/.venv", ...], {"/lib": "usr/lib", ...})

The namespace modes bind `binds` read-only into the box's empty root and recreate `links` (usr-merged systems'
/lib -> usr/lib); mode landlock lets the program read and execute under `binds` and nothing else.
"""

from __future__ import annotations

import functools
import json
import os
import site
import stat
import subprocess
import sys
from pathlib import Path

LIBRARIES = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/lib32", "/libx32")
"""System library directories bound in (the interpreter's shared libraries); symlinks among them recreated."""
LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


def _outside(paths: set[Path]) -> list[str]:
    """The paths that lie under no other of them (binding a parent binds its children)."""
    return sorted(str(p) for p in paths if not any(p != q and p.is_relative_to(q) for q in paths))


@functools.cache
def box_contents(python: str) -> tuple[list[str], dict[str, str]]:
    """(directories bound read-only, symlinks recreated): the interpreter's installs and the system libraries."""
    exe = Path(python).absolute()
    installs = {exe.resolve().parent.parent}
    if (exe.parent.parent / "pyvenv.cfg").exists():
        installs.add(exe.parent.parent)
    links = {p: os.readlink(p) for p in LINKS if os.path.islink(p)}
    libraries = {Path(p) for p in LIBRARIES if os.path.isdir(p) and p not in links}
    return _outside(installs | libraries), links


@functools.cache
def site_packages(python: str) -> list[str]:
    """The site-packages directories of `python` (its venv's, if any), which the harness puts on sys.path."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        return [p for p in site.getsitepackages() if os.path.isdir(p)]
    probe = (
        "import json, os, site; print(json.dumps([p for p in site.getsitepackages() if os.path.isdir(p)]))"
    )
    done = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else []


def blocked_ancestor(path: Path) -> Path | None:
    """The outermost directory on `path` that other users cannot enter (no o+x), if any."""
    for directory in [*reversed(path.parents), path]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def environment(home: str, tmp: str) -> dict[str, str]:
    """All a run sees of the environment: nothing inherited, so no token or key of the parent's."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": tmp,
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools count against `processes` and `memory_bytes`
        "OPENBLAS_NUM_THREADS": "1",
    }


def processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid
        except OSError:
            continue
    return count
