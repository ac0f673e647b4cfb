"""Multi-teacher fusion: several teachers' next-token distributions mixed, per token, into one KD target.

    kd:
      teacher: offline            # or online, with `model:` entries
      teachers:
        - {weight: 0.7}                              # the training data's own stored top-k
        - {weight: 0.3, scores: runs/score-qwq}      # `distill generate` mode: score over the same samples

The target is the weighted mixture p(v) = sum_i w_i p_i(v) / sum_i w_i (weights >= 0, their sum > 0).

**Top-k teachers** (offline, and opd's scores) give each p_i only on their own top-k set S_i, plus the tail mass
r_i = 1 - sum_{v in S_i} p_i(v) that lies somewhere outside it. The fused target is the union U of the S_i plus
one tail outcome: a token v in U gets sum over the teachers that have v in their top-k of w_i p_i(v); a teacher
that does not have v in its top-k contributes 0 for v (its true p_i(v) is at most its own k-th probability and at
most r_i, but where inside its tail it lies is unknown), and its whole tail mass r_i goes to the fused tail. So
the fused tail is sum_i w_i r_i, the fused mass on U a lower bound of the true mixture's (exact when every S_i
holds U), and the total exactly 1. The kd loss then treats the fused tail as it treats one teacher's
(`kd.tail`: bucket or renormalize, pipeline/train/losses.py). Stored as up to sum_i k_i entries a token: slots
left over (ids shared between teachers) have logprob -inf and count as absent.

**Full-distribution teachers** (kd online) are mixed exactly: `MixedTeacher` runs every teacher on the batch and
its output layer returns log sum_i w_i softmax(logits_i), `kd.chunk_size` positions at a time, so no [tokens x
vocab] tensor of any teacher exists for a whole batch. Teachers must share the student's tokenizer (checked
as for one teacher; offline, each teacher's stored token ids must be the data's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import UserError

KDSettings = Any  # pipeline.train.kd.config.KDSettings (which calls check_teachers: not imported back)


def check_teachers(kd: KDSettings) -> None:
    """The recipe's `kd.teachers`, checked with the rest of `kd:` (ValueError names the field)."""
    if not kd.teachers:
        return
    total = sum(t.weight for t in kd.teachers)
    if not total > 0:
        raise ValueError(
            f"field 'kd.teachers': the weights sum to {total}; give each teacher a weight >= 0, at least one > 0"
        )
    if kd.teacher_model:
        raise ValueError("field 'kd.teacher_model': with kd.teachers, list every teacher there instead")
    for i, t in enumerate(kd.teachers):
        if kd.teacher == "online" and (t.model is None or t.scores is not None):
            raise ValueError(f"field 'kd.teachers[{i}]': kd.teacher online takes each teacher's 'model'")
        if kd.teacher == "offline" and t.model is not None:
            raise ValueError(
                f"field 'kd.teachers[{i}].model': kd.teacher offline reads stored scores ('scores: PATH', or "
                "nothing for the training data's own); use kd.teacher: online to run models"
            )
    if sum(t.scores is None for t in kd.teachers) > 1 and kd.teacher == "offline":
        raise ValueError(
            "field 'kd.teachers': only one entry can be the training data's own top-k (no 'scores')"
        )
    if len(kd.teachers) > 1 and (kd.hidden.weight or kd.relations.weight):
        raise ValueError(
            "field 'kd.teachers': kd.hidden and kd.relations match one teacher's internals; give one teacher"
        )


def weights(kd: KDSettings) -> list[float]:
    total = sum(t.weight for t in kd.teachers)
    return [t.weight / total for t in kd.teachers]


# --- the top-k mixture (offline, opd) ---------------------------------------------------------------------------


def fuse_topk(
    ids: list[torch.Tensor], logprobs: list[torch.Tensor], weights: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix teachers' top-k rows: ids / logprobs [N, k_i] each -> ids, logprobs [N, sum k_i] of the union (module
    docstring); a slot whose fused probability is 0 (an id shared by several teachers leaves one) is -inf.
    Entries with logprob -inf (absent) add nothing."""
    all_ids = torch.cat([x.long() for x in ids], -1)
    mass = torch.cat([w * lp.float().exp() for w, lp in zip(weights, logprobs, strict=True)], -1)
    order = all_ids.argsort(dim=-1, stable=True)
    sorted_ids, sorted_mass = all_ids.gather(-1, order), mass.gather(-1, order)
    starts = torch.ones_like(sorted_ids, dtype=torch.bool)
    starts[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    group = starts.long().cumsum(-1) - 1  # equal ids share a slot
    fused = torch.zeros_like(sorted_mass).scatter_add(-1, group, sorted_mass)
    fused_ids = torch.zeros_like(sorted_ids).scatter(-1, group, sorted_ids)
    return fused_ids, torch.where(fused > 0, fused.log(), fused.new_tensor(float("-inf")))


def fuse_own(logprobs: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The mixture's logprob of one token (each teacher's own logprob of it, which it always returns): exact."""
    return torch.logsumexp(
        torch.stack([lp.float() + math.log(w) for w, lp in zip(weights, logprobs, strict=True) if w > 0]), 0
    )


# --- offline: stored teachers joined by sample id ---------------------------------------------------------------


