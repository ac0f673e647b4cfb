"""Configuration of the generate stage (`distill generate --config recipes/teachers/<teacher>.yaml`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import ConfigError, Where, check_keys
from pipeline.passthrough import check_block
from pipeline.records.schema import DataSource

Backend = Literal["vllm", "openai", "transformers"]
# what the transformers backend passes to AutoModelForCausalLM.from_pretrained (its `engine:` block)
FROM_PRETRAINED = {
    "dtype", "torch_dtype", "device_map", "attn_implementation", "trust_remote_code", "low_cpu_mem_usage",
    "quantization_config", "max_memory", "offload_folder", "offload_state_dict", "subfolder", "cache_dir",
    "local_files_only", "use_safetensors", "variant", "tp_plan", "tp_size", "key_mapping",
}  # fmt: skip


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling for every completion; the defaults are DeepSeek-R1's (temperature 0.6, top-p 0.95, 32k tokens)."""

    n: int = 1
    """Samples per problem."""
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int | None = None
    """None: no top-k truncation."""
    min_p: float = 0.0
    max_tokens: int = 32768
    """Completion token budget (clamped to the context left after the prompt)."""
    seed: int = 0
    """Each sample's own seed is derived from (seed, problem id, sample index), so a rerun reproduces it."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; a matched stop string is kept in the completion so text and token ids stay aligned."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("sampling.n must be >= 1")
        if self.max_tokens < 1:
            raise ValueError("sampling.max_tokens must be >= 1")
        if not 0 < self.top_p <= 1:
            raise ValueError("sampling.top_p must be in (0, 1]")
        if self.temperature < 0:
            raise ValueError("sampling.temperature must be >= 0")

    def sample_seed(self, problem_id: str, sample_index: int) -> int:
        digest = hashlib.sha256(f"{self.seed}:{problem_id}:{sample_index}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class PromptConfig:
    template: str = "math-r1-v1"
    """A file under prompts/ by name (or a path to a .txt file); `{problem}` is replaced by the problem."""
    system: str | None = None
    """An optional system prompt (a prompts/ name or path). R1 recommends none."""
    think_prefix: bool = False
    """Start the assistant turn with `<think>\\n` (DeepSeek's advice for R1); the prefix stays in `completion`."""
    chat_template: str | None = None
    """A Jinja file that replaces the model's own chat template."""
    prefix_field: str | None = None
    """A problem `metadata` field whose text starts the assistant's turn (a prefill the model continues, e.g. a
    partial solution; eval's forced-error recovery uses it); it stays in `completion`, like the think prefix."""

    def __post_init__(self) -> None:
        if self.prefix_field is not None and self.think_prefix:
            raise ValueError("set at most one of 'prompt.think_prefix' and 'prompt.prefix_field' (a prefix "
                             "field's text may itself start with <think>)")  # fmt: skip


@dataclass(frozen=True)
class ServerConfig:
    """The `openai` backend: any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None
    """The served model name, when it differs from `model`."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never written to logs or outputs)."""
    concurrency: int = 64
    """Requests in flight at once."""
    max_retries: int = 8
    """Retries with exponential backoff on 429, 5xx, connection errors and timeouts (the openai client's own)."""
    timeout: float = 3600.0
    """Seconds per request; long reasoning traces take minutes."""


@dataclass(frozen=True)
class RayConfig:
    """`launch: ray`: the teacher as vLLM engine replicas on a Ray cluster, through Ray Data LLM.

    The driver (where `distill generate` runs) plans, and stays the only writer of the output folder; the
    replicas pull units of `unit` samples, so a slow or lost node holds back at most a few units."""

    address: str | None = None
    """The cluster: `auto`, `HOST:6379` or `ray://HOST:10001`; None: `RAY_ADDRESS`, else a cluster started
    on this machine for the run."""
    replicas: int = 1
    """vLLM engine replicas (each with `engine.tensor_parallel_size x pipeline_parallel_size` workers)."""
    unit: int = 16
    """Samples per unit of work (a Ray Data batch): small units balance stragglers; large ones batch better."""
    bundle: dict[str, float] = field(default_factory=dict)
    """Resources of one engine worker (a placement bundle), e.g. `{GPU: 1}` (the default on GPUs); without a
    GPU, `{CPU: <this machine's cores>}` (Ray gives a worker as many threads as CPUs). Custom resources pin
    replicas to labelled nodes."""
    num_cpus: int = 8
    """A cluster started for the run: logical CPUs it declares (the pipeline's preprocess task and
    detokenizer hold CPUs of their own; as few as the machine's 2 leaves the engine pending)."""

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.unit < 1 or self.num_cpus < 1:
            raise ValueError("'ray.replicas', 'ray.unit' and 'ray.num_cpus' must be >= 1")


@dataclass(frozen=True)
class GenerateConfig:
    model: str
    """Teacher: a local folder or a Hub id."""
    problems: DataSource | None = None
    """Problems to solve (`mode: generate`)."""
    samples: str | None = None
    """`mode: score`: Sample files (a generate output, or any file in the Sample schema) to score."""
    mode: Literal["generate", "score"] = "generate"
    """`score` runs the teacher over existing prompt + completion pairs to capture its top-k logprobs."""
    output: str = "runs/generate"
    backend: Backend = "vllm"
    revision: str | None = None
    tokenizer: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    """vllm: arguments of `vllm.LLM` / `EngineArgs` (tensor_parallel_size, max_model_len, dtype,
    distributed_executor_backend: ray, ...); transformers: arguments of `from_pretrained` (dtype, device_map)."""
    server: ServerConfig = field(default_factory=ServerConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    logprobs: int = 0
    """k > 0 stores the teacher's top-k logprobs for every completion token in a sidecar."""
    flush_every: int = 256
    """Samples per output shard: what a crash can lose, and the granularity of resuming."""
    batch_size: int = 16
    """transformers backend: sequences per `generate` call."""
    shard: str | None = None
    """`i/N`: this process takes a deterministic 1/N of the problems (also `--shard i/N`)."""
    launch: Literal["local", "ray"] = "local"
    """`local`: the engine in this process; `ray`: engine replicas on a Ray cluster (`ray:`), backend vllm."""
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.mode == "generate" and self.problems is None:
            raise ValueError("'problems' is required (mode: generate)")
        if self.mode == "score" and self.samples is None:
            raise ValueError("'samples' is required (mode: score)")
        if self.mode == "score" and self.logprobs < 1:
            raise ValueError("mode: score needs logprobs: k (k >= 1)")
        if self.prompt.prefix_field is not None and (self.logprobs or self.mode == "score"):
            raise ValueError("'prompt.prefix_field' (a prefill per problem) works with mode: generate and no "
                             "logprobs")  # fmt: skip
        if self.mode == "score" and self.backend == "openai":
            raise ValueError("mode: score needs the teacher's logits: use backend vllm or transformers")
        if self.logprobs < 0:
            raise ValueError("'logprobs' must be >= 0")
        if self.logprobs and self.backend == "openai":
            raise ValueError(
                "'logprobs' needs token ids from the engine: use backend vllm or transformers "
                "(OpenAI-compatible APIs return top-k as strings)"
            )
        if self.flush_every < 1 or self.batch_size < 1:
            raise ValueError("'flush_every' and 'batch_size' must be >= 1")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.launch == "ray" and self.backend != "vllm":
            raise ValueError("launch: ray runs vLLM engine replicas: use backend vllm")

    def check_passthrough(self, where: Where) -> None:
        """Hand the `engine:` block to the library that takes it, before anything is loaded or written."""
        if self.backend == "vllm":
            from vllm.engine.arg_utils import EngineArgs

            check_block(self.engine, EngineArgs, "engine", "vllm.EngineArgs", where, exclude={"model"})
        elif self.backend == "transformers":
            check_keys(
                self.engine,
                FROM_PRETRAINED,
                "engine",
                "transformers' from_pretrained (backend transformers; "
                "vLLM's engine arguments need backend: vllm)",
                where,
            )
        elif self.backend == "openai" and self.engine:
            raise ConfigError(
                f"{where('engine')}: 'engine' has no meaning for backend openai "
                "(the server was started with its own arguments)",
                key="engine",
            )


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/8"` -> (2, 8); shards are numbered from 0."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r} is not of the form i/N (e.g. 0/8)") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < N")
    return i, n
