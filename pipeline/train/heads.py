"""Reading a model's output layer outside its forward, as the chunked losses and the local teachers do: what the
forward does to the head's output besides the matrix product, and the launch setups under which that layer's
weight is not whole on any one process.
"""

from __future__ import annotations

from typing import Any

import torch


def output_transform(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """What a model's forward does to its head's output that `head(hidden)` alone misses: a logit scale (Cohere,
    Granite) and final soft-capping (Gemma 2)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(text, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(text, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def refuse_sharded_heads(trainer: Any) -> None:
    """The chunked loss reads the output layer's weight outside the module's forward, which ZeRO-3 and FSDP
    shard; under them it would see an empty or partial matrix."""
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if getattr(trainer, "is_fsdp_enabled", False) or (plugin is not None and plugin.zero_stage == 3):
        raise ValueError(
            "kd runs under DDP or DeepSpeed ZeRO-2 (recipes/accelerate/ddp.yaml, zero2.yaml), not "
            "ZeRO-3 or FSDP: its chunked loss reads the output layer outside the model's forward. For "
            "a student too large for ZeRO-2, use peft.method: lora or qlora."
        )
