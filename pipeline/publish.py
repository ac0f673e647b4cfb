"""Publishing a whole output folder atomically, and cleaning up after a publish that was killed.

    tmp = staging_folder(out)          # .NAME.tmp-PID beside `out`, empty
    ... write everything into tmp, manifest last ...
    publish_folder(tmp, out)           # old `out` renamed aside, tmp renamed in, the old one deleted

At every instant `out` is either the complete old folder or the complete new one, or (between the two renames)
absent with the old one kept whole as `.NAME.old-PID`. `recover_folder(out)`, run before each publish and by
stages that read a published folder, puts a kept-aside folder back if `out` is missing, deletes stale aside
copies once `out` exists, and removes staging folders whose writer process is dead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from pipeline.faults import fault_point

log = logging.getLogger("distill.publish")


def staging_folder(final: str | Path) -> Path:
    """A fresh, empty hidden folder beside `final` to write the new output into (readers skip dot names)."""
    final = Path(final)
    recover_folder(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_folder(tmp: str | Path, final: str | Path) -> Path:
    """Replace `final` by the complete folder `tmp`, atomically in every kill window (see the module doc)."""
    tmp, final = Path(tmp), Path(final)
    recover_folder(final)
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    fault_point("publish:before-aside")
    if final.exists():
        os.rename(final, aside)
        _sync_dir(final.parent)
    fault_point("publish:after-aside")
    os.rename(tmp, final)
    _sync_dir(final.parent)
    fault_point("publish:after-rename")
    shutil.rmtree(aside, ignore_errors=True)
    return final


def _leftovers(final: Path, kind: str) -> list[tuple[Path, int]]:
    """(path, writer pid) of `.NAME.{kind}-PID` folders beside `final`."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.{kind}-(\d+)$")
    if not final.parent.is_dir():
        return []
    found = [(p, pattern.match(p.name)) for p in final.parent.iterdir()]
    return [(p, int(m.group(1))) for p, m in found if m]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def recover_folder(final: str | Path) -> None:
    """Undo or finish a publish killed midway at `final`; remove staging folders of dead writers."""
    final = Path(final)
    asides = [p for p, pid in _leftovers(final, "old") if not _alive(pid)]
    if asides and not final.exists():
        # killed between the renames: the old output is whole in its aside copy; the new run did not finish
        restore = max(asides, key=lambda p: p.stat().st_mtime)
        os.rename(restore, final)
        _sync_dir(final.parent)
        log.warning("%s: restored the previous output (a publish was killed midway)", final)
    for path in asides:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
    for path, pid in _leftovers(final, "tmp"):
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            log.info("%s: removed %s, left by a killed run", final, path.name)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
