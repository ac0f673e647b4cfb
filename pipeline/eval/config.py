"""Configuration of the eval stage (`distill eval --config recipes/eval/math.yaml model=PATH`): the models, the
benchmarks (named ones, or any problems file of your own read as `generate` reads problems), sampling and
grading settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.config import ConfigError, Source
from pipeline.eval.recovery import RecoveryConfig
from pipeline.generate.config import Backend, SamplingConfig, ServerConfig
from pipeline.records.benchmarks import BENCHMARKS
from pipeline.records.schema import DataSource
from pipeline.sandbox.box import SandboxConfig

Kind = Literal["math", "code", "choice"]


@dataclass(frozen=True)
class ModelSpec:
    path: str
    """A local folder (a student, merged or full) or a Hub id."""
    label: str | None = None
    revision: str | None = None
    tokenizer: str | None = None
    chat_template: str | None = None
    """A Jinja file replacing the model's chat template (e.g. a base model's training template)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """A named benchmark (math500, aime24, gsm8k, humaneval, ...: from the Hub, or `path:` a local copy in its own
    format), or a problem set of your own under a name of your own: `path:` (JSONL, parquet, a folder) or `hub:`,
    read exactly as `generate` reads problems, `fields:` mapping its columns onto `problem`, `answer`, `tests`."""

    name: str
    path: str | None = None
    """A local .jsonl / .parquet file or folder (for a named benchmark: a copy of its Hub dataset)."""
    hub: str | None = None
    """A Hub dataset of your own problems (a named benchmark knows its own)."""
    config: str | None = None
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)
    """Column renames, source -> field: `{question: problem, solution: answer}`."""
    limit: int | None = None
    """The first `limit` problems only (a Hub dataset is then streamed: only those rows are read)."""
    kind: Kind | None = None
    """How answers are graded: math (math-verify), choice (a letter), code (the sandbox). Default: the named
    benchmark's; for your own problems, code when they carry `tests`, else math."""

    def __post_init__(self) -> None:
        if self.path is not None and self.hub is not None:
            raise ValueError("set at most one of 'path' and 'hub'")
        if self.limit is not None and self.limit < 0:
            raise ValueError("'limit' must be >= 0")

    @property
    def named(self) -> bool:
        return self.name in BENCHMARKS and self.hub is None

    def source(self) -> DataSource:
        """Where an own benchmark's problems are read from (a named one reads through its Benchmark)."""
        return DataSource(path=self.path, hub=self.hub, config=self.config, split=self.split, fields=self.fields,
                          limit=self.limit)  # fmt: skip


@dataclass(frozen=True)
class EvalConfig:
    benchmarks: list[BenchmarkSpec]
    model: str | None = None
    """One model (`model=PATH` on the command line); or `models:` for a comparison table (both: all of them)."""
    models: list[ModelSpec] = field(default_factory=list)
    output: str = "runs/eval"
    backend: Backend = "vllm"
    engine: dict[str, Any] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=4))
    """R1's evaluation sampling (0.6 / 0.95 / 32k), n samples per problem."""
    think_prefix: bool = False
    batch_size: int = 64
    """transformers backend: sequences per `generate` call."""
    ks: list[int] = field(default_factory=lambda: [1])
    """pass@k values reported beside pass@1 (each <= n)."""
    timeout: float = 5.0
    """Seconds to grade one math answer (code: per program)."""
    regrade: bool = False
    """Only grade the samples already saved under `output` (no generation)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """`sandbox.mode` for code benchmarks: auto, namespaces, userns or landlock."""
    recovery: RecoveryConfig | None = None
    """The toy task v2 only: forced-error recovery rate R and first-pass column error rate on one benchmark
    (pipeline/eval/recovery.py)."""

    def __post_init__(self) -> None:
        if not self.benchmarks:
            raise ValueError("'benchmarks' needs at least one benchmark")
        if any(k > self.sampling.n for k in self.ks):
            raise ValueError(f"pass@k needs k <= sampling.n ({self.sampling.n})")

    def check(self, source: Source) -> None:
        names = [b.name for b in self.benchmarks]
        for i, b in enumerate(self.benchmarks):
            if not b.named and b.path is None and b.hub is None:
                raise ConfigError(
                    f"{source.where(f'benchmarks[{i}]')}: unknown benchmark '{b.name}'; a named one (known: "
                    f"{', '.join(BENCHMARKS)}) or your own problems under your own name, with 'path:' (JSONL, "
                    "parquet) or 'hub:', and 'fields:' mapping its columns to problem / answer / tests",
                    key=f"benchmarks[{i}]",
                )
            if names.count(b.name) > 1:
                raise ConfigError(f"{source.where(f'benchmarks[{i}]')}: benchmark name '{b.name}' is used twice",
                                  key=f"benchmarks[{i}].name")  # fmt: skip
        if self.recovery is not None and self.recovery.benchmark not in names:
            raise ConfigError(
                f"{source.where('recovery.benchmark')}: field 'recovery.benchmark': '{self.recovery.benchmark}' "
                f"is not one of this recipe's benchmarks ({', '.join(names)})",
                key="recovery.benchmark",
            )
        if self.recovery is not None and self.recovery.name in names:
            raise ConfigError(f"{source.where('recovery.benchmark')}: field 'recovery.benchmark': a benchmark is "
                              f"already named '{self.recovery.name}', where recovery writes its samples: rename it",
                              key="recovery.benchmark")  # fmt: skip

    def model_specs(self) -> list[ModelSpec]:
        specs = list(self.models) + ([ModelSpec(self.model)] if self.model else [])
        if not specs:
            raise ConfigError(
                "no model to evaluate: pass model=PATH_OR_HUB_ID (or list `models:` in the recipe)"
            )
        labels = [label_of(s) for s in specs]
        if len(set(labels)) < len(labels):
            raise ConfigError(f"two models share a label ({labels}): set distinct `label:`s")
        return specs

    def model_field(self, index: int, attribute: str = "path") -> str:
        """The recipe field that names the `index`-th of `model_specs()` (for error messages)."""
        return f"models[{index}].{attribute}" if index < len(self.models) else "model"


def label_of(spec: ModelSpec) -> str:
    return spec.label or Path(spec.path.rstrip("/")).name or spec.path
