"""Copy a trained toy teacher's final model (not its checkpoints or optimizer state) into data/toy-teacher.

python -m pipeline.toy.publish runs/toy/teacher data/toy-teacher
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "manifest.json",
)


def publish(src: Path, dst: Path) -> Path:
    missing = [name for name in KEEP if not (src / name).exists()]
    if missing:
        raise SystemExit(f"{src} is not a finished model folder: missing {', '.join(missing)}")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in KEEP:
        shutil.copy2(src / name, tmp / name)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


if __name__ == "__main__":
    print(f"published {publish(Path(sys.argv[1]), Path(sys.argv[2]))}")
