"""The kd stage: logit-level distillation from stored top-k teacher logprobs or a live teacher.

    distill kd --config recipes/students/qwen2.5-1.5b/kd.yaml [kd.temperature=2.0 ...]

The stage reads and checks its inputs as sft does, loads the online teacher (same tokenizer only), and trains
with `KDTrainer` (pipeline/train/kd/trainer.py); the sft stage's build, relaunch and save do the rest.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import ConfigError
from pipeline.train.heads import refuse_sharded_heads
from pipeline.train.kd.config import KDStageConfig
from pipeline.train.kd.trainer import KDTrainer


def online_teachers(cfg: KDStageConfig) -> list[tuple[str, str]]:
    """(recipe field, model) of each online teacher: kd.teacher_model, or every kd.teachers entry."""
    if cfg.kd.teacher != "online":
        return []
    if cfg.kd.teachers:
        return [(f"kd.teachers[{i}].model", t.model) for i, t in enumerate(cfg.kd.teachers)]
    return [("kd.teacher_model", cfg.kd.teacher_model)]


def check_teacher_tokenizer(cfg: KDStageConfig, student_tokenizer: Any, field: str, model: str) -> None:
    """Refuse a teacher whose tokenizer differs from the student's (one line naming its recipe field). A frozen
    copy of the student (self-distillation) reads the recipe's tokenizer, as the student does."""
    from transformers import AutoTokenizer

    if cfg.kd.self_distill and model == cfg.model:
        return
    if AutoTokenizer.from_pretrained(model).get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(
            f"field '{field}': the teacher {model} and the student {cfg.model} use different tokenizers: logit KD "
            "compares distributions over the same token ids. For cross-tokenizer distillation use TRL's "
            "GOLD trainer (trl.experimental.gold, Universal Logit Distillation), or SFT on the teacher's text.",
            key=field,
        )


def load_teacher(cfg: KDStageConfig, student_tokenizer: Any) -> Any:
    """The online teacher, refusing one whose tokenizer differs from the student's; with kd.teachers, all of them
    as one `MixedTeacher` whose distribution is their weighted mixture (pipeline/train/kd/fusion.py)."""
    from transformers import AutoModelForCausalLM

    init = dict(cfg.trainer.get("model_init_kwargs") or {})
    loaded = []
    for field, model in online_teachers(cfg):
        check_teacher_tokenizer(cfg, student_tokenizer, field, model)
        loaded.append(AutoModelForCausalLM.from_pretrained(model, **init))
    if not cfg.kd.teachers:
        return loaded[0]
    from pipeline.train.kd.fusion import MixedTeacher, weights

    return MixedTeacher(loaded, weights(cfg.kd))


def run(cfg: KDStageConfig, args: Any = None) -> int:
    from pipeline.preflight import load_tokenizer
    from pipeline.train.launch import release_output, settled_elsewhere
    from pipeline.train.sft.stage import check_inputs, train_and_save

    check_inputs(cfg, args, "kd")
    check_own_models(cfg)
    check_teachers(cfg, args)
    if (status := settled_elsewhere(cfg, args, "kd")) is not None:
        return status
    teacher = load_teacher(cfg, load_tokenizer(cfg)) if cfg.kd.teacher == "online" else None
    trainer, dataset = build_kd_trainer(cfg, teacher)
    refuse_sharded_heads(trainer)
    try:
        return train_and_save(cfg, trainer, dataset, "kd")
    finally:
        release_output(cfg.output)


def check_own_models(cfg: KDStageConfig) -> None:
    """Self-distillation's teacher and mutual learning's peer, checked before any weights load."""
    if cfg.kd.self_distill:
        from pipeline.train.self_distill import check_own_model

        check_own_model(cfg, cfg.kd.teacher_model, None, "kd.teacher_model")
    if cfg.kd.mutual.peer:
        from pipeline.train.kd.mutual import check_peer

        check_peer(cfg)


def check_teachers(cfg: KDStageConfig, args: Any = None) -> None:
    """Before any model loads or the output is touched: every fused teacher exists (its scores are a complete
    generate output of the student's tokenizer), and layer maps lie inside both models."""
    from transformers import AutoConfig

    from pipeline import preflight
    from pipeline.handoff import require_complete
    from pipeline.train.kd.fusion import check_stored_tokenizers
    from pipeline.train.relations import check_layer_maps

    kd, allow = cfg.kd, getattr(args, "allow_incomplete", False)
    for i, t in enumerate(kd.teachers):
        if t.scores is not None:
            require_complete(t.scores, "generate", allow_incomplete=allow, field=f"kd.teachers[{i}].scores")
    tokenizer = preflight.load_tokenizer(cfg) if kd.teachers or kd.teacher == "online" else None
    for field, model in online_teachers(cfg):
        preflight.check_model(model, field)
        check_teacher_tokenizer(cfg, tokenizer, field, model)
    if any(t.scores for t in kd.teachers):
        check_stored_tokenizers(kd, tokenizer)
    if kd.teacher == "online" and (kd.hidden.weight or kd.relations.weight):
        teacher = kd.teacher_model or kd.teachers[0].model
        student = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision, **cfg.model_config)
        check_layer_maps(kd, student, AutoConfig.from_pretrained(teacher))


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
