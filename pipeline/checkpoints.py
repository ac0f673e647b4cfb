"""Which checkpoint a training run resumes from: the latest *complete* one.

transformers writes `checkpoint-N/` file by file (config, weights, optimizer, scheduler, RNG, trainer_state.json
last), so a run killed while saving leaves a folder that `get_last_checkpoint` still picks and every resume then
dies on; a kill while `trainer_state.json` itself is written leaves it empty or cut short, and the resume dies
reading it. A checkpoint is complete when it holds a whole `trainer_state.json` (it parses) and model (or adapter)
weights; newer incomplete ones are reported and removed, since training will write that step again.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger("distill.train")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")  # fmt: skip
INCOMPLETE = "no whole trainer_state.json, or no weights: the run was killed while saving it"
"""Why a checkpoint is not complete, as the resume's warning and the handoff's error say it."""


def is_complete(checkpoint: Path) -> bool:
    """trainer_state.json (written last, in place: a kill while writing it leaves it empty or cut short) whole,
    and weights present; a sharded save needs every shard its index lists."""
    import json

    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(state, dict):  # a JSON object cut short never parses
        return False
    present = [w for w in WEIGHTS if (checkpoint / w).is_file()]
    if not present:
        return False
    index = next((checkpoint / w for w in present if w.endswith(".index.json")), None)
    if index is None:
        return True
    shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
    return all((checkpoint / s).is_file() for s in shards)


def checkpoints(output: str | Path) -> list[Path]:
    """`checkpoint-N` folders of `output`, newest (highest N) first."""
    output = Path(output)
    if not output.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in output.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_complete_checkpoint(output: str | Path, remove_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint of `output` (None: start from scratch), logging each newer incomplete
    one it skips (and removing it, unless told not to)."""
    for path in checkpoints(output):
        if is_complete(path):
            return path
        log.warning(
            "skipping %s: incomplete (%s)%s",
            path,
            INCOMPLETE,
            "; removing it" if remove_incomplete else "",
        )
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return None
