"""How a training stage (sft, kd, opd) starts: here, not at all (a finished run rerun), or relaunched under
`accelerate launch`, which starts one process per device and runs the same command again in each.

    if (status := settled_elsewhere(cfg, args, "kd")) is not None:
        return status   # 0 for a finished run, else the launched run's exit status
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

from pipeline.config import to_dict
from pipeline.records.manifest import read_manifest
from pipeline.train.opd.config import OPDStageConfig
from pipeline.train.sft.config import SFTStageConfig

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
