"""Relation-based distillation (`kd.relations`): what the teacher knows about how positions relate, matched
without any projection, so widths and head counts may differ between student and teacher.

- `attention` (MiniLM-v2, Wang et al. 2021): at a mapped pair of layers, the query (key, value) vectors of every
  position, split into `heads` relation heads of equal size whatever the models' own head counts, give per head
  a relation R = softmax(X X^T / sqrt(d_r)) over positions; the loss is KL(R_teacher || R_student) per query
  position and head, averaged. The vectors are the outputs of each block's `q_proj` / `k_proj` / `v_proj`
  (before rotary embedding), read by forward hooks: the models keep their own attention kernel (sdpa, flash),
  no eager attention or `output_attentions` is needed.
- `gram` (similarity-preserving KD, Tung & Mori 2019): at mapped hidden states, the cosine-similarity matrix
  between positions, G = normalise(H) normalise(H)^T; the loss is the mean squared difference of G.

Pairs are causal and within one sequence (position j <= i of the same packed sequence, padding left out), as
the models' own attention sees them. Both losses are computed `chunk_size` query rows at a time under activation
checkpointing, so no [positions x positions] relation tensor exists for a whole batch.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from pipeline.train.losses import divergence

PROJECTIONS = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn$")


def segments(inputs: dict[str, Any]) -> torch.Tensor:
    """Which sequence each position belongs to [B, L] (packed rows restart position_ids at 0), -1 for padding."""
    ids = inputs["input_ids"]
    if inputs.get("position_ids") is not None:
        seg = (inputs["position_ids"] == 0).long().cumsum(-1)
    else:
        seg = torch.zeros_like(ids)
    mask = inputs.get("attention_mask")
    return torch.where(mask.bool(), seg, -1) if mask is not None else seg


def _pairs(seg: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """[B, c, L]: query rows a:b may relate to column j (same sequence, j <= i, neither is padding)."""
    rows = seg[:, a:b, None]
    causal = torch.arange(a, a + rows.shape[1], device=seg.device)[:, None] >= torch.arange(
        seg.shape[1], device=seg.device
    )
    return (rows == seg[:, None, :]) & (rows >= 0) & causal


def _relation_logp(x: torch.Tensor, a: int, b: int, heads: int, allowed: torch.Tensor) -> torch.Tensor:
    """log softmax(X_r[a:b] X_r^T / sqrt(d_r)) per relation head [B, R, c, L]; columns not `allowed` are -inf."""
    batch, length, width = x.shape
    xr = x.float().view(batch, length, heads, width // heads).transpose(1, 2)
    scores = xr[:, :, a:b] @ xr.transpose(-1, -2) / math.sqrt(width // heads)
    return torch.log_softmax(scores.masked_fill(~allowed[:, None], float("-inf")), -1)


def _attention_chunk(s: torch.Tensor, t: torch.Tensor, seg: torch.Tensor, a: int, b: int, heads: int):
    pairs = _pairs(seg, a, b)
    rows = pairs.any(-1)  # padding rows relate to nothing: left out (and kept finite)
    allowed = pairs | ~rows[..., None]
    kl = divergence(
        _relation_logp(t, a, b, heads, allowed).detach(),
        _relation_logp(s, a, b, heads, allowed),
        "forward_kl",
    )
    return torch.stack([(kl * rows[:, None]).sum(), rows.sum().float() * heads])


def attention_relation_loss(
    student: torch.Tensor, teacher: torch.Tensor, seg: torch.Tensor, heads: int, chunk_size: int = 256
) -> torch.Tensor:
    """Mean KL(teacher relation || student relation) over query positions and relation heads, from one layer's
    vectors [B, L, D_s] and [B, L, D_t] (D_s and D_t divisible by `heads`)."""
    total = torch.zeros(2, device=student.device)
    for a in range(0, student.shape[1], chunk_size):
        b = min(a + chunk_size, student.shape[1])
        total = total + checkpoint(_attention_chunk, student, teacher, seg, a, b, heads, use_reentrant=False)
    return total[0] / total[1].clamp(min=1)


def _gram_chunk(s: torch.Tensor, t: torch.Tensor, seg: torch.Tensor, a: int, b: int):
    pairs = _pairs(seg, a, b)
    sn, tn = (torch.nn.functional.normalize(x.float(), dim=-1) for x in (s, t))
    diff = (sn[:, a:b] @ sn.transpose(1, 2) - (tn[:, a:b] @ tn.transpose(1, 2)).detach()).pow(2)
    return torch.stack([(diff * pairs).sum(), pairs.sum().float()])


def gram_relation_loss(
    student: torch.Tensor, teacher: torch.Tensor, seg: torch.Tensor, chunk_size: int = 256
) -> torch.Tensor:
    """Mean squared difference of the cosine-similarity matrices of two hidden states [B, L, H_s], [B, L, H_t]."""
    total = torch.zeros(2, device=student.device)
    for a in range(0, student.shape[1], chunk_size):
        b = min(a + chunk_size, student.shape[1])
        total = total + checkpoint(_gram_chunk, student, teacher, seg, a, b, use_reentrant=False)
    return total[0] / total[1].clamp(min=1)


class Taps:
    """Forward hooks keeping the q/k/v projection outputs of chosen blocks (1-based), only while armed: a
    recomputation in backward (gradient checkpointing) must not overwrite what the loss was built from."""

    def __init__(self, model: torch.nn.Module, blocks: set[int], vectors: list[str]) -> None:
        self.armed, self.seen = False, {}
        found = {int(m.group(1)) + 1: mod for name, mod in model.named_modules() if (m := BLOCK.search(name))}
        for block in blocks:
            for vector in vectors:
                proj = getattr(found.get(block), PROJECTIONS[vector], None)
                if proj is None:
                    raise ValueError(
                        f"block {block} has no self_attn.{PROJECTIONS[vector]} to read {vector}s from"
                    )
                proj.register_forward_hook(self._keeper((block, vector)))

    def _keeper(self, key: tuple[int, str]):
        def keep(module: Any, args: Any, output: torch.Tensor) -> None:
            if self.armed:
                self.seen[key] = output

        return keep


class Relations:
    """The kd trainer's relation term: arm before both forwards, then `loss` (which disarms)."""

    def __init__(
        self, settings: Any, student: torch.nn.Module, teacher: torch.nn.Module, chunk_size: int
    ) -> None:
        self.settings, self.chunk_size = settings, chunk_size
        self.map = {int(s): int(t) for s, t in settings.layers.items()}
        self.taps: tuple[Taps, Taps] | None = None
        if settings.kind == "attention":
            self.taps = (Taps(student, set(self.map), settings.vectors),
                         Taps(teacher, set(self.map.values()), settings.vectors))  # fmt: skip

    def arm(self) -> None:
        for tap in self.taps or ():
            tap.armed, tap.seen = True, {}

    def loss(self, s_states: tuple, t_states: tuple, inputs: dict[str, Any]) -> torch.Tensor:
        seg = segments(inputs)
        if self.taps is None:
            parts = [
                gram_relation_loss(s_states[s], t_states[t], seg, self.chunk_size)
                for s, t in self.map.items()
            ]
        else:
            student, teacher = self.taps
            parts = [
                attention_relation_loss(
                    student.seen[(s, v)], teacher.seen[(t, v)], seg, self.settings.heads, self.chunk_size
                )
                for s, t in self.map.items()
                for v in self.settings.vectors
            ]
            for tap in self.taps:
                tap.armed, tap.seen = False, {}
        return torch.stack(parts).mean()


