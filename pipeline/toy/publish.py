"""Copy a trained toy teacher's final model (not its checkpoints or optimizer state) into data/toy-teacher,
once its held-out score says it is good enough.

python -m pipeline.toy.publish runs/toy/teacher data/toy-teacher --results runs/toy/eval/results.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pipeline.publish import publish_folder, staging_folder

KEEP = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "manifest.json",
)


def heldout_accuracy(results: Path) -> float:
    """pass@1 on the toy benchmark of the first model in an eval stage's results.json."""
    data = json.loads(results.read_text())
    try:
        return float(data["models"][0]["metrics"]["toy"]["pass@1"])
    except (KeyError, IndexError, TypeError) as err:
        raise SystemExit(f"{results}: no toy pass@1 for models[0] ({err!r})") from None


def publish(src: Path, dst: Path) -> Path:
    missing = [name for name in KEEP if not (src / name).exists()]
    if missing:
        raise SystemExit(f"{src} is not a finished model folder: missing {', '.join(missing)}")
    tmp = staging_folder(dst)
    try:
        for name in KEEP:
            shutil.copy2(src / name, tmp / name)
        return publish_folder(tmp, dst)  # the committed teacher is replaced whole, in every kill window
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--results", type=Path, required=True, help="the eval stage's results.json for src")
    parser.add_argument("--min-accuracy", type=float, default=0.95)
    args = parser.parse_args(argv)
    acc = heldout_accuracy(args.results)
    if acc < args.min_accuracy:
        raise SystemExit(
            f"{args.src} scores {acc:.1%} on held-out problems ({args.results}), below {args.min_accuracy:.0%}: "
            f"not published; {args.dst} is unchanged"
        )
    print(f"published {publish(args.src, args.dst)} (held-out accuracy {acc:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
