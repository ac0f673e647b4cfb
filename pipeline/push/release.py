"""What a push publishes: the files chosen from a stage output, staged per revision with a generated card.

    revisions = stage_model(args, Path("runs/sft"), root)    # root/main, root/checkpoint-6, ... each a folder

A revision folder is what `upload_folder` sends as one commit: symlinks to the files worth publishing plus a
README.md written from the manifests (push/model_card.py, push/dataset_card.py) in place of the folder's own
(TRL writes a generic one). Left out unless `--include PATTERN`: `checkpoint-*` (branches of their own with
`--checkpoints`), `runs/` (tensorboard), `training_args.bin` (a pickle the Hub's scanner flags; the recipe is
in manifest.json and the card), an adapter's `merged/` and mutual learning's `peer/` (push each as its own
model), optimizer / scheduler / RNG state in checkpoints (resuming needs them, readers do not); never: hidden
files and `*.tmp`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.records.manifest import read_manifest

if TYPE_CHECKING:
    from pipeline.push.lineage import ModelFacts, Teacher

log = logging.getLogger("distill.push")
JUNK = ("*.tmp", "*/__pycache__/*", "__pycache__/*")
SKIP = {
    "model": ("checkpoint-*", "runs/*", "*training_args.bin", "README.md", "peer/*"),
    "checkpoint": (
        "optimizer.pt",
        "peer/*",
        "scheduler.pt",
        "scaler.pt",
        "rng_state*.pth",
        "global_step*",
        "*training_args.bin",
        "README.md",
    ),
    "dataset": ("README.md",),
}


class PushError(UserError):
    """A push that cannot go ahead as asked; the message says why and what to do."""


@dataclass
class Revision:
    name: str
    folder: Path

    @functools.cached_property
    def files(self) -> list[tuple[str, int]]:
        """(relative path, size) of every staged file: what `upload_folder` will send. Read once staged."""
        return [
            (p.relative_to(self.folder).as_posix(), p.stat().st_size)
            for p in sorted(self.folder.rglob("*"))
            if p.is_file()
        ]


def select(folder: Path, skip: tuple[str, ...], include: list[str]) -> list[str]:
    """Relative paths of the files to publish: not hidden, not junk, not skipped unless explicitly included."""
    chosen = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in PurePosixPath(rel).parts) or any(
            fnmatch(rel, j) for j in JUNK
        ):
            continue
        if not any(fnmatch(rel, s) for s in skip) or any(fnmatch(rel, i) for i in include):
            chosen.append(rel)
    return chosen


def link(src: Path, dst: Path, rels: list[str]) -> None:
    """Symlink the files into the stage: weights can be many GB, and the upload reads through the link."""
    for rel in rels:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to((src / rel).resolve())


def write_text(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)  # replaces a link to the source, never the source itself
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def point_adapter_at(stage: Path, base_id: str) -> None:
    """PEFT loads an adapter's base from `base_model_name_or_path`: a local path there is useless on the Hub."""
    config = json.loads((stage / "adapter_config.json").read_text())
    write_text(
        stage / "adapter_config.json", json.dumps({**config, "base_model_name_or_path": base_id}, indent=2)
    )


def prompt_text(teacher: Teacher | None) -> str:
    """The user turn the student was trained on: the teacher's prompt template, else R1's (prompts/math-r1-v1)."""
    from pipeline.prompts import load_prompt

    if teacher is not None and teacher.prompt_template:
        try:
            return load_prompt(teacher.prompt_template).text
        except FileNotFoundError as e:
            log.warning("model card: %s; its usage example shows R1's prompt (math-r1-v1) instead", e)
    return load_prompt("math-r1-v1").text


def checkpoint_step(path: Path) -> int:
    suffix = path.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def stage_model(args: argparse.Namespace, folder: Path, root: Path) -> list[Revision]:
    """`main` (the model, its card and eval results) and, with --checkpoints, one revision per checkpoint."""
    from pipeline.push.lineage import read_model_facts

    facts = read_model_facts(folder, args.base_model, args.eval, args.license)
    if facts.flavor == "adapter" and not facts.base_id:
        message = f"the adapter's base is a local folder ({facts.base}): pass --base-model owner/name"
        if not args.dry_run:
            raise PushError(message)
        print(f"warning: {message}", file=sys.stderr)
    revisions = [stage_main(args, facts, folder, root / "main")]
    if args.checkpoints:
        checkpoints = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir()), key=checkpoint_step)
        revisions += [stage_checkpoint(args, facts, path, root / path.name) for path in checkpoints]
    if facts.flavor == "adapter" and facts.base_id:
        for rev in revisions:
            point_adapter_at(rev.folder, facts.base_id)
    return revisions


