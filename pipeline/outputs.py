"""Who owns an output folder. A stage writes only into a folder that is new, empty, or already its own: one whose
`manifest.json` (a finished output) or stage mark (an unfinished one) names that stage. So a typo in `output=`
can never delete another stage's files (a generate folder, a trained model, a user's data).

    check_owned(cfg.output, "filter")            # before anything runs: UserError naming what the folder holds
    mark(cfg.output, "sft", {"model": ...})      # when the stage first writes there (settings it resumes with)
    changes(recorded(cfg.output), {...})          # ["model: 'a' -> 'b'"]: what a resume would mix
    lock = FolderLock("generate"); lock.take(out)  # one writer at a time: a second run is refused, not mixed in

Outputs written before the mark existed are still recognised by their files (generate's shards, a trainer's
checkpoints), so an interrupted run of an older version can resume.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.records.manifest import MANIFEST, read_manifest
from pipeline.records.write import write_json

log = logging.getLogger(__name__)

MARK = ".distill-stage.json"
LOCK = ".distill-lock"
"""A hidden, empty file in an output folder that the run writing it holds locked (readers and push skip hidden
files), removed when the run ends."""
TRAINING = ("sft", "kd", "opd")
# What an unmarked, unfinished output of a stage holds (outputs of versions before the mark).
_SIGNS = {
    "generate": ("samples-*.jsonl", "shard-*-of-*", "fingerprint.json"),
    **{stage: ("checkpoint-*",) for stage in TRAINING},
    "eval": ("results.json", "problems"),
}


def owner(folder: str | Path) -> str | None:
    """The stage a folder's manifest or mark names; None when it has neither."""
    folder = Path(folder)
    done = read_manifest(folder) if (folder / MANIFEST).is_file() else None
    if done is not None:
        return done.get("stage")
    if (folder / MARK).is_file():
        return json.loads((folder / MARK).read_text()).get("stage")
    return None


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in (MARK, LOCK))


def _holds_signs_of(folder: Path, stage: str) -> bool:
    return any(any(folder.glob(pattern)) for pattern in _SIGNS.get(stage, ()))


def check_owned(folder: str | Path, stage: str, field: str = "output") -> None:
    """Refuse a non-empty `folder` that is not `stage`'s own output (see the module doc), naming what it holds."""
    folder = Path(folder)
    if not folder.is_dir() or not (entries := _contents(folder)):
        return
    found = owner(folder)
    if found == stage or (found is None and _holds_signs_of(folder, stage)):
        return
    finished = (folder / MANIFEST).is_file()
    if found is not None:
        what = f"a {'finished' if finished else 'started'} {found} output ({MANIFEST if finished else MARK})"
    else:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        what = f"{len(entries)} entries no distill {stage} run wrote ({shown})"
    raise UserError(
        f"{folder} holds {what}; distill {stage} replaces only its own output or an empty folder",
        file=folder,
        field=field,
        hint="choose a new or empty output folder (nothing was changed)",
    )


def mark(folder: str | Path, stage: str, settings: dict[str, Any] | None = None) -> None:
    """Record that `stage` writes `folder`, with the settings a later resume must match."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / MARK, {"stage": stage, "settings": settings or {}})


def recorded(folder: str | Path) -> dict[str, Any] | None:
    """The settings `mark` recorded, None when the folder has no mark."""
    path = Path(folder) / MARK
    return json.loads(path.read_text()).get("settings") if path.is_file() else None


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting that differs (keys either side lacks count as None)."""
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


class FolderLock:
    """An exclusive lock on the output folder a run writes, so two runs of a stage started on the same folder (a
    command launched twice, two jobs given the same shard) cannot both commit into it: the second is refused in
    one line and writes nothing. An flock on `LOCK`, released by the kernel when the process ends, killed or not
    (no stale lock; a killed run's empty file stays until the next run's release removes it), and removed by
    `release()`, so a finished folder holds none. On a filesystem without locks (Lustre mounted without `flock`)
    the run goes on with a warning."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.fd: int | None = None
        self.folder: Path | None = None

    @property
    def held(self) -> bool:
        return self.folder is not None

    def take(self, folder: str | Path, field: str = "output") -> None:
        """Lock `folder` (which must exist), or raise a UserError naming it when another process holds it."""
        folder = Path(folder)
        path = folder / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise UserError(
                    f"cannot write in {folder}: {e.strerror}",
                    file=folder,
                    field=field,
                    hint="choose an output folder you can write to",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(
                        f"{folder} is being written by another distill {self.stage} run (it holds {path})",
                        file=folder,
                        field=field,
                        hint="let that run finish (or stop it), then rerun this command: it resumes from what that "
                        "run committed; or choose another output folder",
                    ) from None
                log.warning(
                    "%s: cannot lock this folder (%s); make sure no other run writes it at the same time",
                    folder,
                    e.strerror,
                )
                self.folder = folder
                return
            if _same_file(fd, path):
                self.fd, self.folder = fd, folder
                return
            os.close(fd)  # locked a file the run before removed as it released it: lock the one there now

    def release(self) -> None:
        if self.fd is not None and self.folder is not None:
            Path(self.folder, LOCK).unlink(missing_ok=True)  # while still held: a waiter sees it gone (take)
            os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = self.folder = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
