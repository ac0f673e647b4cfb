"""The generate stage: a teacher writes chain-of-thought samples for problems, resumably, shard by shard.

    distill generate --config recipes/teachers/qwq-32b.yaml [--shard 3/8] [sampling.n=4 ...]

Reads problems, renders prompts, refuses to continue an output folder made with other settings, skips every
sample already written, streams the rest through the engine and commits them `flush_every` at a time (a sidecar
of top-k logprobs first, then the Sample shard, each atomically), and writes `manifest.json` last.
In `mode: score` it runs the teacher over existing samples to capture top-k logprobs for them instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import preflight
from pipeline.config import to_dict
from pipeline.faults import fault_point
from pipeline.generate.config import GenerateConfig, parse_shard
from pipeline.generate.engine_api import Completion, Engine
from pipeline.generate.engines import build_engine
from pipeline.generate.plan import (
    FINGERPRINT,
    Work,
    check_fingerprint,
    content_hashes,
    done_ids,
    fingerprint,
    fit_budgets,
    load_work,
    read_all_samples,
    render_requests,
)
from pipeline.generate.progress import Stats, progress_bar
from pipeline.handoff import require_complete
from pipeline.records.logprobs import sidecar_path, write_sidecar
from pipeline.records.manifest import read_manifest, write_manifest
from pipeline.records.schema import RecordError
from pipeline.records.write import ShardWriter, atomic_write, write_json

log = logging.getLogger("distill.generate")


def output_folder(cfg: GenerateConfig, shard: tuple[int, int] | None) -> Path:
    out = Path(cfg.output)
    return out / f"shard-{shard[0]:05d}-of-{shard[1]:05d}" if shard else out


def context_length(cfg: GenerateConfig) -> int | None:
    """The model's context as the engine will see it, known before the engine starts (None: unknown)."""
    if cfg.backend == "openai":
        return None
    if "max_model_len" in cfg.engine:
        return int(cfg.engine["max_model_len"])
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


def run(cfg: GenerateConfig, args: Any = None, engine: Engine | None = None, tokenizer: Any = None) -> int:
    """Run the stage; a caller that already holds the `engine` and its `tokenizer` (eval, tests) reuses them.

    Every check that can fail on the user's input (paths, model, tokenizer, records, prompt lengths, the
    folder's fingerprint) runs before the engine starts and before anything is written."""
    shard = parse_shard(cfg.shard) if cfg.shard else None
    out = output_folder(cfg, shard)
    preflight.check_output_folder(out, stage="generate")
    if shard:  # the folder the shards sit in must be generate's too
        preflight.check_output_folder(cfg.output, stage="generate")
    if cfg.mode == "score":  # scoring another run's samples: that run must have finished
        require_complete(cfg.samples, "generate", allow_incomplete=getattr(args, "allow_incomplete", False),
                         field="samples")  # fmt: skip
    work = load_work(cfg, shard)  # reads and validates every input record before anything is written
    if engine is None and cfg.backend != "openai":
        preflight.check_model(cfg.model, "model", cfg.revision)
    if tokenizer is None and cfg.backend != "openai":
        tokenizer = preflight.load_tokenizer(cfg)
    fp = fingerprint(cfg, tokenizer) | {"content": content_hashes(work)}
    check_fingerprint(out, fp)
    done = done_ids(out)
    todo = [w for w in work if w.id not in done]
    log.info(
        "%s: %d samples planned, %d already written, %d to go",
        out,
        len(work),
        len(work) - len(todo),
        len(todo),
    )
    run_stats = None
    if todo:
        limit = getattr(engine, "max_model_len", None) if engine is not None else context_length(cfg)
        requests = render_requests(cfg, todo, tokenizer, limit)  # a prompt too long is refused here
        (out / "manifest.json").unlink(missing_ok=True)  # the folder is incomplete again until we finish
        run_stats = generate(cfg, todo, requests, tokenizer, out, engine, fp)
    return finish(cfg, out, work, fp, run_stats)


def generate(
    cfg: GenerateConfig,
    todo: list[Work],
    requests: list,
    tokenizer: Any,
    out: Path,
    engine: Engine | None,
    fp: dict[str, Any],
) -> Stats:
    owned = engine is None
    engine = engine or build_engine(cfg, tokenizer)
    try:
        fit_budgets(cfg, requests, getattr(engine, "max_model_len", None))
        by_id = {w.id: w for w in todo}
        writer = ShardWriter(out)
        buffer: list[Completion] = []
        stats = Stats(total=len(todo))
        with progress_bar(stats) as update:
            for completion in engine.run(cfg, requests):
                buffer.append(completion)
                stats.add(completion)
                if len(buffer) >= cfg.flush_every:
                    flush(cfg, writer, buffer, by_id, fp)
                    buffer, fp = [], None  # stored once, with this run's first samples
                update()
            if buffer:
                flush(cfg, writer, buffer, by_id, fp)
        log.info("this run: %s", stats.summary())
        return stats
    finally:
        if owned:
            engine.close()


def flush(
    cfg: GenerateConfig,
    writer: ShardWriter,
    completions: list[Completion],
    by_id: dict[str, Work],
    fp: dict[str, Any] | None,
) -> None:
    """Commit a batch: the run's fingerprint with its first batch (`fp`, None after), the logprob sidecar, then
    the Sample shard (its presence marks the batch done)."""
    if fp is not None:
        write_json(writer.folder / FINGERPRINT, fp)
        fault_point("generate:after-fingerprint")
    index = writer.next_index()
    shard_path = writer.path(index)
    records = [by_id[c.request.sample_id].to_sample(cfg, c) for c in completions]
    if cfg.logprobs:
        ids = [c.request.sample_id for c in completions]
        atomic_write(
            sidecar_path(shard_path), lambda tmp: write_sidecar(tmp, ids, [c.topk for c in completions])
        )
    writer.write(records, index)


def finish(
    cfg: GenerateConfig, out: Path, work: list[Work], fp: dict[str, Any], run_stats: Stats | None
) -> int:
    """Check the folder holds exactly the planned samples, once each; then write the manifest."""
    samples = read_all_samples(out)
    planned = {w.id for w in work}
    ids = [s["id"] for s in samples]
    duplicates = len(ids) - len(set(ids))
    missing = planned - set(ids)
    extra = sorted(set(ids) - planned)
    if duplicates or missing or extra:
        raise RecordError(
            f"{out}: {duplicates} duplicate, {len(missing)} missing and {len(extra)} unplanned samples "
            f"({', '.join(extra[:3])}{', ...' * (len(extra) > 3)}); not writing the manifest",
            hint="the folder holds samples of another plan (other problems or a larger limit): use a new output",
        )
    stats = Stats.from_records(samples)
    if run_stats is not None or read_manifest(out) is None:
        write_manifest(
            out,
            "generate",
            to_dict(cfg),
            inputs=[cfg.samples or cfg.problems.describe()],
            counts=stats.counts(),
            fingerprint=fp,
            last_run=run_stats.throughput() | {"samples": run_stats.samples} if run_stats else None,
        )
    log.info("%s complete: %s", out, stats.summary(timed=False))
    return 0
