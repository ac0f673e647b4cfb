"""The kd stage: logit-level distillation from stored top-k teacher logprobs or a live teacher.

    distill kd --config recipes/students/qwen2.5-1.5b/kd.yaml [kd.temperature=2.0 ...]

The stage reads and checks its inputs as sft does, loads the online teacher (same tokenizer only), and trains
with `KDTrainer` (pipeline/train/kd/trainer.py); the sft stage's build, relaunch and save do the rest.
"""

from __future__ import annotations

from typing import Any

from pipeline.train.heads import refuse_sharded_heads
from pipeline.train.kd.config import KDStageConfig
from pipeline.train.kd.trainer import KDTrainer


def load_teacher(cfg: KDStageConfig, student_tokenizer: Any) -> Any:
    """The online teacher, refusing one whose tokenizer differs from the student's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    copy = (
        cfg.kd.self_distill and cfg.kd.teacher_model == cfg.model
    )  # reads the recipe's tokenizer, as the student
    t_tok = student_tokenizer if copy else AutoTokenizer.from_pretrained(cfg.kd.teacher_model)
    if t_tok.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError(
            f"the teacher {cfg.kd.teacher_model} and the student {cfg.model} use different tokenizers: logit KD "
            "compares distributions over the same token ids. For cross-tokenizer distillation use TRL's "
            "GOLD trainer (trl.experimental.gold, Universal Logit Distillation), or SFT on the teacher's text."
        )
    init = dict(cfg.trainer.get("model_init_kwargs") or {})
    return AutoModelForCausalLM.from_pretrained(cfg.kd.teacher_model, **init)


def run(cfg: KDStageConfig, args: Any = None) -> int:
    from pipeline.preflight import load_tokenizer
    from pipeline.train.launch import settled_elsewhere
    from pipeline.train.sft.stage import check_inputs, train_and_save

    check_inputs(cfg, args, "kd")
    check_own_models(cfg)
    if (status := settled_elsewhere(cfg, args, "kd")) is not None:
        return status
    teacher = load_teacher(cfg, load_tokenizer(cfg)) if cfg.kd.teacher == "online" else None
    trainer, dataset = build_kd_trainer(cfg, teacher)
    refuse_sharded_heads(trainer)
    return train_and_save(cfg, trainer, dataset, "kd")


def check_own_models(cfg: KDStageConfig) -> None:
    """Self-distillation's teacher and mutual learning's peer, checked before any weights load."""
    if cfg.kd.self_distill:
        from pipeline.train.self_distill import check_own_model

        check_own_model(cfg, cfg.kd.teacher_model, None, "kd.teacher_model")
    if cfg.kd.mutual.peer:
        from pipeline.train.kd.mutual import check_peer

        check_peer(cfg)


def build_kd_trainer(cfg: KDStageConfig, teacher: Any = None) -> tuple[Any, Any]:
    """The sft stage's trainer with KDTrainer, keeping the stored teacher columns when KD reads them."""
    from pipeline.train.data import TEACHER_COLUMNS, TRAIN_COLUMNS
    from pipeline.train.sft.stage import build_trainer

    if cfg.kd.mutual.peer:  # two students: pipeline/train/kd/mutual.py
        from pipeline.train.kd.mutual import build_mutual_trainer

        return build_mutual_trainer(cfg)

    columns = TRAIN_COLUMNS + (TEACHER_COLUMNS if cfg.kd.teacher == "offline" else ())
    return build_trainer(cfg, KDTrainer, columns=columns, kd=cfg.kd, teacher=teacher)


def sidecar_bytes_per_token(k: int) -> int:
    """Stored bytes per completion token: its id and logprob, and k ids (int32) + k logprobs (fp16)."""
    return (k + 1) * (4 + 2)  # int32 id + fp16 logprob, for the token itself and each of the top k
