"""Fault injection for crash tests: the process SIGKILLs itself at a named point, so kill tests are exact.

    DISTILL_TEST_KILL_AT=publish:after-aside distill filter ...     # killed between the two renames
    DISTILL_TEST_KILL_AT=checkpoint:mid-save@2 distill sft ...       # killed inside the 2nd weights save

A point costs one environment lookup when unset. Points: `publish:before-aside`, `publish:after-aside`,
`publish:after-rename` (pipeline/publish.py), `generate:after-fingerprint` (pipeline/generate/commit.py),
`checkpoint:mid-save` (inside transformers' weights write, after config.json; armed by `arm_weight_save`).
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


def fault_point(name: str) -> None:
    """SIGKILL this process here when a test asked for it (see the module docstring)."""
    nth = _wanted(name)
    if nth is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)


def arm_weight_save() -> None:
    """Put the `checkpoint:mid-save` point inside transformers' weights write (config.json already on disk),
    where a real kill leaves a checkpoint folder without weights or trainer_state.json."""
    if _wanted("checkpoint:mid-save") is None:
        return
    import transformers.modeling_utils as modeling

    original = modeling.safe_save_file

    def save(*args: object, **kwargs: object) -> object:
        fault_point("checkpoint:mid-save")
        return original(*args, **kwargs)

    modeling.safe_save_file = save
