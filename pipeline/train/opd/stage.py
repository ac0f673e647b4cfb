"""The opd stage: on-policy distillation. The student answers problems itself; its teacher scores every token it
wrote; the student learns where it went wrong (Agarwal et al. 2024, GKD; Qwen3; Thinking Machines' tinker-cookbook).

    distill opd --config recipes/students/qwen3-1.7b/opd.yaml [trainer.learning_rate=1e-6 ...]

Reads the problems as `generate` does, routes each problem's `source` to its teacher (every source must have
one), checks before any step that each teacher renders the prompt and tokenises text to the student's ids,
trains with `OPDTrainer` (TRL's `DistillationTrainer`, see trainer.py), resuming from the latest checkpoint
made with the same teachers, saves the student, and writes `manifest.json` last with the teachers and costs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import preflight
from pipeline.config import ConfigError, to_dict
from pipeline.prompts import build_messages, load_prompt
from pipeline.records.manifest import write_manifest
from pipeline.records.read import load_problems
from pipeline.records.schema import Problem
from pipeline.train.opd.config import OPDStageConfig
from pipeline.train.opd.privileged import add_teacher_prompts, check_references

log = logging.getLogger("distill.opd")


def run(cfg: OPDStageConfig, args: Any = None) -> int:
    from pipeline.train.launch import claim_output, release_output, settled_elsewhere

    check_inputs(cfg, args)
    if (status := settled_elsewhere(cfg, args, "opd")) is not None:
        return status
    problems = load_problems(cfg.problems)  # every record checked (file, line, field) before anything loads
    check_routes(cfg, problems)
    check_references(cfg, problems)  # privileged teachers: every problem they see has its reference
    check_served_teachers(cfg, problems)  # every replica, before anything is written
    trainer = build_trainer(cfg, problems)  # teachers checked against the student: may still refuse
    try:
        # the first write to the output folder
        last = claim_output(cfg, "opd", trainer.is_world_process_zero())
        return train_and_save(cfg, trainer, last, len(problems))
    finally:
        release_output(cfg.output)


def check_inputs(cfg: OPDStageConfig, args: Any = None) -> None:
    """Before any model loads: DeepSpeed when the recipe uses it, a usable output folder (opd's own, its
    checkpoints made with this student and these teachers), a finished student (a killed sft folder or a
    half-saved checkpoint is refused), and local teachers that exist."""
    from pipeline.handoff import require_trained_model
    from pipeline.train.launch import resume_point

    preflight.check_deepspeed(cfg.launch.accelerate_config, cfg.trainer, "launch.accelerate_config")
    preflight.check_output_folder(cfg.output, stage="opd")
    preflight.check_model(cfg.model, "model", cfg.revision)
    require_trained_model(cfg.model, allow_incomplete=getattr(args, "allow_incomplete", False))
    resume_point(cfg, "opd")
    for key, spec in cfg.flat_teachers().items():
        if spec.model is not None:
            preflight.check_model(spec.model, f"teachers.{key}.model", spec.revision)
        if spec.self_distill:
            from pipeline.train.self_distill import check_own_model

            check_own_model(cfg, spec.model, spec.revision, f"teachers.{key}.model")


def check_routes(cfg: OPDStageConfig, problems: list[Problem]) -> None:
    """Every problem's source maps to a teacher; else one error listing every unmapped source."""
    if not problems:
        raise ConfigError(f"{cfg.problems.describe()}: no problems to practise on", key="problems")
    unmapped = sorted({p.source for p in problems if cfg.teacher_for(p.source) is None})
    if unmapped:
        counts = {s: sum(p.source == s for p in problems) for s in unmapped}
        listed = ", ".join(f"{s or '(empty)'!r} ({n} problems)" for s, n in counts.items())
        raise ConfigError(
            f"field 'teachers': no teacher for source {listed} of {cfg.problems.describe()}; map each "
            f"source to a teacher, or add '*' for every other source (mapped: {', '.join(cfg.teachers)})",
            key="teachers",
        )


def teacher_set(cfg: OPDStageConfig) -> dict[str, str]:
    from pipeline.train.opd.mixture import identities

    return identities(cfg)


def problem_rows(cfg: OPDStageConfig, problems: list[Problem]) -> list[dict[str, Any]]:
    """TRL's conversational prompt column plus what routing, grading and counting need."""
    template = load_prompt(cfg.prompt.template)
    system = load_prompt(cfg.prompt.system) if cfg.prompt.system else None
    return [
        {
            "prompt": build_messages(template, p.problem, system),
            "id": p.id,
            "source": p.source,
            "answer": p.answer or "",
        }
        for p in problems
    ]


def load_tokenizer(cfg: OPDStageConfig) -> Any:
    """The student's tokenizer as every stage loads it, left-padded: rollouts are generated from padded prompts."""
    tokenizer = preflight.load_tokenizer(cfg)
    tokenizer.padding_side = "left"
    return tokenizer


