"""Samples of each model on each benchmark, through the generate stage itself (same engines, prompts, seeds,
resume and fingerprint) into `output/<label>/<benchmark>/`: one engine per model for all its benchmarks.

    generate_all(cfg, spec, problems={"math500": (path, "math")}, tokenizer=tokenizer)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.eval.config import BenchmarkSpec, EvalConfig, ModelSpec, label_of
from pipeline.generate.config import GenerateConfig, PromptConfig
from pipeline.records.schema import DataSource

PROMPTS = {"math": "math-r1-v1", "code": "code-v1", "choice": "choice-r1-v1"}


def generate_config(
    cfg: EvalConfig,
    spec: ModelSpec,
    bench: BenchmarkSpec,
    problems: Path,
    kind: str,
    prefix: str | None = None,
) -> GenerateConfig:
    """Generate's settings for one model on one benchmark; `prefix`: the problems' metadata field that starts each
    answer (forced-error recovery)."""
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
            template=PROMPTS[kind],
            think_prefix=cfg.think_prefix and prefix is None,
            chat_template=spec.chat_template,
            prefix_field=prefix,
        ),
    )


def generate_all(
    cfg: EvalConfig, spec: ModelSpec, problems: dict[str, tuple[Path, str]], tokenizer: Any
) -> None:
    """Every benchmark's samples for one model, one engine for all, with the model's `tokenizer` (None: served);
    then, with `recovery:`, the forced-error problems' continuations."""
    from pipeline.eval.recovery import PREFIX
    from pipeline.generate.engines import build_engine
    from pipeline.generate.stage import run

    configs = [generate_config(cfg, spec, b, *problems[b.name]) for b in cfg.benchmarks]
    if cfg.recovery is not None:
        forced = BenchmarkSpec(name=cfg.recovery.name)
        configs.append(generate_config(cfg, spec, forced, *problems[forced.name], prefix=PREFIX))
    engine = build_engine(configs[0], tokenizer)
    try:
        for bench_cfg in configs:
            if run(bench_cfg, engine=engine, tokenizer=tokenizer) != 0:
                raise RuntimeError(f"generation for {label_of(spec)} into {bench_cfg.output} is incomplete")
    finally:
        engine.close()
