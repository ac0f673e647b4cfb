"""Fault injection for crash tests: the process SIGKILLs itself at a named point, so kill tests are exact.

    DISTILL_TEST_KILL_AT=publish:after-aside distill filter ...     # killed between the two renames
    DISTILL_TEST_KILL_AT=checkpoint:mid-save@2 distill sft ...       # killed inside the 2nd weights save

A point costs one environment lookup when unset. Points: `publish:before-aside`, `publish:after-aside`,
`publish:after-rename` (pipeline/publish.py), `generate:after-fingerprint` (pipeline/generate/commit.py),
`checkpoint:mid-save` (inside transformers' weights write, after config.json) and `checkpoint:mid-state` (half of
trainer_state.json written), both armed by `arm_checkpoint_saves`.
"""

from __future__ import annotations

import os
import signal

ENV = "DISTILL_TEST_KILL_AT"
_hits: dict[str, int] = {}


def _wanted(name: str) -> int | None:
    """The hit count at which to die at point `name` (`name@N`; plain `name` is the first hit), or None."""
    for spec in filter(None, os.environ.get(ENV, "").split(",")):
        point, _, nth = spec.partition("@")
        if point == name:
            return int(nth or 1)
    return None


def _due(name: str) -> bool:
    """Count a hit of point `name`: whether this is the one a test asked to die at."""
    nth = _wanted(name)
    if nth is None:
        return False
    _hits[name] = _hits.get(name, 0) + 1
    return _hits[name] == nth


def fault_point(name: str) -> None:
    """SIGKILL this process here when a test asked for it (see the module docstring)."""
    if _due(name):
        os.kill(os.getpid(), signal.SIGKILL)


def arm_checkpoint_saves() -> None:
    """Put the checkpoint points inside transformers' checkpoint writes: `checkpoint:mid-save` in the weights write
    (config.json already on disk: a folder without weights or trainer_state.json), `checkpoint:mid-state` in the
    write of trainer_state.json, the checkpoint's last file, with half of it on disk (as a kill there leaves it)."""
    if _wanted("checkpoint:mid-save") is not None:
        import transformers.modeling_utils as modeling

        original = modeling.safe_save_file

        def save(*args: object, **kwargs: object) -> object:
            fault_point("checkpoint:mid-save")
            return original(*args, **kwargs)

        modeling.safe_save_file = save
    if _wanted("checkpoint:mid-state") is not None:
        from transformers.trainer_callback import TrainerState

        save_state = TrainerState.save_to_json

        def save_json(state: TrainerState, json_path: str) -> None:
            save_state(state, json_path)
            if _due("checkpoint:mid-state"):
                with open(json_path, "r+") as f:
                    f.truncate(len(f.read()) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        TrainerState.save_to_json = save_json