def student_vocab(cfg: OPDStageConfig) -> int:
    """How many token ids the student can sample (its output layer's rows, padding included)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(cfg.model, revision=cfg.revision).get_text_config().vocab_size


def check_served_teachers(cfg: OPDStageConfig, problems: list[Problem]) -> None:
    """Every replica of every served teacher answers, can score every id the student samples, and (check_template)
    tokenises as the student; cheap, so it runs before the output folder is touched."""
    from pipeline.train.opd.teachers import build_teachers

    specs = {key: spec for key, spec in cfg.flat_teachers().items() if spec.server is not None}
    if not specs:
        return
    vocab, tokenizer, rows = student_vocab(cfg), load_tokenizer(cfg), problem_rows(cfg, problems)
    for key, teacher in build_teachers(specs, {}, "cpu", cfg.opd.chunk_size).items():
        for replica in teacher.each_replica():
            replica.check_ready(vocab)
            if cfg.check_template:
                check_teachers_tokenize_alike(cfg, tokenizer, {key: replica}, rows)


def check_teachers_tokenize_alike(
    cfg: OPDStageConfig, tokenizer: Any, teachers: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """Each teacher, on a problem routed to it, must give the student's ids for the prompt and a completion."""
    from pipeline.train.opd.teachers import check_same_tokens

    for key, teacher in teachers.items():
        row = next((r for r in rows if cfg.teacher_for(r["source"]) == key.split("[")[0]), rows[0])
        user = row["prompt"][-1]["content"]
        completion = f"<think>\n{user}\n</think>\n\n\\boxed{{{row['answer'] or 0}}}"
        try:
            check_same_tokens(tokenizer, teacher, row["prompt"], completion, cfg.prompt.think_prefix)
        except ConfigError as e:  # named as the recipe field of this teacher (a mixture's member: `src[i]`)
            spec = cfg.flat_teachers().get(key)
            field = f"teachers.{key}.{'server' if spec is not None and spec.server is not None else 'model'}"
            raise ConfigError(f"field '{field}': {e.message}", key=field) from e


def build_trainer(cfg: OPDStageConfig, problems: list[Problem]) -> Any:
    from datasets import Dataset
    from trl import DistillationConfig

    from pipeline.train.models import lora_config
    from pipeline.train.opd.mixture import mix
    from pipeline.train.opd.teachers import build_teachers
    from pipeline.train.opd.trainer import OPDTrainer

    args = DistillationConfig(**cfg.distillation_config_kwargs())
    if cfg.revision:
        args.model_init_kwargs = {**(args.model_init_kwargs or {}), "revision": cfg.revision}
    tokenizer = load_tokenizer(cfg)
    rows = add_teacher_prompts(cfg, problems, problem_rows(cfg, problems))
    template = Path(cfg.prompt.chat_template).read_text() if cfg.prompt.chat_template else None
    init = dict(args.teacher_model_init_kwargs or {})
    flat = cfg.flat_teachers()
    teachers = build_teachers(flat, init, args.device, cfg.opd.chunk_size, template)
    local = {key: t for key, t in teachers.items() if flat[key].model is not None}  # served: checked
    if cfg.check_template:  # first: another tokenizer is the likelier cause of a smaller vocabulary
        check_teachers_tokenize_alike(cfg, tokenizer, local, rows)
    for teacher in local.values():
        teacher.check_ready(student_vocab(cfg))
    return OPDTrainer(
        model=cfg.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        opd=cfg.opd,
        teachers=mix(cfg, teachers),  # a source with several teachers: one scorer mixing them
        route=cfg.teacher_for,
        think_prefix=cfg.prompt.think_prefix,
    )


def last_logged(history: list[dict[str, Any]], key: str) -> Any:
    return next((e[key] for e in reversed(history) if e.get(key) is not None), None)


def train_and_save(cfg: OPDStageConfig, trainer: Any, last: str | None, problems: int) -> int:
    from pipeline.faults import arm_checkpoint_saves
    from pipeline.train.progress import attach_progress  # readable progress lines in a file or pipe (#20)

    arm_checkpoint_saves()
    attach_progress(trainer, "opd")
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(cfg.output)
    if not trainer.is_world_process_zero():
        return 0
    history, a = trainer.state.log_history, trainer.args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
    counts = {
        "problems": problems,
        "world_size": a.world_size,
        "global_step": trainer.state.global_step,
        "rollouts": trainer.state.global_step * per_step,
        "problems_seen": last_logged(history, "opd/problems_seen"),
        "teacher_tokens_scored": last_logged(history, "opd/teacher_tokens"),
        "train_runtime_s": round(result.metrics.get("train_runtime") or 0.0, 2),
        "final_loss": last_logged(history, "loss"),
        "final_reverse_kl": last_logged(history, "opd/reverse_kl"),
        "final_correct": last_logged(history, "opd/correct"),
    }
    write_manifest(
        cfg.output,
        "opd",
        to_dict(cfg),
        inputs=[cfg.problems.describe()],
        counts=counts,
        resumed_from=last,
        teachers=teacher_set(cfg),
        method=cfg.peft.method,
        log_history=history,
    )
    log.info("opd done: %s", counts)
    return 0
