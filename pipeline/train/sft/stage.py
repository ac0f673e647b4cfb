"""The sft stage: R1's distillation method, supervised fine-tuning of a student on the teacher's traces.

    distill sft --config recipes/students/qwen2.5-math-7b/sft.yaml [trainer.learning_rate=1e-5 ...]

Loads the data mixture, builds TRL's SFTTrainer (full, LoRA or QLoRA), checks the chat template and EOS on one
example exactly as TRL renders it, trains (resuming from the latest checkpoint), saves the student (or its
adapter, and with `merge: true` a merged model under `merged/`), and writes `manifest.json` last with the
final loss and the trained supervised tokens/s. With `launch.accelerate_config` it relaunches itself under
`accelerate launch` (DDP, DeepSpeed ZeRO-2/3, FSDP).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.config import to_dict
from pipeline.records.manifest import write_manifest
from pipeline.train.launch import claim_output, release_output, resume_point, settled_elsewhere
from pipeline.train.sft.config import SFTStageConfig

log = logging.getLogger("distill.sft")


def run(cfg: SFTStageConfig, args: Any = None) -> int:
    check_inputs(cfg, args, "sft")
    if (status := settled_elsewhere(cfg, args, "sft")) is not None:
        return status
    trainer, dataset = build_trainer(cfg)
    try:
        return train_and_save(cfg, trainer, dataset, "sft")
    finally:
        release_output(cfg.output)


def check_inputs(cfg: SFTStageConfig, args: Any = None, stage: str = "sft") -> None:
    """What a training run needs, checked before any model loads: DeepSpeed when the recipe uses it, a usable
    output folder (this stage's, its checkpoints made with these settings), an existing student, and complete
    filter outputs as data (pipeline/handoff.py)."""
    from pipeline import preflight
    from pipeline.handoff import require_complete

    preflight.check_deepspeed(cfg.launch.accelerate_config, cfg.trainer, "launch.accelerate_config")
    preflight.check_output_folder(cfg.output)
    preflight.check_model(cfg.model, "model", cfg.revision)
    resume_point(cfg, stage)
    kd = getattr(cfg, "kd", None)
    if kd is not None and kd.teacher == "online" and kd.teacher_model:
        preflight.check_model(kd.teacher_model, "kd.teacher_model")
    allow = getattr(args, "allow_incomplete", False)
    for i, entry in enumerate(cfg.data):
        if entry.path is not None:
            # the filter's datasets, or the toy teacher's pre-tokenized set (`distill toy-data --teacher-set`)
            require_complete(
                entry.path, ("filter", "toy-data"), allow_incomplete=allow, field=f"data[{i}].path"
            )


def build_trainer(
    cfg: SFTStageConfig, trainer_cls: Any = None, columns: tuple[str, ...] | None = None, **extra: Any
) -> tuple[Any, Any]:
    """The trainer, and the raw dataset it was built from (for the template check).

    `trainer_cls` (an SFTTrainer subclass), `columns` (dataset columns to keep) and `extra` (more trainer
    arguments) let the kd stage reuse everything else.
    """
    from trl import SFTConfig, SFTTrainer

    from pipeline.preflight import load_tokenizer
    from pipeline.train.data import TRAIN_COLUMNS, load_mixture
    from pipeline.train.models import load_student, lora_config, quantization_config

    args = SFTConfig(**cfg.sft_config_kwargs())
    dataset = load_mixture(cfg.data, seed=args.seed, columns=columns or TRAIN_COLUMNS)

    model = load_student(cfg, args.seed, args.model_init_kwargs or {})
    trainer = (trainer_cls or SFTTrainer)(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(cfg),
        peft_config=lora_config(cfg),
        quantization_config=quantization_config(cfg),
        **extra,
    )
    return trainer, dataset


def supervised_tokens(dataset: Any) -> int:
    """Tokens with a loss in one epoch of the prepared (tokenized, maybe packed) training set."""
    import pyarrow.compute as pc

    labels = dataset.data.column("labels")
    return int(pc.sum(pc.not_equal(pc.list_flatten(labels), -100)).as_py() or 0)


def train_and_save(cfg: SFTStageConfig, trainer: Any, dataset: Any, stage: str) -> int:
    """Check the template, train (resuming), save the student and, on the main process, write the manifest."""
    from pipeline.faults import arm_checkpoint_saves
    from pipeline.train.progress import attach_progress
    from pipeline.train.template_check import check_template, pick_example

    # pre-tokenized data (input_ids, labels) is trained on as given: no chat template renders it
    tokenized = "input_ids" in dataset.column_names
    if cfg.check_template and tokenized:
        log.info("the data is pre-tokenized (input_ids): no chat template to check")
    checked = check_template(trainer, pick_example(dataset)) if cfg.check_template and not tokenized else None
    last = claim_output(cfg, stage, trainer.is_world_process_zero())  # the first write to the output folder
    arm_checkpoint_saves()
    attach_progress(trainer, stage)  # readable progress lines when stderr is a file or pipe (#20)
    start_epoch = _resumed_epoch(last)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(cfg.output)
    if not trainer.is_world_process_zero():
        return 0
    merged = _merge_if_asked(cfg, trainer)
    counts = _run_counts(trainer, dataset, result, start_epoch)
    write_manifest(
        cfg.output,
        stage,
        to_dict(cfg),
        inputs=[d.describe() for d in cfg.data],
        counts=counts,
        resumed_from=last,
        template_check=checked,
        merged=merged,
        method=cfg.peft.method,
        log_history=trainer.state.log_history,
    )
    log.info("%s done: %s", stage, counts)
    return 0


def _resumed_epoch(last: str | None) -> float:
    """The epoch the checkpoint `last` reached (logged), 0.0 without one."""
    start_epoch = 0.0
    if last:
        start_epoch = json.loads((Path(last) / "trainer_state.json").read_text()).get("epoch") or 0.0
        log.info("resuming at epoch %.2f", start_epoch)
    return start_epoch


def _merge_if_asked(cfg: SFTStageConfig, trainer: Any) -> str | None:
    """With `peft.merge` on an adapter run: the merged model's folder (under `merged/`), else None."""
    if not (cfg.peft.merge and cfg.peft.method != "full"):
        return None
    from pipeline.train.models import merge_adapter

    return str(merge_adapter(cfg, Path(cfg.output), Path(cfg.output) / "merged", trainer.processing_class))


def _run_counts(trainer: Any, dataset: Any, result: Any, start_epoch: float) -> dict[str, Any]:
    """The manifest's counts: rows, steps, supervised tokens and their rate (this run's epochs), final losses."""
    tokens = supervised_tokens(trainer.train_dataset) * (trainer.state.epoch - start_epoch)
    runtime = result.metrics.get("train_runtime") or 1e-9
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "examples": len(dataset),  # the dataset's rows; training_rows: after packing / truncation
        "training_rows": len(trainer.train_dataset),
        "dropped": getattr(trainer, "dropped", {}),  # kd: examples left out, per reason
        "world_size": trainer.args.world_size,
        "global_step": trainer.state.global_step,
        "epochs": round(trainer.state.epoch, 4),
        "supervised_tokens": int(tokens),
        "supervised_tokens_per_s": round(tokens / runtime, 1),
        "train_runtime_s": round(runtime, 2),
        "final_loss": losses[-1] if losses else result.metrics.get("train_loss"),
        "train_loss": result.metrics.get("train_loss"),
        **_final_loss_parts(trainer.state.log_history),
    }


def _final_loss_parts(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The kd stage's separately logged parts, each its last logged value: final_ce_loss, final_kd_loss, ..."""
    return {
        f"final_{key}": values[-1]
        for key in ("ce_loss", "kd_loss", "hidden_loss", "relation_loss", "mutual_loss")
        if (values := [e[key] for e in log_history if key in e])
    }
