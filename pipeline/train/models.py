"""Students and their adapters: loading (pretrained, re-configured, or from scratch), PEFT configs, merging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.train.sft.config import SFTStageConfig

log = logging.getLogger("distill.train")


def model_config(cfg: SFTStageConfig) -> Any:
    """The base model's config with the recipe's `model_config` changes merged in (nested dicts merge)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
    for key, value in cfg.model_config.items():
        current = getattr(config, key, None)
        setattr(
            config,
            key,
            {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value,
        )
    return config


def load_student(cfg: SFTStageConfig, seed: int, init_kwargs: dict[str, Any]) -> Any:
    """A model object, or the model id when TRL can load it itself (no config changes, not from scratch)."""
    if not cfg.from_scratch and not cfg.model_config:
        return cfg.model
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import create_model_from_path

    config = model_config(cfg)
    if cfg.from_scratch:
        torch.manual_seed(seed)
        dtype = init_kwargs.get("dtype", "float32")
        log.info("initialising %s from its config (from_scratch)", cfg.model)
        return AutoModelForCausalLM.from_config(
            config, dtype=getattr(torch, dtype) if dtype != "auto" else None
        )
    return create_model_from_path(cfg.model, config=config, revision=cfg.revision, **init_kwargs)


def quantization_config(cfg: SFTStageConfig) -> Any:
    if cfg.peft.method != "qlora":
        return None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            "peft.method qlora loads the base in 4 bits with bitsandbytes, which needs a CUDA GPU; "
            "this machine has none. Use peft.method: lora (same adapter, unquantized base)."
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**cfg.peft.quantization)


def lora_config(cfg: SFTStageConfig) -> Any:
    if cfg.peft.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(**cfg.peft.lora)


def merge_adapter(cfg: SFTStageConfig, adapter_dir: Path, out_dir: Path, tokenizer: Any) -> Path:
    """Base (reloaded unquantized, in its own dtype) + adapter -> plain weights that load without PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        cfg.model, revision=cfg.revision, config=model_config(cfg), dtype="auto"
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)  # save_pretrained wrote the generation config too
    return out_dir
