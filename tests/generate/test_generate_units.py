"""Generate-stage pieces that need no engine: config rules, shards, seeds, reasoning reassembly, sidecar I/O."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.generate.config import GenerateConfig, SamplingConfig, parse_shard
from pipeline.generate.engine_openai import join_reasoning
from pipeline.records.logprobs import Sidecar, TopK, write_sidecar


def cfg(*overrides: str) -> GenerateConfig:
    return load_config(GenerateConfig, None, ["model=m", "problems.path=p.jsonl", *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backend=openai", "logprobs=5"], "'logprobs' needs token ids from the engine"),
        (["mode=score"], "'samples' is required"),
        (["mode=score", "samples=x", "logprobs=0"], "mode: score needs logprobs"),
        (["shard=3/3"], "need 0 <= i < N"),
        (["shard=a/b"], "not of the form i/N"),
        (["sampling.top_p=0"], "top_p must be in"),
        (["problems=null"], "'problems' is required"),
        (["launch=ray", "backend=transformers"], "launch: ray runs vLLM engine replicas"),
        (["launch=ray", "ray.replicas=0"], "must be >= 1"),
        (["launch=slurm"], "launch"),
    ],
)
def test_inconsistent_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg(*overrides)


def test_r1_sampling_defaults():
    s = cfg().sampling
    assert (s.temperature, s.top_p, s.max_tokens) == (0.6, 0.95, 32768)


def test_sample_seeds_depend_on_seed_problem_and_index_only():
    s = SamplingConfig()
    seeds = {s.sample_seed(p, i) for p in ("a", "b") for i in range(50)}
    assert len(seeds) == 100 and all(0 <= x < 2**31 for x in seeds)
    assert s.sample_seed("a", 3) == SamplingConfig(n=9, temperature=1.0).sample_seed("a", 3)
    assert s.sample_seed("a", 3) != SamplingConfig(seed=1).sample_seed("a", 3)


def test_parse_shard():
    assert parse_shard("0/8") == (0, 8) and parse_shard("7/8") == (7, 8)


def test_shard_flag_is_checked_as_the_recipe_key():
    from tests.conftest import REPO, distill_main

    recipe = str(REPO / "recipes/demo/generate.yaml")
    result = distill_main("generate", "--config", recipe, "--shard", "5/3")
    assert result.returncode == 2 and "shard '5/3': need 0 <= i < N" in result.stderr


@pytest.mark.parametrize(
    ("reasoning", "content", "expected"),
    [
        ("\nI add.\n", "\n\nThe answer is 5.", "<think>\nI add.\n</think>\n\nThe answer is 5."),  # vLLM: kept
        ("I add.", "The answer is 5.", "<think>\nI add.\n</think>\n\nThe answer is 5."),  # hosted: stripped
        ("I add.", "", "<think>\nI add.\n</think>"),  # no answer after the reasoning
    ],
)
def test_reasoning_returned_separately_is_reassembled(reasoning, content, expected):
    assert join_reasoning(reasoning, content) == expected


def test_sidecar_round_trip_and_lazy_lookup(tmp_path):
    rng = np.random.default_rng(0)

    def entry(t: int) -> TopK:
        return TopK(
            rng.integers(0, 1000, t).astype(np.int32),
            rng.normal(size=t).astype(np.float16),
            rng.integers(0, 1000, (t, 4)).astype(np.int32),
            -np.abs(rng.normal(size=(t, 4))).astype(np.float16),
        )

    entries = [entry(5), entry(0), entry(9)]
    write_sidecar(tmp_path / "logprobs-00000.safetensors", ["a/0", "a/1", "b/0"], entries)
    sidecar = Sidecar(tmp_path)
    assert len(sidecar) == 3 and sidecar.k == 4 and "a/1" in sidecar
    for sample_id, e in zip(["a/0", "a/1", "b/0"], entries, strict=True):
        got = sidecar[sample_id]
        assert np.array_equal(got.token_ids, e.token_ids) and np.array_equal(
            got.topk_logprobs, e.topk_logprobs
        )
        assert got.topk_ids.dtype == np.int32 and got.topk_logprobs.dtype == np.float16
    with pytest.raises(KeyError, match="no teacher logprobs stored for sample 'zzz'"):
        sidecar["zzz"]
    with pytest.raises(ValueError, match="not aligned"):
        bad = entry(3)
        bad.topk_ids = bad.topk_ids[:2]
        write_sidecar(tmp_path / "x.safetensors", ["x"], [bad])


def test_ray_replicas_get_the_batch_capacity_of_the_direct_engine(tiny_model_dir):
    """A replica's AsyncLLM would take vLLM's server defaults (fewer sequences at once than the offline LLM
    `distill generate` runs); the processor passes the offline capacity, as vLLM itself computes it for the
    offline LLM, and enough units in flight to fill it, every request of them in the engine's own queue. A recipe's
    own max_num_seqs is kept."""
    from vllm import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    from pipeline.generate.engine_ray import processor_config

    model = str(tiny_model_dir)
    offline = AsyncEngineArgs(model=model, max_model_len=256).create_engine_config(UsageContext.LLM_CLASS)
    seqs = offline.scheduler_config.max_num_seqs
    got = processor_config(load_config(GenerateConfig, None, [f"model={model}", "problems.path=p.jsonl",
                                                             "launch=ray", "ray.unit=16", "engine.max_model_len=256"]))  # fmt: skip
    assert got.engine_kwargs["max_num_seqs"] == seqs
    assert got.max_concurrent_batches * got.batch_size >= 2 * seqs  # units queued beyond what the engine runs
    # and all of their requests in the engine's queue, not held back in the replica (Ray Data LLM: 1.1 x seqs)
    assert got.max_pending_requests == got.max_concurrent_batches * got.batch_size
    own = processor_config(load_config(GenerateConfig, None, [f"model={model}", "problems.path=p.jsonl",
                                                             "launch=ray", "engine.max_num_seqs=8"]))  # fmt: skip
    assert own.engine_kwargs["max_num_seqs"] == 8 and own.max_concurrent_batches == 8