def check_layer_maps(kd: Any, student_config: Any, teacher_config: Any) -> None:
    """`kd.hidden.layers` and `kd.relations.layers` inside both models, and relation heads that divide every
    vector's width; a ValueError naming the recipe field, raised before the output folder is touched."""
    from pipeline.errors import UserError

    s_cfg, t_cfg = student_config.get_text_config(), teacher_config.get_text_config()
    for block, first in (("hidden", 0), ("relations", 1 if kd.relations.kind == "attention" else 0)):
        settings = getattr(kd, block)
        if not settings.weight:
            continue
        for s, t in settings.layers.items():
            for who, layer, cfg in (("student", s, s_cfg), ("teacher", t, t_cfg)):
                n = cfg.num_hidden_layers
                if not (str(layer).lstrip("-").isdigit() and first <= int(layer) <= n):
                    raise UserError(
                        f"{who} layer {layer} (mapped {s} -> {t}) is outside the {who}'s {first}..{n}",
                        field=f"kd.{block}.layers",
                        hint=f"map layers that exist in both models (this {who} has {n} blocks)",
                    )
    if kd.relations.weight and kd.relations.kind == "attention":
        for who, cfg in (("student", s_cfg), ("teacher", t_cfg)):
            for vector in kd.relations.vectors:
                width = _width(cfg, vector)
                if width % kd.relations.heads:
                    raise UserError(
                        f"the {who}'s {vector} vectors are {width} wide, not divisible into {kd.relations.heads} heads",
                        field="kd.relations.heads",
                        hint="choose a number of relation heads that divides both models' query, key and value widths",
                    )


def _width(cfg: Any, vector: str) -> int:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads = (
        cfg.num_attention_heads
        if vector == "query"
        else getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    )
    return heads * head_dim
