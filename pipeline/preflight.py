"""Checks a stage makes before anything heavy starts: paths, models, tokenizers, installed extras.

Each turns a condition that would otherwise surface as a library's traceback (minutes later, after an engine
started) into one UserError line naming the field and what to do:

    check_output_folder(cfg.output)                    # not a file, parent not a file
    check_model(cfg.model, field="model")              # a local folder that exists, or a reachable Hub id
    tok = load_tokenizer(cfg)   # the recipe's tokenizer (chat template override applied), never an empty stand-in
    check_deepspeed(accelerate_config, trainer)        # the recipe asks for DeepSpeed: is it installed?
    check_schedule(cfg.trainer, where)                 # the learning-rate schedule's phases fit max_steps
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def check_output_folder(path: str | Path, field: str = "output", stage: str | None = None) -> None:
    """An output must be a folder (or not exist yet): not a file, not under a file; with `stage`, a folder that
    stage may write: new, empty or its own (pipeline/outputs.py), never another stage's or a user's files."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise UserError(
                f"{p} is a file, not a folder",
                file=path,
                field=field,
                hint="choose an output folder path that is free or already a folder",
            )
    if stage is not None:
        from pipeline.outputs import check_owned

        check_owned(path, stage, field)


# model folders the demo recipes start from, built by a command rather than shipped: how to build each
BUILT_BY = {
    "runs/demo/student-init": "the demo students' untrained start: build it with `distill demo --student-init` "
    "(`make sft` / `make kd` do it for you)",
    "runs/demo/sft/checkpoint-3000": "the demo's OPD starts from the SFT student's step-3000 checkpoint: "
    "train it first with `make sft` (or run `make opd`, which does)",
}


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id: absolute, relative with ./ or ~, deeper than owner/name, or under a folder
    that exists here (`runs/x`)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def check_model(name: str, field: str = "model", revision: str | None = None) -> None:
    """`name` is an existing local folder, or a Hub id that is cached or reachable."""
    if Path(name).expanduser().is_dir():
        return
    if Path(name).expanduser().exists():
        raise UserError(f"{name} is a file; a model is a folder", field=field, hint="give the model's folder")
    if _looks_local(name):
        raise UserError(
            f"no such model folder {name!r}",
            field=field,
            hint=BUILT_BY.get(Path(name).as_posix().rstrip("/").removeprefix("./"))
            or "give the path of a local model folder, or a Hub id like owner/name",
        )
    _check_hub_model(name, field, revision)


