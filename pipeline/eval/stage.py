"""The eval stage: pass@k of teacher, base and students on named benchmarks, generated and graded the same way.

    distill eval --config recipes/eval/math.yaml model=runs/sft/qwen2.5-math-7b
    distill eval --config recipes/demo/eval.yaml                       # several models -> one table

For each model, one engine (the generate stage's: vLLM, OpenAI-compatible server or transformers); for each
benchmark, its problems (from the Hub, or a local copy) go through the generate stage into
`output/<label>/<benchmark>/` (resumable, fingerprinted), then through the filter stage's verifiers (math-verify
for math and multiple choice, the sandbox for code); verdicts go to `graded.jsonl` beside the samples, so
`regrade: true` re-scores saved samples without generating. Results: `results.json` (metrics and every
setting: model, revision, chat template, prompt, sampling, n, max tokens, verifier versions) and `results.md`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, Source, to_dict
from pipeline.generate.config import Backend, GenerateConfig, PromptConfig, SamplingConfig, ServerConfig
from pipeline.records.benchmarks import BENCHMARKS, load_benchmark
from pipeline.records.read import read_jsonl, read_samples
from pipeline.records.schema import DataSource, to_row
from pipeline.records.write import write_json, write_jsonl
from pipeline.sandbox.box import SandboxConfig

log = logging.getLogger("distill.eval")
PROMPTS = {"math": "math-r1-v1", "code": "code-v1", "choice": "choice-r1-v1"}


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
    name: str
    path: str | None = None
    """A local copy (.jsonl / .parquet) instead of the Hub dataset."""
    limit: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    benchmarks: list[BenchmarkSpec]
    model: str | None = None
    """One model (`model=PATH` on the command line); or `models:` for a comparison table."""
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

    def __post_init__(self) -> None:
        if not self.benchmarks:
            raise ValueError("'benchmarks' needs at least one benchmark")
        if any(k > self.sampling.n for k in self.ks):
            raise ValueError(f"pass@k needs k <= sampling.n ({self.sampling.n})")

    def check(self, source: Source) -> None:
        for i, b in enumerate(self.benchmarks):
            if b.name not in BENCHMARKS:
                raise ConfigError(
                    f"{source.where(f'benchmarks[{i}]')}: unknown benchmark '{b.name}'; known: "
                    f"{', '.join(BENCHMARKS)}"
                )

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


def label_of(spec: ModelSpec) -> str:
    return spec.label or Path(spec.path.rstrip("/")).name or spec.path


def generate_config(cfg: EvalConfig, spec: ModelSpec, bench: BenchmarkSpec, problems: Path) -> GenerateConfig:
    kind = BENCHMARKS[bench.name].kind
    return GenerateConfig(
        model=spec.path,
        revision=spec.revision,
        tokenizer=spec.tokenizer,
        backend=cfg.backend,
        engine=cfg.engine,
        server=cfg.server,
        sampling=cfg.sampling,
        problems=DataSource(path=str(problems)),
        batch_size=cfg.batch_size,
        flush_every=max(cfg.batch_size, 256),
        output=str(Path(cfg.output) / label_of(spec) / bench.name),
        prompt=PromptConfig(
            template=PROMPTS[kind], think_prefix=cfg.think_prefix, chat_template=spec.chat_template
        ),
    )


def write_problems(cfg: EvalConfig, bench: BenchmarkSpec) -> Path:
    problems = load_benchmark(bench.name, bench.path)[: bench.limit]
    path = Path(cfg.output) / "problems" / f"{bench.name}.jsonl"
    if not path.exists() or [row["id"] for _, row in read_jsonl(path)] != [p.id for p in problems]:
        write_jsonl(path, problems)
    return path


def generate_all(cfg: EvalConfig, spec: ModelSpec, problem_files: dict[str, Path]) -> Any:
    """Every benchmark's samples for one model, one engine for all; the tokenizer it used (None: served)."""
    from pipeline.generate.engines import build_engine
    from pipeline.generate.stage import run
    from pipeline.preflight import load_tokenizer

    first = generate_config(cfg, spec, cfg.benchmarks[0], problem_files[cfg.benchmarks[0].name])
    tokenizer = load_tokenizer(first) if cfg.backend != "openai" else None
    engine = build_engine(first, tokenizer)
    try:
        for bench in cfg.benchmarks:
            bench_cfg = generate_config(cfg, spec, bench, problem_files[bench.name])
            if run(bench_cfg, engine=engine, tokenizer=tokenizer) != 0:
                raise RuntimeError(f"generation for {label_of(spec)} on {bench.name} is incomplete")
    finally:
        engine.close()
    return tokenizer


def grade(cfg: EvalConfig, folder: Path, kind: str) -> list[dict[str, Any]]:
    """Verdicts for every saved sample of one model on one benchmark, written to graded.jsonl."""
    from pipeline.filter.parse import gradable_text
    from pipeline.filter.verify import with_verdict

    samples = sorted(read_samples(folder), key=lambda s: (s.problem_id, s.sample_index))
    items = [(gradable_text(s.completion), s) for s in samples]
    if kind == "code":
        from pipeline.filter.code_grader import grade_code_many
        from pipeline.records.code_tests import normalize_tests
        from pipeline.sandbox.box import Sandbox

        verdicts = grade_code_many(
            [(t, normalize_tests(s.tests) if s.tests else None) for t, s in items],
            timeout=cfg.timeout,
            sandbox=Sandbox(mode=cfg.sandbox.mode),
        )
    else:
        from pipeline.filter.math_pool import grade_many

        verdicts = grade_many([(t, s.answer) for t, s in items], timeout=cfg.timeout)
    rows = [with_verdict(to_row(s), v, kind) for (_, s), v in zip(items, verdicts, strict=True)]
    write_jsonl(folder / "graded.jsonl", rows)
    return rows