def stage_main(args: argparse.Namespace, facts: ModelFacts, folder: Path, stage: Path) -> Revision:
    from pipeline.push.model_card import model_card

    skip = SKIP["model"] + (("merged/*",) if facts.flavor == "adapter" else ())
    link(folder, stage, select(folder, skip, args.include))
    write_text(
        stage / "README.md", model_card(facts, args.repo_id, prompt_text(facts.teacher), args.dataset_id)
    )
    if facts.eval:  # publish the results file the card quotes, wherever --eval found it
        results = stage / "eval" / "results.json"
        results.unlink(missing_ok=True)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.symlink_to(Path(facts.eval.path).resolve())
    return Revision("main", stage)


def stage_checkpoint(args: argparse.Namespace, facts: ModelFacts, path: Path, stage: Path) -> Revision:
    from pipeline.push.lineage import checkpoint_loss
    from pipeline.push.model_card import checkpoint_card

    link(path, stage, select(path, SKIP["checkpoint"], args.include))
    write_text(stage / "README.md", checkpoint_card(facts, args.repo_id, path.name, *checkpoint_loss(path)))
    return Revision(path.name, stage)


def stage_dataset(args: argparse.Namespace, folder: Path, root: Path) -> list[Revision]:
    from pipeline.push.dataset_card import dataset_card
    from pipeline.push.lineage import read_dataset_facts

    rels = select(folder, SKIP["dataset"], args.include)
    parquet = [PurePosixPath(r) for r in rels if r.endswith(".parquet")]
    if not parquet:
        raise PushError(f"{folder}: no .parquet files to publish (is this a filter output?)")
    data_files = (
        "data/*.parquet" if all(p.parent == PurePosixPath("data") for p in parquet) else "**/*.parquet"
    )
    rev = Revision("main", root / "main")
    link(folder, rev.folder, rels)
    card = dataset_card(
        read_dataset_facts(folder),
        args.repo_id,
        args.license,
        data_files,
        picture="report.png" in rels,
        rejected="rejected.jsonl" in rels,
    )
    write_text(rev.folder / "README.md", card)
    return [rev]


def detect_kind(folder: Path, requested: str | None) -> str:
    if requested:
        return requested
    stage = (read_manifest(folder) or {}).get("stage")
    if stage in ("sft", "kd", "opd") or (stage is None and (folder / "config.json").is_file()):
        return "model"  # a merged/ folder has weights and its manifest in the parent
    if stage == "filter":
        return "dataset"
    raise PushError(
        f"{folder}: cannot tell a model from a dataset (manifest stage: {stage or 'none'}); "
        "push an sft / kd / opd output or a filter output, or pass --kind"
    )


@contextlib.contextmanager
def stage_root(args: argparse.Namespace) -> Iterator[Path]:
    """`--stage-dir` (cleared if we staged there before), a kept temp folder for a dry run, else a temp folder."""
    if args.stage_dir:
        root = Path(args.stage_dir)
        if root.exists() and any(root.iterdir()) and not (root / ".distill-push").exists():
            raise PushError(f"{root}: --stage-dir must be empty or a folder staged by distill push before")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / ".distill-push").touch()
        yield root
    elif args.dry_run:
        yield Path(tempfile.mkdtemp(prefix="distill-push-"))
    else:
        with tempfile.TemporaryDirectory(prefix="distill-push-") as tmp:
            yield Path(tmp)


def size_text(n: int) -> str:
    units = iter(("B", "kB", "MB", "GB", "TB"))
    value, unit = float(n), next(units)
    while value >= 1000:
        value, unit = value / 1000, next(units)
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def print_listing(revisions: list[Revision]) -> None:
    """Each revision's files with their sizes (what `upload_folder` will send)."""
    for rev in revisions:
        print(f"{rev.name}: {len(rev.files)} files, {size_text(sum(s for _, s in rev.files))} ({rev.folder})")
        for rel, size in rev.files:
            print(f"  {size:>12,}  {rel}")


def refuse_secret(revisions: list[Revision], token: str | None) -> None:
    """Redact the staged manifests (config and command line), then stop before any staged file, of any size or
    type, would publish a secret (pipeline/redact.py)."""
    from pipeline.redact import find_secret, redact_json_file

    for rev in revisions:
        for rel, _ in rev.files:
            path = rev.folder / rel
            if path.name == "manifest.json":
                redact_json_file(path, token)  # a copy replaces the link: the user's file is left as it is
            found = find_secret(path, token)
            if found:
                raise PushError(f"{path.resolve()}: {found}; remove it before pushing")
