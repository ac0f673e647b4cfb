"""How a trained model was made, in a phrase, read from its stage's manifest: what model cards (push) and eval's
results say beside the stage (self-distillation, privileged context, mutual learning), so that a model made
by one of these methods is never described as plain KD or OPD from some other teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.train.self_distill import describe


def method_name(manifest: dict[str, Any] | None) -> str | None:
    """The method's phrase (e.g. "self-distillation (privileged context: the teacher saw each problem's
    `answer`)", "mutual learning with a peer started from `runs/x`"), or None for plain sft / kd / opd."""
    if not manifest:
        return None
    config, stage = manifest.get("config") or {}, manifest.get("stage")
    if stage == "kd":
        return _kd(config)
    if stage == "opd":
        return _opd(config)
    return None


def _kd(config: dict[str, Any]) -> str | None:
    kd = config.get("kd") or {}
    parts = []
    if kd.get("self_distill"):
        parts.append(describe(str(kd.get("teacher_model")), str(config.get("model"))))
    if peer := (kd.get("mutual") or {}).get("peer"):
        parts.append(f"mutual learning with a peer started from `{peer}` (two students trained together)")
    return "; ".join(parts) or None


def _opd(config: dict[str, Any]) -> str | None:
    parts = []
    for key, spec in (config.get("teachers") or {}).items():
        if isinstance(spec, list):  # a mixture (model_card names its members): no self or privileged member
            continue
        words = describe(str(spec.get("model")), str(config.get("model"))) if spec.get("self_distill") else ""
        if privileged := spec.get("privileged"):
            seen = f"privileged context: the teacher saw each problem's `{privileged.get('reference')}`"
            words = f"{words} ({seen})" if words else seen
        if words:
            parts.append(words + ("" if key == "*" else f" for source {key}"))
    return "; ".join(parts) or None


def model_method(path: str | Path) -> str | None:
    """The method phrase of a local model folder (its manifest, or its parent's for `merged/`), else None."""
    for folder in (Path(path), Path(path).parent):
        file = folder / "manifest.json"
        if file.is_file():
            return method_name(json.loads(file.read_text()))
    return None