def fuse_stored(dataset: Any, kd: KDSettings) -> Any:
    """The training rows with `teacher_topk_ids` / `teacher_topk_logprobs` replaced by the fusion of
    `kd.teachers` (the data's own columns and `mode: score` outputs, joined by sample `id`)."""
    from pipeline.records.logprobs import Sidecar

    sidecars = [Sidecar(t.scores) if t.scores else None for t in kd.teachers]
    for i, (t, sidecar) in enumerate(zip(kd.teachers, sidecars, strict=True)):
        if sidecar is not None and len(sidecar) == 0:
            raise UserError(
                f"{t.scores}: no teacher logprobs (logprobs-*.safetensors) in this folder",
                field=f"kd.teachers[{i}].scores",
                hint="point it at a `distill generate` output of mode: score with logprobs: k",
            )
    ws = weights(kd)

    def fuse_row(row: dict[str, Any]) -> dict[str, Any]:
        parts = [_stored(row, sidecar, i, kd) for i, sidecar in enumerate(sidecars)]
        if any(p is None for p in parts):  # the data holds no logprobs for it: left out of KD, counted
            return {"teacher_token_ids": None, "teacher_topk_ids": None, "teacher_topk_logprobs": None}
        ids, lps = fuse_topk(
            [torch.as_tensor(p[1]) for p in parts], [torch.as_tensor(p[2]) for p in parts], ws
        )
        return {"teacher_token_ids": parts[0][0], "teacher_topk_ids": ids.int().numpy(),
                "teacher_topk_logprobs": lps.numpy()}  # fmt: skip

    return dataset.map(fuse_row, desc="Fusing teachers")


def _stored(
    row: dict[str, Any], sidecar: Any, i: int, kd: KDSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(token ids, top-k ids, top-k logprobs) of teacher i for this row; its tokens must be the data's."""
    own = row.get("teacher_token_ids")
    if sidecar is None:
        if own is None:
            return None
        return np.asarray(own), np.asarray(row["teacher_topk_ids"]), np.asarray(row["teacher_topk_logprobs"])
    field = f"kd.teachers[{i}].scores"
    if row["id"] not in sidecar:
        raise UserError(
            f"{kd.teachers[i].scores}: no logprobs of sample {row['id']!r}, which the training data holds",
            field=field,
            hint="score the same generate output the training data was filtered from (generate mode: score)",
        )
    top = sidecar[row["id"]]
    if own is not None and not np.array_equal(np.asarray(own), top.token_ids):
        raise UserError(
            f"{kd.teachers[i].scores}: sample {row['id']!r}: the scored token ids differ from the training "
            "data's: teachers fused together must share the student's tokenizer",
            field=field,
            hint="score the samples with a teacher of the same tokenizer, or distil from it alone",
        )
    return top.token_ids, top.topk_ids, top.topk_logprobs.astype(np.float32)


def check_stored_tokenizers(kd: KDSettings, student_tokenizer: Any) -> None:
    """Before anything loads: each scores folder's teacher (its manifest's model) has the student's vocabulary."""
    import json

    from transformers import AutoTokenizer

    for i, t in enumerate(kd.teachers):
        manifest = Path(t.scores or "") / "manifest.json"
        if not (t.scores and manifest.is_file()):
            continue
        model = (json.loads(manifest.read_text()).get("config") or {}).get("model")
        if not model or not Path(model).is_dir():  # a Hub teacher: its token ids are checked row by row
            continue
        if AutoTokenizer.from_pretrained(model).get_vocab() != student_tokenizer.get_vocab():
            raise UserError(
                f"{t.scores}: scored by {model}, whose tokenizer differs from the student's",
                field=f"kd.teachers[{i}].scores",
                hint="fuse only teachers of the student's tokenizer (for another one: TRL's GOLD trainer)",
            )


# --- online: full distributions mixed exactly ---------------------------------------------------------------------


class MixedHead(torch.nn.Module):
    """Hidden states of every teacher, side by side, -> log of the weighted mixture of their distributions."""

    def __init__(self, teachers: list[Any], weights: list[float]) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(t.get_output_embeddings() for t in teachers)
        self.configs, self.log_w = (
            [t.config for t in teachers],
            [math.log(w) if w > 0 else -math.inf for w in weights],
        )
        self.widths = [t.config.get_text_config().hidden_size for t in teachers]

    @property
    def weight(self) -> torch.Tensor:
        """The smallest teacher vocabulary's output matrix (callers read its row count: the shared range)."""
        return min((h.weight for h in self.heads), key=lambda w: w.shape[0])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        from pipeline.train.heads import output_transform

        vocab = self.weight.shape[0]
        parts, mixed = hidden.split(self.widths, -1), None
        for head, config, log_w, h in zip(self.heads, self.configs, self.log_w, parts, strict=True):
            logp = torch.log_softmax(output_transform(config, head(h)[..., :vocab].float()), -1) + log_w
            mixed = logp if mixed is None else torch.logaddexp(mixed, logp)
        return mixed


class MixedTeacher(torch.nn.Module):
    """Several causal LMs as one teacher for the kd trainer: its hidden states are the teachers' side by side,
    its output layer the mixture (`MixedHead`); `config` has no logit transform (each teacher's is applied)."""

    def __init__(self, teachers: list[Any], weights: list[float]) -> None:
        super().__init__()
        self.teachers = torch.nn.ModuleList(teachers)
        self.head = MixedHead(teachers, weights)
        from transformers import PretrainedConfig

        self.config = PretrainedConfig()  # no logit scale, no soft-capping: MixedHead applied each teacher's

    def get_output_embeddings(self) -> MixedHead:
        return self.head

    def forward(self, **inputs: Any) -> Any:
        from types import SimpleNamespace

        outs = [t(**inputs) for t in self.teachers]
        last = torch.cat([o.hidden_states[-1] for o in outs], -1)
        return SimpleNamespace(hidden_states=(last,))
