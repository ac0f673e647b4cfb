"""How a training stage (sft, kd, opd) starts: here, not at all (a finished run rerun), or relaunched under
`accelerate launch`, which starts one process per device and runs the same command again in each; and what it
may do to its output folder, in that order: check everything, touch the folder only when training starts.

    resume_point(cfg, "kd")                            # refuses another stage's folder or another run's checkpoints
    if (status := settled_elsewhere(cfg, args, "kd")) is not None:
        return status   # 0 for a finished run, else the launched run's exit status
    ... load models and data, pre-flight checks (any may refuse: the output is still as it was) ...
    last = claim_output(cfg, "kd", trainer.is_world_process_zero())   # now the folder is this run's
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import to_dict
from pipeline.errors import UserError
from pipeline.records.manifest import MANIFEST, read_manifest
from pipeline.train.opd.config import OPDStageConfig
from pipeline.train.sft.config import SFTStageConfig

if TYPE_CHECKING:
    from pipeline.outputs import FolderLock

log = logging.getLogger("distill.train")
LAUNCHED = "DISTILL_LAUNCHED"
# kd's config is an SFTStageConfig too
StageConfig = SFTStageConfig | OPDStageConfig


def settled_elsewhere(cfg: StageConfig, args: Any, stage: str) -> int | None:
    """The exit status when this process is not the one to train (sft, kd and opd alike): 0 for a run that
    already finished (a rerun trains nothing), the launched run's for a recipe that asks for `accelerate
    launch`; None: train here."""
    if already_trained(cfg, stage):
        return 0
    if cfg.launch.accelerate_config and not os.environ.get(LAUNCHED):
        return relaunch(cfg, args, stage)
    return None


def already_trained(cfg: StageConfig, stage: str) -> bool:
    """True when `output` holds this very run, finished: its manifest, with the same resolved recipe.

    Resuming from the final checkpoint would train one step more (transformers' Trainer does), so a rerun of a
    finished command does nothing. A changed recipe (more steps, say) resumes from the last checkpoint.
    """
    done = read_manifest(cfg.output) if cfg.resume else None
    if not done:
        return False
    if done.get("stage") != stage or done.get("config") != json.loads(json.dumps(to_dict(cfg))):
        return False
    log.info("%s is already complete (manifest.json, same recipe): nothing to train", cfg.output)
    return True


def relaunch(cfg: StageConfig, args: Any, stage: str) -> int:
    """Run this same command again under `accelerate launch`, which starts one process per device."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", cfg.launch.accelerate_config]
    if cfg.launch.num_processes:
        cmd += ["--num_processes", str(cfg.launch.num_processes)]
    cmd += ["-m", "pipeline.cli", stage, "--config", args.config, *args.overrides]
    cmd += ["--allow-incomplete"] if getattr(args, "allow_incomplete", False) else []
    log.info("relaunching: %s", " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, LAUNCHED: "1"})


# --- the output folder: checked before anything loads, touched only when training starts ------------------------

# What a checkpoint depends on: resuming it with any of these changed would mix two runs (another model's
# weights, another adapter's shapes, other data or teachers). The trainer's schedule may change (more steps).
RESUME_KEYS = ("model", "revision", "tokenizer", "from_scratch", "model_config", "peft", "data", "problems",
               "teachers", "prompt", "kd.teacher", "kd.teacher_model", "kd.hidden",
               "kd.teachers", "kd.relations")  # fmt: skip


def resume_settings(cfg: StageConfig) -> dict[str, Any]:
    """The settings of `RESUME_KEYS` this recipe has, JSON-normalised (dotted keys for nested ones)."""
    settings = json.loads(json.dumps(to_dict(cfg)))
    found = {}
    for key in RESUME_KEYS:
        head, _, tail = key.partition(".")
        value = settings.get(head)
        if tail and isinstance(value, dict):
            value = value.get(tail)
        if head in settings:
            found[key] = value
    if isinstance(cfg, OPDStageConfig):  # a served teacher by its name: replicas may move between resumes
        from pipeline.train.opd.mixture import identities

        found["teachers"] = identities(cfg)
    return found


def resume_point(cfg: StageConfig, stage: str) -> str | None:
    """The checkpoint this run resumes from (the latest complete one; None: from the start), after refusing an
    output that is another stage's or whose checkpoints were made with other settings. Writes nothing."""
    from pipeline.checkpoints import latest_complete_checkpoint
    from pipeline.outputs import changes, check_owned, recorded

    check_owned(cfg.output, stage)
    if not cfg.resume:
        _refuse_to_start_over(cfg)
        return None
    last = latest_complete_checkpoint(cfg.output, remove_incomplete=False)
    if last is None:
        return None
    before = recorded(cfg.output)
    changed = (
        changes(before, resume_settings(cfg)) if before is not None else _architecture_changes(cfg, last)
    )
    if changed:
        raise UserError(
            f"{cfg.output} holds checkpoints of another run ({last.name}); changed: {'; '.join(changed)}",
            file=cfg.output,
            field="output",
            hint="use another output folder, or restore those settings to resume (nothing was changed)",
        )
    return str(last)


def _refuse_to_start_over(cfg: StageConfig) -> None:
    """`resume: false` over checkpoints or a finished model would overwrite them step by step: refused."""
    from pipeline.checkpoints import checkpoints

    held = [p.name for p in checkpoints(cfg.output)[:3]]
    held += [MANIFEST] if (Path(cfg.output) / MANIFEST).exists() else []
    if held:
        raise UserError(
            f"resume: false starts a new run, but {cfg.output} holds {', '.join(held)}",
            file=cfg.output,
            field="resume",
            hint="choose a new or empty output folder, or resume: true (nothing was changed)",
        )


def claim_output(cfg: StageConfig, stage: str, main_process: bool) -> str | None:
    """Training starts now: the checkpoint to resume from. The main process alone removes incomplete
    checkpoints, marks the output unfinished (no manifest until this run's last step) and records its settings."""
    from pipeline.checkpoints import latest_complete_checkpoint
    from pipeline.outputs import mark

    if main_process:  # before anything in the folder is read to resume from, removed or marked
        hold_output(cfg.output, stage)
    last = resume_point(cfg, stage)
    if main_process:
        if cfg.resume:
            latest_complete_checkpoint(cfg.output, remove_incomplete=True)
        (Path(cfg.output) / MANIFEST).unlink(missing_ok=True)
        mark(cfg.output, stage, resume_settings(cfg))
    if last:
        log.info("resuming from %s", last)
    return last


_held: dict[Path, FolderLock] = {}
"""The output folders this process holds locked (pipeline/outputs.FolderLock), by resolved path."""


def hold_output(folder: str | Path, stage: str) -> None:
    """Lock the output folder for this run's main process (the one that removes incomplete checkpoints and writes
    the manifest): a second run started on it while this one trains is refused in one line, instead of deleting
    the checkpoint this one is saving and training into the same folder. Released by `release_output` or when
    the process ends, however it ends."""
    from pipeline.outputs import FolderLock

    path = Path(folder).resolve()
    if path in _held:
        return
    path.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(stage)
    lock.take(path)
    _held[path] = lock


def release_output(folder: str | Path) -> None:
    lock = _held.pop(Path(folder).resolve(), None)
    if lock is not None:
        lock.release()


ARCHITECTURE = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size")  # fmt: skip


def _architecture_changes(cfg: StageConfig, checkpoint: Path) -> list[str]:
    """For checkpoints older than the output mark: their model's shape against the student's, where both are
    local (a Hub student is compared once the mark exists)."""
    from pipeline.outputs import changes

    saved, student = checkpoint / "config.json", Path(cfg.model) / "config.json"
    if not (saved.is_file() and student.is_file()):
        return []
    overrides = getattr(cfg, "model_config", None) or {}
    want = {**json.loads(student.read_text()), **overrides}
    have = json.loads(saved.read_text())
    return [f"model {line}" for line in changes(
        {k: have.get(k) for k in ARCHITECTURE}, {k: want.get(k) for k in ARCHITECTURE}
    )]  # fmt: skip
