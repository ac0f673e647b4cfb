"""Teacher logprobs laid out along tokenized examples, and batched beside them.

The filter's dataset stores, per sample, the teacher's token ids and top-k ids / logprobs for the completion's
tokens. After TRL tokenizes an example (prompt + completion through the chat template, labels -100 outside
the completion), the supervised tokens must be exactly those stored ids: same tokenizer, same text. The
top-k rows are then written at the supervised positions of per-token columns as long as `input_ids`, so TRL's
packing and our collator move them exactly as they move the tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.errors import UserError


class AlignmentError(UserError, ValueError):
    """Stored teacher token ids that are not the student's tokens of the completion."""


def align_row(row: dict[str, Any], max_length: int | None, tokenizer: Any) -> dict[str, Any]:
    labels = np.asarray(row["labels"])
    positions = np.flatnonzero(labels != -100)
    supervised = labels[positions]
    stored = np.asarray(row["teacher_token_ids"])
    n = len(supervised)
    truncated = max_length is not None and len(row["input_ids"]) >= max_length and n < len(stored)
    if not ((n == len(stored) or truncated) and np.array_equal(supervised, stored[:n])):
        raise AlignmentError(describe_mismatch(row.get("id"), supervised, stored, tokenizer))

    topk_ids = np.asarray(row["teacher_topk_ids"], dtype=np.int32)[: len(positions)]
    topk_lps = np.asarray(row["teacher_topk_logprobs"], dtype=np.float32)[: len(positions)]
    ids = np.zeros((len(labels), topk_ids.shape[1]), dtype=np.int32)
    lps = np.zeros((len(labels), topk_ids.shape[1]), dtype=np.float32)
    ids[positions], lps[positions] = topk_ids, topk_lps
    return {"teacher_topk_ids": ids, "teacher_topk_logprobs": lps}


def describe_mismatch(sample_id: Any, supervised: np.ndarray, stored: np.ndarray, tokenizer: Any) -> str:
    n = min(len(supervised), len(stored))
    first = next((i for i in range(n) if supervised[i] != stored[i]), n)
    show = lambda ids: repr(tokenizer.decode(ids[max(0, first - 3) : first + 3].tolist()))  # noqa: E731
    return (
        f"sample {sample_id}: the stored teacher token ids differ from the student's tokenization of the "
        f"completion at token {first} (student {len(supervised)} tokens, teacher {len(stored)}; student "
        f"{show(supervised)} vs teacher {show(stored)}). The teacher must share the student's tokenizer and "
        "the completion must be the generated text unchanged; for a teacher with another tokenizer use TRL's "
        "GOLD trainer (trl.experimental.gold, ULD) or SFT"
    )


def cut_by_length(row: dict[str, Any], special_ids: set[int]) -> bool:
    """The teacher hit its token budget: its stored ids are the student's supervised tokens without the
    end-of-turn token(s) the chat template closes every assistant turn with. Training on it would teach the
    student to stop mid-thought, and the teacher has no logprobs for the added end: such rows are dropped."""
    supervised = [t for t in row["labels"] if t != -100]
    stored = list(row["teacher_token_ids"])
    n = len(stored)
    return len(supervised) > n and supervised[:n] == stored and supervised[n] in special_ids


def align_teacher(tokenized: Any, max_length: int | None, tokenizer: Any) -> tuple[Any, dict[str, int]]:
    """Per-token teacher columns for every example, and the rows dropped per reason: without stored logprobs
    (`no_teacher_logprobs`), or cut by the teacher's token budget (`truncated`, see `cut_by_length`)."""
    import logging

    dropped: dict[str, int] = {}
    special = set(tokenizer.all_special_ids)
    for reason, keep in (
        ("no_teacher_logprobs", lambda r: r["teacher_token_ids"] is not None),
        ("truncated", lambda r: not cut_by_length(r, special)),
    ):
        before = len(tokenized)
        tokenized = tokenized.filter(keep, desc=f"Dropping {reason}")
        if len(tokenized) < before:
            dropped[reason] = before - len(tokenized)
            logging.getLogger("distill.kd").warning("%d examples dropped: %s", dropped[reason], reason)
    keep = ["input_ids", "labels", "teacher_topk_ids", "teacher_topk_logprobs"]
    if len(tokenized) == 0:
        raise AlignmentError(f"no example is left to distil from (dropped: {dropped})")
    aligned = tokenized.map(
        align_row,
        fn_kwargs={"max_length": max_length, "tokenizer": tokenizer},
        remove_columns=[c for c in tokenized.column_names if c not in keep],
        desc="Aligning teacher",
    )
    return aligned, dropped


class KDCollator:
    """TRL's collator for the tokens, and the same padding (or padding-free flattening) for the teacher columns."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "teacher_topk_ids" not in examples[0]:
            return self.base(examples)
        ids = [torch.as_tensor(np.asarray(e.pop("teacher_topk_ids")), dtype=torch.long) for e in examples]
        lps = [
            torch.as_tensor(np.asarray(e.pop("teacher_topk_logprobs")), dtype=torch.float32) for e in examples
        ]
        batch = self.base(examples)
        width = batch["input_ids"].shape[1]
        if getattr(self.base, "padding_free", False):
            ids, lps = [torch.cat(ids)], [torch.cat(lps)]
        batch["teacher_topk_ids"] = torch.stack([pad_to(t, width) for t in ids])
        batch["teacher_topk_logprobs"] = torch.stack([pad_to(t, width) for t in lps])
        return batch


def pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad a [L, k] tensor with zeros to [width, k] (TRL pads tokens on the right)."""
    return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[0]))
