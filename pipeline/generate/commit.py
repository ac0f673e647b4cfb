"""The single writer of a generate output folder: completions in, committed shards out, the manifest last.

    stats = commit(cfg, plan, engine.run(cfg, plan.requests()))   # every `flush_every` completions, one shard
    finish(cfg, plan, stats)                                    # exactly the planned samples, then manifest.json

A commit writes the run's fingerprint with its first samples, then the top-k logprob sidecar, then the Sample
shard, each atomically (the shard's presence marks the batch done). Completions may come in any order and,
from a cluster that reran a unit after losing a node, more than once: a sample already committed or buffered
is dropped, so nothing is ever written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.config import to_dict
from pipeline.faults import fault_point
from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_api import Completion
from pipeline.generate.plan import Plan
from pipeline.generate.progress import Stats, progress_bar
from pipeline.generate.resume import FINGERPRINT, iter_samples
from pipeline.records.logprobs import sidecar_path, write_sidecar
from pipeline.records.manifest import read_manifest, write_manifest
from pipeline.records.schema import RecordError
from pipeline.records.write import ShardWriter, atomic_write, write_json

log = logging.getLogger("distill.generate")


def commit(cfg: GenerateConfig, plan: Plan, completions: Iterable[Completion]) -> Stats:
    """Commit the completions `flush_every` at a time as they arrive; returns this run's figures."""
    writer = ShardWriter(plan.out)
    buffer: list[Completion] = []
    seen: set[str] = set()
    repeats = 0
    fp: dict[str, Any] | None = plan.fingerprint  # stored once, with this run's first samples
    stats = Stats(total=plan.todo)
    with progress_bar(stats) as update:
        for completion in completions:
            if completion.request.sample_id in seen:  # a unit the cluster ran again: written once already
                repeats += 1
                continue
            seen.add(completion.request.sample_id)
            buffer.append(completion)
            stats.add(completion)
            if len(buffer) >= cfg.flush_every:
                flush(cfg, writer, buffer, fp)
                buffer, fp = [], None
            update()
        if buffer:
            flush(cfg, writer, buffer, fp)
    if repeats:
        log.info("dropped %d completions of units run twice (each sample is written once)", repeats)
    log.info("this run: %s", stats.summary())
    return stats


def flush(
    cfg: GenerateConfig,
    writer: ShardWriter,
    completions: list[Completion],
    fp: dict[str, Any] | None,
) -> None:
    """Commit a batch: the run's fingerprint with its first batch (`fp`, None after), the logprob sidecar, then
    the Sample shard (its presence marks the batch done)."""
    if fp is not None:
        write_json(writer.folder / FINGERPRINT, fp)
        fault_point("generate:after-fingerprint")
    index = writer.next_index()
    shard_path = writer.path(index)
    records = [c.request.work.to_sample(cfg, c) for c in completions]
    if cfg.logprobs:
        ids = [c.request.sample_id for c in completions]
        atomic_write(
            sidecar_path(shard_path), lambda tmp: write_sidecar(tmp, ids, [c.topk for c in completions])
        )
    writer.write(records, index)


def finish(cfg: GenerateConfig, plan: Plan, run_stats: Stats | None) -> int:
    """Check the folder holds exactly the planned samples, once each; then write the manifest."""
    out = plan.out
    ids: set[str] = set()
    duplicates = 0

    def rows() -> Iterator[dict[str, Any]]:  # streamed: only the ids and the counters stay in memory
        nonlocal duplicates
        for row in iter_samples(out):
            duplicates += row["id"] in ids
            ids.add(row["id"])
            yield row

    stats = Stats.from_records(rows())
    planned = plan.planned
    missing = planned - ids
    extra = sorted(ids - planned)
    if duplicates or missing or extra:
        raise RecordError(
            f"{out}: {duplicates} duplicate, {len(missing)} missing and {len(extra)} unplanned samples "
            f"({', '.join(extra[:3])}{', ...' * (len(extra) > 3)}); not writing the manifest",
            hint="the folder holds samples of another plan (other problems or a larger limit): use a new output",
        )
    if run_stats is not None or read_manifest(out) is None:
        write_manifest(
            out,
            "generate",
            to_dict(cfg),
            inputs=[cfg.samples or cfg.problems.describe()],
            counts=stats.counts(),
            fingerprint=plan.fingerprint,
            last_run=run_stats.throughput() | {"samples": run_stats.samples} if run_stats else None,
        )
    log.info("%s complete: %s", out, stats.summary(timed=False))
    return 0
