"""Stage hand-offs: a stage reads another stage's output folder only when that folder is complete.

    manifest = require_complete(cfg.input, produced_by="generate", allow_incomplete=args.allow_incomplete)

A stage's output is complete only when its `manifest.json` exists (pipeline/records/manifest.py, written last), so a folder
without one is the remains of a killed or failed run: reading it would silently train or report on part of the
data. Every stage that reads another stage's folder (filter <- generate, sft/kd <- filter, opd <- sft,
eval/push <- sft/kd) calls `require_complete` before loading anything heavy. `--allow-incomplete` is the
explicit way out for users who know why. A file (a user's own .jsonl / .parquet) is not a stage output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.publish import recover_folder
from pipeline.records.manifest import MANIFEST, read_manifest

_SHARD = re.compile(r"^shard-(\d+)-of-(\d+)$")
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")
# files only our stages write: a folder holding one of them without a manifest is a stage's unfinished output
MARKERS = ("fingerprint.json", "rejected.jsonl", "report.json", "report.png", "trainer_state.json",
           "training_args.bin")  # fmt: skip


class IncompleteInput(UserError):
    """An input folder that is not a complete output of the stage that should have made it."""


def require_complete(
    folder: str | Path,
    produced_by: str | tuple[str, ...],
    *,
    allow_incomplete: bool = False,
    field: str = "input",
) -> dict[str, Any] | None:
    """The manifest of `folder` (for a folder of `--shard` outputs: {"stage", "shards": [manifests]}).

    Refuses, naming the stage to rerun, a folder without its manifest (any shard's, or a missing shard) or made
    by another stage than `produced_by`. Files and missing paths pass (their readers report them); with
    `allow_incomplete` an incomplete folder passes with None.
    """
    folder = Path(folder)
    stages = (produced_by,) if isinstance(produced_by, str) else tuple(produced_by)
    recover_folder(folder)  # a publish killed midway: put the previous complete output back first
    if not folder.is_dir():
        return None
    shards = sorted(p for p in folder.iterdir() if p.is_dir() and _SHARD.match(p.name))
    if shards and not (folder / MANIFEST).exists():
        manifests = [
            _checked(p, stages, allow_incomplete, field)
            for p in _all_shards(folder, shards, stages, allow_incomplete, field)
        ]
        return None if None in manifests else {"stage": manifests[0]["stage"], "shards": manifests}
    return _checked(folder, stages, allow_incomplete, field)


def _all_shards(
    folder: Path, shards: list[Path], stages: tuple[str, ...], allow: bool, field: str
) -> list[Path]:
    """The shard folders, refusing a set with shards missing (`shard-i-of-N` for every i < N)."""
    total = int(_SHARD.match(shards[0].name).group(2))
    names = {f"shard-{i:05d}-of-{total:05d}" for i in range(total)}
    missing = sorted(names - {p.name for p in shards})
    if missing and not allow:
        raise IncompleteInput(
            f"{len(missing)} of {total} shard folders are missing ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''})",
            file=folder,
            field=field,
            hint=f"run `distill {stages[0]} --shard i/{total}` for each missing shard, or pass --allow-incomplete",
        )
    return shards


def _checked(folder: Path, stages: tuple[str, ...], allow: bool, field: str) -> dict[str, Any] | None:
    manifest = read_manifest(folder)
    if manifest is None:
        if allow:
            return None
        rerun = " or ".join(f"`distill {s}`" for s in stages)
        raise IncompleteInput(
            f"no {MANIFEST}: the {'/'.join(stages)} run that writes this folder did not finish "
            "(killed or failed), so it may hold only part of its output",
            file=folder,
            field=field,
            hint=f"rerun {rerun} with its recipe (it resumes where it stopped), "
            "or pass --allow-incomplete to read it as it is",
        )
    if manifest.get("stage") not in stages:
        raise IncompleteInput(
            f"this is the output of stage '{manifest.get('stage')}', expected the output of "
            f"{' or '.join(stages)}",
            file=folder,
            field=field,
            hint=f"point it at a `distill {stages[0]}` output folder",
        )
    return manifest


def is_stage_output(folder: str | Path) -> bool:
    """Whether a folder was written by one of our stages (a manifest, checkpoints, or a file only we write),
    for readers that also take folders made elsewhere (eval takes any model folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return (
        (folder / MANIFEST).exists()
        or any((folder / m).exists() for m in MARKERS)
        or any(folder.glob("checkpoint-*"))
    )


TRAINED = ("sft", "kd", "opd")  # the stages whose output is a model


def require_trained_model(path: str | Path, *, allow_incomplete: bool = False, field: str = "model") -> None:
    """A model folder to evaluate or train from: a training output must be finished, a `checkpoint-N` complete;
    other folders (a base model, a download) and Hub ids pass."""
    from pipeline.checkpoints import INCOMPLETE, is_complete

    path = Path(path)
    if _CHECKPOINT.match(path.name) and path.is_dir():
        if not (is_complete(path) or allow_incomplete):
            raise IncompleteInput(
                f"an incomplete checkpoint ({INCOMPLETE})",
                file=path,
                field=field,
                hint="use an earlier checkpoint or the finished model folder",
            )
    elif is_stage_output(path):
        require_complete(path, TRAINED, allow_incomplete=allow_incomplete, field=field)
