"""The private TRL members our trainers override or read, and the start-up check that the installed TRL has them.

    require_members("OPDTrainer", trl.DistillationTrainer, OPD_METHODS)      # before the trainer is built
    require_members("OPDTrainer", trl.DistillationTrainer, {}, OPD_ATTRIBUTES, trainer)  # right after __init__

TRL changes its private members between minor versions without notice. An override TRL no longer calls would
silently train with TRL's default behaviour (e.g. the wrong teacher), and a renamed attribute would fail mid-run,
after hours of rollouts. So pyproject.toml pins the TRL range the tests ran on (`TESTED_TRL`), and a different
TRL lacking one of these members (or taking other parameters) is refused at start in one line.
"""

from __future__ import annotations

import inspect
from typing import Any

from pipeline.errors import UserError

TESTED_TRL = ">=1.16,<1.17"
"""The TRL versions the trainers were tested with: pyproject.toml's range (tests/train/test_trl_internals.py)."""

OPD_METHODS: dict[str, tuple[str, ...]] = {
    "_tokenize_prompts": ("prompts",),
    "_generate": ("prompts",),
    "_generate_and_score_completions": ("inputs",),
    "_compute_loss": ("unwrapped_student", "inputs", "num_items_in_batch"),
    "_get_last_hidden_state": ("unwrapped_model", "input_ids", "attention_mask", "logits_to_keep"),
    "training_step": ("model", "inputs", "num_items_in_batch"),
}
"""trl.DistillationTrainer methods OPDTrainer overrides or calls -> the leading parameters it passes."""
OPD_ATTRIBUTES = ("_tokenizer", "_metrics", "_step", "temperature", "beta")
"""Attributes DistillationTrainer.__init__ sets that OPDTrainer reads."""

KD_METHODS: dict[str, tuple[str, ...]] = {
    "_prepare_dataset": ("dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name"),
    "_set_signature_columns_if_needed": (),
    "compute_loss": ("model", "inputs", "return_outputs", "num_items_in_batch"),
}
"""trl.SFTTrainer methods KDTrainer overrides -> their parameters."""
KD_ATTRIBUTES = ("_metrics",)
"""Attributes SFTTrainer.__init__ sets that KDTrainer reads (`_signature_columns` is set by the method above)."""


def require_members(
    trainer: str,
    base: type,
    methods: dict[str, tuple[str, ...]],
    attributes: tuple[str, ...] = (),
    instance: Any = None,
) -> None:
    """Refuse a TRL whose `base` lacks a method (or its leading parameters) or, on `instance`, an attribute."""
    for name, params in methods.items():
        method = getattr(base, name, None)
        if not callable(method):
            _refuse(trainer, base, f"no method '{name}'")
        found = [p for p in inspect.signature(method).parameters if p != "self"]
        if tuple(found[: len(params)]) != params:
            _refuse(trainer, base, f"'{name}' takes ({', '.join(found)}), not ({', '.join(params)})")
    for name in attributes:
        if instance is not None and not hasattr(instance, name):
            _refuse(trainer, base, f"no attribute '{name}' after __init__")


def _refuse(trainer: str, base: type, what: str) -> None:
    import trl

    raise UserError(
        f"TRL {trl.__version__}: {base.__module__}.{base.__qualname__} has {what}, which {trainer} relies on",
        hint=f"install the TRL the trainers were tested with: pip install 'trl{TESTED_TRL}'",
    )