def score(rows: list[dict[str, Any]], ks: list[int], kind: str) -> dict[str, Any]:
    from pipeline.eval.metrics import score_problems

    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    groups = [sorted(g, key=lambda r: r["sample_index"]) for g in by_problem.values()]
    answers = [[r["extracted_answer"] for r in g] for g in groups] if kind != "code" else None
    metrics = score_problems([[r["correct"] for r in g] for g in groups], answers, ks)
    metrics["mean_output_tokens"] = sum(r["num_completion_tokens"] for r in rows) / max(len(rows), 1)
    metrics["truncation_rate"] = sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1)
    metrics["cannot_tell"] = sum(r["correct"] is None for r in rows)
    return metrics


def template_sha(cfg: EvalConfig, spec: ModelSpec, tokenizer: Any = None) -> str | None:
    """The hash of the chat template the model's prompts went through; None for a served model (the server
    applies its own) or, with a warning, when the tokenizer cannot be read."""
    if cfg.backend == "openai":
        return None
    from pipeline.errors import UserError
    from pipeline.generate.resume import chat_template_sha
    from pipeline.preflight import load_tokenizer

    if tokenizer is None:  # regrade: nothing was generated, so the tokenizer is read here
        try:
            tokenizer = load_tokenizer(generate_config(cfg, spec, cfg.benchmarks[0], Path("-")))
        except (OSError, ValueError, UserError) as e:
            log.warning("eval: no chat template hash recorded for %s: %s", label_of(spec), e)
            return None
    return chat_template_sha(tokenizer.chat_template)


def settings(cfg: EvalConfig, spec: ModelSpec, tokenizer: Any = None) -> dict[str, Any]:
    """Everything that decides a score, recorded beside it (open-r1's users could not reproduce scores without)."""
    from pipeline.prompts import load_prompt
    from pipeline.records.manifest import package_versions

    versions = package_versions()
    return {
        "model": spec.path,
        "revision": spec.revision,
        "chat_template_sha256": template_sha(cfg, spec, tokenizer),
        "chat_template_file": spec.chat_template,
        "backend": cfg.backend,
        "engine": cfg.engine,
        "sampling": asdict(cfg.sampling),
        "n": cfg.sampling.n,
        "max_tokens": cfg.sampling.max_tokens,
        "think_prefix": cfg.think_prefix,
        "prompts": {k: load_prompt(v).tag for k, v in PROMPTS.items()},
        "verifiers": {
            "math-verify": versions.get("math-verify"),
            "reasoning-distill": versions.get("reasoning-distill"),
            "math_timeout_s": cfg.timeout,
        },
    }


def check_sandbox(cfg: EvalConfig) -> str | None:
    """The sandbox mode code benchmarks will use, checked before anything is generated (None: no code)."""
    if not any(BENCHMARKS[b.name].kind == "code" for b in cfg.benchmarks):
        return None
    from pipeline.sandbox.box import require_mode

    return require_mode(cfg.sandbox.mode)


def run(cfg: EvalConfig, args: Any = None) -> int:
    from pipeline.handoff import require_trained_model
    from pipeline.preflight import check_output_folder

    check_output_folder(cfg.output)
    for i, spec in enumerate(cfg.model_specs()):  # a killed sft / kd folder is not a model to score
        field = f"models[{i}].path" if i < len(cfg.models) else "model"
        require_trained_model(
            spec.path, allow_incomplete=getattr(args, "allow_incomplete", False), field=field
        )
    sandbox = check_sandbox(cfg)
    results = {"models": [], "settings": {}}
    # each benchmark loaded (Hub or local) and written once, for every model
    problem_files = {} if cfg.regrade else {b.name: write_problems(cfg, b) for b in cfg.benchmarks}
    for spec in cfg.model_specs():
        tokenizer = None if cfg.regrade else generate_all(cfg, spec, problem_files)
        label = label_of(spec)
        metrics = {}
        for bench in cfg.benchmarks:
            folder = Path(cfg.output) / label / bench.name
            kind = BENCHMARKS[bench.name].kind
            metrics[bench.name] = score(grade(cfg, folder, kind), cfg.ks, kind)
            log.info(
                "%s on %s: pass@1 %.3f ± %.3f",
                label,
                bench.name,
                metrics[bench.name]["pass@1"],
                metrics[bench.name]["pass@1_stderr"],
            )
        results["models"].append({"model": spec.path, "label": label, "metrics": metrics})
        results["settings"][label] = {**settings(cfg, spec, tokenizer), "sandbox": sandbox}
    results["config"] = to_dict(cfg)
    write_json(Path(cfg.output) / "results.json", results)
    table = markdown_table(results)
    (Path(cfg.output) / "results.md").write_text(table)
    print(table)
    return 0


def markdown_table(results: dict[str, Any]) -> str:
    benches = list(results["models"][0]["metrics"]) if results["models"] else []
    head = "| model | " + " | ".join(f"{b} pass@1" for b in benches) + " | mean tokens | truncated |"
    lines = [head, "|" + "---|" * (len(benches) + 3)]
    for m in results["models"]:
        cells = [
            f"{100 * m['metrics'][b]['pass@1']:.1f} ± {100 * m['metrics'][b]['pass@1_stderr']:.1f}"
            for b in benches
        ]
        tokens = sum(m["metrics"][b]["mean_output_tokens"] for b in benches) / max(len(benches), 1)
        trunc = sum(m["metrics"][b]["truncation_rate"] for b in benches) / max(len(benches), 1)
        lines.append(f"| {m['label']} | " + " | ".join(cells) + f" | {tokens:.0f} | {100 * trunc:.1f}% |")
    return "\n".join(lines) + "\n"
