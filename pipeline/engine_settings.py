"""A recipe's vLLM `engine:` settings against the model they will run, checked before any engine starts:

    check_engine_settings(model, cfg.engine, where)   # max_model_len <= the model's, heads divisible by TP
    vllm_settings_error(exc)                           # vLLM's own refusal (a pydantic ValidationError) -> UserError

vLLM refuses such settings only once an engine is being built, with a 40-line pydantic traceback. The checks
read the model's config.json (a local folder, or the Hub's cached copy) and follow vLLM's own rules
(`ModelConfig.get_and_verify_max_len`, `ModelConfig.verify_with_parallel_config`); whatever vLLM refuses that
they do not foresee is turned into one line naming the `engine.*` field by `vllm_settings_error`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, Where
from pipeline.errors import UserError

# the config.json keys vLLM derives a model's longest context from (it takes the smallest present)
MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_sequence_length", "max_seq_length", "seq_len",
)  # fmt: skip


def model_config(model: str, revision: str | None = None) -> dict[str, Any] | None:
    """The model's config.json as a dict: from its folder, or the Hub's cache; None when neither has it (the
    stage's own model check then says why)."""
    path = Path(model).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json", revision=revision)
        except Exception:  # not a Hub id either: check_model names the problem
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def derived_max_len(config: dict[str, Any]) -> int | None:
    """The longest context vLLM allows for this model without VLLM_ALLOW_LONG_MAX_MODEL_LEN, or None if unknown.
    Rope scaling stretches it by its factor (yarn from the original length), as vLLM does."""
    text = config.get("text_config") or config
    found = [int(text[k]) for k in MAX_LEN_KEYS if isinstance(text.get(k), int | float)]
    if not found:
        return None
    length = min(found)
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    kind = rope.get("rope_type") or rope.get("type")
    if kind not in (None, "default", "su", "longrope", "llama3") and "factor" in rope:
        if kind == "yarn":
            length = int(rope.get("original_max_position_embeddings", length))
        length = int(length * rope["factor"])
    return length


def check_engine_settings(
    model: str, engine: dict[str, Any], where: Where, revision: str | None = None
) -> None:
    """Refuse `engine.max_model_len` above the model's context and `engine.tensor_parallel_size` that does not
    divide its attention heads, naming the recipe line; settings the model's config cannot judge pass."""
    config = model_config(model, revision)
    if config is None or engine.get("hf_overrides"):  # overrides change the config vLLM sees: let it judge
        return
    text = config.get("text_config") or config
    longest, wanted = derived_max_len(config), engine.get("max_model_len")
    long_ok = os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0").lower() in ("1", "true")
    if isinstance(wanted, int) and longest and wanted > longest and not long_ok:
        raise ConfigError(
            f"{where('engine.max_model_len')}: field 'engine.max_model_len' is {wanted}, longer than {model}'s "
            f"context ({longest}, from its config.json); lower it to at most {longest}",
            key="engine.max_model_len",
        )
    tp, heads = engine.get("tensor_parallel_size", 1), text.get("num_attention_heads")
    if isinstance(tp, int) and isinstance(heads, int) and tp > 0 and heads % tp:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0 and d <= 16]
        raise ConfigError(
            f"{where('engine.tensor_parallel_size')}: field 'engine.tensor_parallel_size' is {tp}, which does "
            f"not divide {model}'s {heads} attention heads; use one of {', '.join(map(str, divisors))}",
            key="engine.tensor_parallel_size",
        )


# words of vLLM's refusals -> the engine field they are about
_FIELDS = {
    r"max_model_len|max model len": "max_model_len",
    r"tensor parallel": "tensor_parallel_size",
    r"pipeline parallel": "pipeline_parallel_size",
    r"gpu_memory_utilization|memory utilization": "gpu_memory_utilization",
    r"max_num_batched_tokens": "max_num_batched_tokens",
    r"max_num_seqs": "max_num_seqs",
    r"dtype": "dtype",
}


def vllm_settings_error(exc: BaseException) -> UserError | None:
    """vLLM's refusal of engine settings (a pydantic ValidationError of one of its config classes) as one
    UserError naming the `engine.*` field; None for any other exception."""
    try:
        from pydantic import ValidationError
    except ImportError:
        return None
    if not isinstance(exc, ValidationError) or not _raised_by_vllm(exc):
        return None
    first = exc.errors()[0]
    message = re.sub(r"^Value error, ", "", str(first.get("msg", exc))).split(". ")[0].rstrip(".")
    loc = ".".join(str(p) for p in first.get("loc", ()) if isinstance(p, str))
    field = loc or _first_named_field(message)
    return UserError(
        f"vLLM refused the engine settings ({exc.title}): {message}",
        field=f"engine.{field}" if field else "engine",
        hint="change the recipe's engine: block (vLLM's engine arguments)",
    )


def _first_named_field(message: str) -> str | None:
    """The engine field a refusal names first (`max_num_batched_tokens (100) is smaller than max_model_len`)."""
    found = [(m.start(), f) for pattern, f in _FIELDS.items() if (m := re.search(pattern, message, re.I))]
    return min(found)[1] if found else None


def _raised_by_vllm(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("vllm."):
            return True
        tb = tb.tb_next
    return False