def _check_hub_model(name: str, field: str, revision: str | None) -> None:
    """A Hub model id: its config must be cached or downloadable (offline runs need a cached copy)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        hf_hub_download(name, "config.json", revision=revision)
    except HFValidationError:
        raise UserError(
            f"no such model folder {name!r}, and it is not a Hub id either",
            field=field,
            hint="give the path of a local model folder, or a Hub id like owner/name",
        ) from None
    # offline, unreachable, gated or missing (Hub HTTP errors and network failures are OSErrors): all mean "cannot
    # get it from here"; anything else is a bug and keeps its traceback
    except (OSError, EntryNotFoundError) as e:
        why = (
            "the Hub is offline (HF_HUB_OFFLINE=1) and it is not cached"
            if hub_offline()
            else (f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        )
        raise UserError(
            f"no local folder {name!r}, and cannot get it from the Hub: {why}",
            field=field,
            hint="use a reachable Hub id (network, access, HF_HUB_OFFLINE unset), or a local path to the model",
        ) from e


def load_tokenizer(cfg: Any) -> Any:
    """The tokenizer a stage's recipe names (`tokenizer:`, else `model:`, at `revision:`), with the recipe's
    `prompt.chat_template` in place of its own when set. The one loader of generate, eval, sft, kd and opd.

    A local folder without tokenizer files is refused (transformers would build an empty, one-token tokenizer
    from the model config and vLLM would fail minutes later), as is an empty tokenizer."""
    name, field, revision = (
        cfg.tokenizer or cfg.model,
        "tokenizer" if cfg.tokenizer else "model",
        cfg.revision,
    )
    check_model(name, field, revision)
    local = Path(name).expanduser()
    if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
        raise UserError(
            f"{name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
            field=field,
            hint="copy the tokenizer files into the model folder, or set 'tokenizer:' to a folder that has them",
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of {name}: {e}", field=field) from e
    if len(tokenizer) <= 1:
        raise UserError(f"{name}: the tokenizer is empty ({len(tokenizer)} tokens)", field=field)
    chat_template = getattr(getattr(cfg, "prompt", None), "chat_template", None)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text()
    return tokenizer


def check_deepspeed(accelerate_config: str | None, trainer: dict[str, Any], field: str) -> None:
    """A recipe that uses DeepSpeed (its accelerate config or `trainer.deepspeed`) needs it installed."""
    uses = bool(trainer.get("deepspeed"))
    if accelerate_config and Path(accelerate_config).is_file():
        import yaml

        launch = yaml.safe_load(Path(accelerate_config).read_text()) or {}
        uses = (
            uses
            or str(launch.get("distributed_type", "")).upper() == "DEEPSPEED"
            or "deepspeed_config" in launch
        )
    if uses and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            "this recipe trains with DeepSpeed, which is not installed (it needs a GPU install)",
            file=accelerate_config,
            field=field,
            hint="on a GPU machine run scripts/setup.sh (installs the GPU lock with DeepSpeed); on CPU use a "
            "demo recipe (make sft) or drop launch.accelerate_config",
        )


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_schedule(trainer: dict[str, Any], where: Any) -> None:
    """A learning-rate schedule whose phases do not fit `trainer.max_steps` is refused: a shortened run
    (`trainer.max_steps=30` on a recipe that anneals over its last 1,000 steps) would otherwise sit in its
    decay from step 1, at a near-zero learning rate, and silently not learn. Epoch-based runs (max_steps <= 0)
    are judged by the trainer, which alone knows their length."""
    total = trainer.get("max_steps", -1)
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        return
    raw = trainer.get("warmup_steps", 0) or 0
    warmup = int(raw) if raw >= 1 else math.ceil(total * raw)  # a float < 1 is a ratio (transformers)
    if warmup >= total:
        raise ConfigError(
            f"{where('trainer.warmup_steps')}: field 'trainer.warmup_steps': the warm-up ({warmup} steps) takes "
            f"all of trainer.max_steps ({total}); the run would never reach its learning rate: lower it (e.g. "
            f"trainer.warmup_steps={max(total // 20, 0)}) or raise trainer.max_steps",
            key="trainer.warmup_steps",
        )
    if trainer.get("lr_scheduler_type") == "warmup_stable_decay":
        _check_wsd(trainer.get("lr_scheduler_kwargs") or {}, warmup, total, where)


def _check_wsd(kwargs: Any, warmup: int, total: int, where: Any) -> None:
    """warmup_stable_decay: warm-up + stable + decay steps must add up to max_steps (transformers'
    get_wsd_schedule holds the learning rate at its minimum past them, and starts the decay early before)."""
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs) if kwargs.strip().startswith("{") else {}
    decay, stable = kwargs.get("num_decay_steps"), kwargs.get("num_stable_steps")
    if not isinstance(decay, int):
        return  # transformers names a missing num_decay_steps itself
    phases = warmup + decay + (stable if isinstance(stable, int) else 0)
    if phases > total or (isinstance(stable, int) and phases != total):
        fit = max((total - warmup) // 4, 1)
        raise ConfigError(
            f"{where('trainer.lr_scheduler_kwargs')}: field 'trainer.lr_scheduler_kwargs.num_decay_steps': "
            f"warmup_stable_decay's phases (warm-up {warmup} + "
            + (f"stable {stable} + " if isinstance(stable, int) else "")
            + f"decay {decay} = {phases} steps) do not fit trainer.max_steps ({total}): the learning rate "
            f"would be in its decay from the start; set e.g. trainer.lr_scheduler_kwargs={{num_decay_steps: "
            f"{fit}}} (without num_stable_steps) or raise trainer.max_steps",
            key="trainer.lr_scheduler_kwargs",
        )
