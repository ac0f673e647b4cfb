"""Copy a trained toy teacher's final model (not its checkpoints or optimizer state) into data/toy-teacher,
once its held-out scores pass the gates: accuracy (>= 97%) and, for task v2, recovery R when an error is
forced into its working (>= 90%; eval's `recovery:` must have measured it). The eval's results.json is kept
beside the model as `gates.json`.

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
GATES = "gates.json"


def heldout_metric(results: Path, key: str) -> float:
    """A metric on the toy benchmark of the first model in an eval stage's results.json."""
    data = json.loads(results.read_text())
    try:
        return float(data["models"][0]["metrics"]["toy"][key])
    except (KeyError, IndexError, TypeError) as err:
        raise SystemExit(f"{results}: no toy {key} for models[0] ({err!r}); eval with `recovery:`?") from None


def publish(src: Path, dst: Path, results: Path) -> Path:
    missing = [name for name in KEEP if not (src / name).exists()]
    if missing:
        raise SystemExit(f"{src} is not a finished model folder: missing {', '.join(missing)}")
    tmp = staging_folder(dst)
    try:
        for name in KEEP:
            shutil.copy2(src / name, tmp / name)
        shutil.copy2(results, tmp / GATES)
        return publish_folder(tmp, dst)  # the committed teacher is replaced whole, in every kill window
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--results", type=Path, required=True, help="the eval stage's results.json for src")
    parser.add_argument("--min-accuracy", type=float, default=0.97)
    parser.add_argument("--min-recovery", type=float, default=0.90, help="0: no recovery gate (a v1 teacher)")
    args = parser.parse_args(argv)
    acc = heldout_metric(args.results, "pass@1")
    rec = heldout_metric(args.results, "recovery_rate") if args.min_recovery > 0 else None
    for name, value, gate in (("accuracy", acc, args.min_accuracy), ("recovery R", rec, args.min_recovery)):
        if value is not None and value < gate:
            raise SystemExit(
                f"{args.src}: held-out {name} {value:.1%} ({args.results}) is below {gate:.0%}: not published; "
                f"{args.dst} is unchanged"
            )
    shown = f"held-out accuracy {acc:.1%}" + (f", recovery R {rec:.1%}" if rec is not None else "")
    print(f"published {publish(args.src, args.dst, args.results)} ({shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
