"""Self-distillation: the teacher is the student's own model, in kd (online) and opd alike.

    kd:  {teacher: online, self_distill: true}                         # a frozen copy of the starting weights
    kd:  {teacher: online, self_distill: true, teacher_model: runs/x}  # Born-Again: an earlier, converged model
    teachers: {"*": {self_distill: true, privileged: {reference: answer}}}   # opd (pipeline/train/opd/privileged.py)

A self-distillation teacher without a path is the student's starting model (`model` at `revision`), loaded
once more and frozen (TRL SDFT's `teacher_model_kind: base`; tinker-cookbook's teacher = the student's base at a
checkpoint). With a path it must be the same architecture with the same tokenizer: anything else is plain KD
from another model and is refused, so a recipe that says "self" cannot silently distil from a stranger.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.errors import UserError

SHAPE = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)
"""What makes two checkpoints the same model: the architecture and every size of it."""


def own_teacher(cfg: Any) -> Any:
    """The kd block with a self-distillation teacher named in full (the student's `model` when none is given)."""
    kd = cfg.kd
    if not kd.self_distill:
        return kd
    if kd.teacher != "online":
        raise ValueError("kd.self_distill loads the student's own model beside it: set kd.teacher: online")
    if kd.teacher_model:
        return kd
    if cfg.from_scratch:
        raise ValueError(
            "kd.self_distill without kd.teacher_model copies the student's starting weights, which from_scratch "
            "discards (an untrained copy teaches nothing): give kd.teacher_model, an earlier converged model "
            "of the same architecture (Born-Again Networks)"
        )
    return replace(kd, teacher_model=cfg.model)


def check_own_model(cfg: Any, teacher: str, teacher_revision: str | None, field: str) -> None:
    """Refuse a self-distillation teacher that is not the student's model (`cfg.model` with its `tokenizer`):
    another architecture or size, or another tokenizer. Reads two configs and two tokenizers, no weights."""
    from transformers import AutoConfig, AutoTokenizer

    from pipeline.preflight import load_tokenizer

    student, student_revision = cfg.model, cfg.revision
    if (teacher, teacher_revision) == (student, student_revision):
        return  # a frozen copy of the starting weights, read with the recipe's tokenizer as the student is

    s_cfg = AutoConfig.from_pretrained(student, revision=student_revision).get_text_config()
    t_cfg = AutoConfig.from_pretrained(teacher, revision=teacher_revision).get_text_config()
    differ = [
        f"{key} {getattr(t_cfg, key, None)} (student {getattr(s_cfg, key, None)})"
        for key in SHAPE
        if getattr(s_cfg, key, None) != getattr(t_cfg, key, None)
    ]
    if not differ:
        t_tok = AutoTokenizer.from_pretrained(teacher, revision=teacher_revision)
        same = load_tokenizer(cfg).get_vocab() == t_tok.get_vocab()
        differ = [] if same else ["its tokenizer's vocabulary"]
    if differ:
        raise UserError(
            f"self-distillation teacher {teacher} is not the student's own model ({student}): it differs in "
            + ", ".join(differ),
            field=field,
            hint="give an earlier checkpoint or a converged model of the student's architecture and tokenizer, "
            "or turn self_distill off to distil from another model",
        )


def describe(teacher: str, student: str) -> str:
    """How a card names a self-distillation teacher."""
    if teacher == student:
        return f"self-distillation from a frozen copy of its starting weights (`{student}`)"
    return f"self-distillation (born-again) from `{teacher}`, an earlier model of its own architecture"
