"""Configuration of the kd stage (`distill kd --config recipes/students/<student>/kd.yaml`).

Everything of the sft stage (student, data, PEFT, `trainer:` = `trl.SFTConfig` verbatim, launch), plus `kd:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.train.sft.config import SFTStageConfig


@dataclass(frozen=True)
class HiddenSettings:
    """Feature-based distillation (FitNets / TinyBERT): match hidden states at mapped layers (online only)."""

    weight: float = 0.0
    """Weight of the hidden-state loss beside the logit loss (0: off)."""
    loss: Literal["mse", "cosine"] = "mse"
    layers: dict[str, int] = field(default_factory=dict)
    """Student layer -> teacher layer, by index into the models' hidden states (0 = embeddings, i = output of
    block i); e.g. `{"1": 2, "2": 4}` for a 2-layer student under a 4-layer teacher. Widths that differ get a
    learned linear projection (trained with the student, never saved into it)."""


@dataclass(frozen=True)
class MutualSettings:
    """Deep Mutual Learning (Zhang et al. 2018): a second student, the peer, trains beside this one on the same
    batches; each adds `weight` x KL(other || itself) towards the other's current, detached distribution to its
    own loss (pipeline/train/kd/mutual.py). Both are saved: the peer in `output`/peer."""

    peer: str | None = None
    """The peer's model (a folder or Hub id with the student's tokenizer; None: off). Under `from_scratch` it is
    initialised from its config with `seed`; under LoRA it gets its own adapter on the same base as the student
    (`model`), or is an adapter folder of that base."""
    weight: float = 1.0
    """Weight of the KL term towards the peer, per supervised token, beside the kd loss."""
    seed: int | None = None
    """Seed of the peer's initialisation (from_scratch weights, LoRA matrices); default: trainer.seed + 1. Two
    peers started identically get identical gradients and never teach each other anything."""

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError("kd.mutual.weight must be > 0")


@dataclass(frozen=True)
class RelationSettings:
    """Relation-based distillation (online only; pipeline/train/relations.py): match how positions relate to each
    other inside the teacher, which needs no projection when widths or head counts differ."""

    weight: float = 0.0
    """Weight of the relation loss beside the logit loss (0: off)."""
    kind: Literal["attention", "gram"] = "attention"
    """attention: MiniLM-v2 self-attention relations (softmax of scaled dot products of the query, key and value
    vectors between positions, KL teacher -> student); gram: cosine-similarity (Gram) matrices of the hidden states
    between positions (similarity-preserving KD), squared error."""
    layers: dict[str, int] = field(default_factory=dict)
    """Student layer -> teacher layer. attention: decoder blocks counted from 1 (block i's self-attention);
    gram: hidden states as in kd.hidden (0 = embeddings, i = output of block i)."""
    vectors: list[Literal["query", "key", "value"]] = field(default_factory=lambda: ["query", "key", "value"])
    """attention: which projections' relations are matched (MiniLM-v2: Q-Q, K-K and V-V)."""
    heads: int = 1
    """attention: relation heads; each vector is split into this many equal parts whatever the models' own head
    counts (it must divide both models' query, key and value widths)."""

    def __post_init__(self) -> None:
        if self.weight < 0 or self.heads < 1 or not self.vectors:
            raise ValueError("kd.relations: weight must be >= 0, heads >= 1 and vectors not empty")


@dataclass(frozen=True)
class FusedTeacher:
    """One of several teachers whose distributions are mixed per token (pipeline/train/kd/fusion.py)."""

    weight: float
    """Its share of the mixture (weights are normalised by their sum, which must be > 0)."""
    model: str | None = None
    """kd.teacher online: the teacher model (a local folder or Hub id with the student's tokenizer)."""
    scores: str | None = None
    """kd.teacher offline: a `distill generate` output of `mode: score` over the training data's samples (its
    top-k sidecars, by sample id); omitted: the training data's own stored top-k."""

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"'weight' must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class KDSettings:
    teacher: Literal["offline", "online"] = "offline"
    """offline: the top-k logprobs stored by generate (its sidecar, carried into the filter's dataset);
    online: `teacher_model` loaded beside the student and run on every batch."""
    teacher_model: str | None = None
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = 0.5
    """JSD interpolation: 0 is forward KL, 1 reverse KL."""
    temperature: float = 1.0
    kd_weight: float = 0.5
    """total = (1 - kd_weight) * CE + kd_weight * KD, both per supervised token."""
    tail: Literal["bucket", "renormalize"] = "bucket"
    """What happens to the probability outside the teacher's stored top-k (see pipeline/train/losses.py)."""
    chunk_size: int = 256
    """Positions whose full-vocabulary logits exist at once: the loss's memory bound (256 x 152k vocab x 4 bytes
    = 156 MB for a Qwen2.5 student)."""

    hidden: HiddenSettings = field(default_factory=HiddenSettings)
    relations: RelationSettings = field(default_factory=RelationSettings)
    teachers: list[FusedTeacher] = field(default_factory=list)
    """Several teachers mixed per token, with weights (multi-teacher fusion; replaces `teacher_model`)."""
    self_distill: bool = False
    """The teacher is the student's own model (online): `teacher_model` an earlier checkpoint or a converged
    model of the same architecture and tokenizer (Born-Again Networks), or, when absent, a frozen copy of the
    student's starting weights (`model`). A teacher of another architecture or tokenizer is refused."""
    mutual: MutualSettings = field(default_factory=MutualSettings)

    def __post_init__(self) -> None:
        from pipeline.train.kd.fusion import check_teachers

        check_teachers(self)
        if self.teacher == "online" and not (self.teacher_model or self.teachers or self.self_distill):
            raise ValueError("kd.teacher online needs kd.teacher_model")
        if self.teacher == "offline" and self.teacher_model:
            raise ValueError("kd.teacher_model is for kd.teacher: online (offline reads the stored logprobs)")
        if not 0 <= self.kd_weight <= 1 or not 0 <= self.beta <= 1:
            raise ValueError("kd.kd_weight and kd.beta must be in [0, 1]")
        if self.temperature <= 0 or self.chunk_size < 1:
            raise ValueError("kd.temperature must be > 0 and kd.chunk_size >= 1")
        if self.hidden.weight and self.teacher != "online":
            raise ValueError("kd.hidden needs the teacher's hidden states: kd.teacher: online")
        if self.hidden.weight and not self.hidden.layers:
            raise ValueError("kd.hidden.layers maps student layers to teacher layers")
        if self.relations.weight and (self.teacher != "online" or not self.relations.layers):
            raise ValueError("kd.relations needs kd.teacher: online and kd.relations.layers")


@dataclass(frozen=True)
class KDStageConfig(SFTStageConfig):
    kd: KDSettings = field(default_factory=KDSettings)
    output: str = "runs/kd"

    def __post_init__(self) -> None:
        super().__post_init__()
        from pipeline.train.self_distill import own_teacher

        object.__setattr__(self, "kd", own_teacher(self))  # self-distillation: the teacher named in full
        if self.kd.mutual.peer and self.kd.teacher == "online":
            raise ValueError(
                "kd.mutual trains two students beside no live teacher (it would hold three models): use "
                "kd.teacher: offline (the stored top-k) or kd.kd_weight: 0 (the peer and the data alone)"
            )
