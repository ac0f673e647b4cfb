"""The filter stage: teacher samples in, a verified, clean training dataset out, with an account of every drop.

    distill filter --config recipes/filter/math.yaml [input=runs/generate/x output=runs/filter/x]

Streams the samples (and the teacher's logprob sidecar when there is one, a shard's at a time) through the
recipe's steps in batches of `batch_size` (pipeline/filter/passes.py: one pass, or two with a `select` step), so
memory holds a batch, not the input; what the whole-set steps remember of every sample is a compact key, in a
scratch sqlite file (keys.py). It writes, into a temporary folder renamed into place at the end:
  data/train-*.parquet   the kept samples in TRL's conversational prompt/completion format (+ teacher top-k)
  rejected.jsonl         every dropped sample with the step, reason and detail that dropped it
  report.json, report.png  counts per step and reason, pass rates, token lengths, and their plots
  manifest.json          written last
Every input sample ends up kept or rejected exactly once (checked before anything is published).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import preflight
from pipeline.config import to_dict
from pipeline.filter.config import FilterConfig
from pipeline.filter.dataset import DatasetWriter
from pipeline.filter.keys import KeyStore
from pipeline.filter.passes import Passes
from pipeline.filter.rejected import RejectedWriter
from pipeline.filter.report import Tally, build_report, plot_report
from pipeline.filter.sidecars import check_sidecars
from pipeline.filter.steps import Context, Drop, Item, Length, Step
from pipeline.handoff import require_complete
from pipeline.publish import publish_folder, staging_folder
from pipeline.records.manifest import write_manifest
from pipeline.records.read import count_rows, located_samples
from pipeline.records.schema import RecordError, Sample
from pipeline.records.write import write_json

log = logging.getLogger("distill.filter")


def read_batches(cfg: FilterConfig, ids: KeyStore) -> Iterator[list[Item]]:
    """The input's samples, `cfg.batch_size` at a time, in order; a sample id seen twice is an error naming both
    places (the ids seen are kept on disk, in `ids`)."""
    batch: list[Item] = []
    places: list[str] = []
    for index, (file, where, sample) in enumerate(located_samples(cfg.input)):
        batch.append(Item.from_sample(sample, index, sys.intern(str(file))))
        places.append(where)
        if len(batch) == cfg.batch_size:
            check_unique(batch, places, ids)
            yield batch
            batch, places = [], []
    if batch:
        check_unique(batch, places, ids)
        yield batch


def check_unique(batch: list[Item], places: list[str], ids: KeyStore) -> None:
    keys = [item.sample.id.encode() for item in batch]
    first = {k: where for k, (_, where) in ids.lookup("ids", keys).items()}
    for key, where in zip(keys, places, strict=True):
        if key in first:
            raise RecordError(
                f"{where}: field 'id': sample id {key.decode()!r} appears twice (first at {first[key]})"
            )
        first[key] = where
    ids.insert("ids", [(key, ids.number(), where) for key, where in zip(keys, places, strict=True)])


def first_sample(cfg: FilterConfig) -> Sample:
    for _, _, sample in located_samples(cfg.input):
        return sample
    raise RecordError(f"{cfg.input}: no samples")


def counting_tokenizer(cfg: FilterConfig, first: Sample, needed: bool) -> Any:
    """The recipe's tokenizer (default: the teacher's), or None if unavailable and not `needed`."""
    if not cfg.count_tokens:
        return None
    name = cfg.tokenizer or first.teacher
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        if needed:
            raise RecordError(
                f"cannot load tokenizer {name!r} to count tokens ({e}); set 'tokenizer:'"
            ) from None
        log.warning("no tokenizer %r (%s): token statistics use the samples' completion counts only", name, e)
        return None


def token_counter(tok: Any) -> Any:
    """A batch token counter over `tok`, or None without one."""
    if tok is None:
        return None

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    return count


def run(cfg: FilterConfig, args: Any = None) -> int:
    require_complete(cfg.input, "generate", allow_incomplete=getattr(args, "allow_incomplete", False))
    preflight.check_output_folder(cfg.output, stage="filter")
    steps = cfg.build_steps()
    for step in steps:
        step.prepare()  # e.g. no code sandbox here: one clear error before anything runs
    first = first_sample(cfg)
    tok = counting_tokenizer(cfg, first, any(isinstance(s, Length) for s in steps))
    if cfg.logprobs:  # the teacher's own tokenizer can also check the sidecars' tokens
        check_sidecars(cfg.input, tok if cfg.tokenizer in (None, first.teacher) else None)
    tmp = staging_folder(cfg.output)
    try:
        with tempfile.TemporaryDirectory(prefix=".scratch-", dir=tmp) as scratch:  # gone before publishing
            report, tally = filter_into(tmp, Path(scratch), cfg, steps, token_counter(tok))
        publish(cfg, tmp, report, tally)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("kept %d of %d samples -> %s", report["kept"], report["input"], cfg.output)
    return 0


def filter_into(
    tmp: Path, scratch: Path, cfg: FilterConfig, steps: list[Step], counter: Any
) -> tuple[dict[str, Any], Tally]:
    """Stream the samples through the steps into the dataset and rejected.jsonl under `tmp`; the report."""
    keys = KeyStore(scratch / "keys.sqlite")
    context = Context(count_tokens=counter, workers=cfg.workers, keys=keys)
    passes = Passes(steps, context, scratch, cfg.batch_size)
    dataset = DatasetWriter(tmp / "data", cfg)
    rejected = RejectedWriter(tmp / "rejected.jsonl", scratch, len(passes.spans))
    output = Output(dataset, rejected)
    tally, started = Tally(), time.perf_counter()
    try:
        step_log = passes.run(read_batches(cfg, keys), output, tally, count_rows(cfg.input))
    finally:
        for step in steps:
            step.close()
        keys.close()
    output.files = dataset.close()
    rejected.close()
    check_accounted(tally.input, output.count, rejected.count, sum(s["dropped"] for s in step_log))
    report = build_report(tally, step_log, context)
    report["seconds"] = round(time.perf_counter() - started, 2)
    if context.sandbox:
        report["sandbox"] = context.sandbox
    report["dataset_files"] = [str(f.relative_to(tmp)) for f in output.files]
    return report, tally


def check_accounted(read: int, kept: int, rejected: int, dropped: int) -> None:
    """Every sample read was written once, to the dataset or to rejected.jsonl, as the steps decided; otherwise
    nothing is published (a bug of ours: it raises, with its traceback)."""
    if not read == kept + rejected == kept + dropped:
        raise RuntimeError(
            f"filter lost track of samples: {read} read, {kept} kept + {rejected} rejected written, the steps "
            f"dropped {dropped}; nothing was published (a bug in distill, please report it)"
        )


class Output:
    """Where the passes put samples: kept ones into the dataset, dropped ones into rejected.jsonl."""

    def __init__(self, dataset: DatasetWriter, rejected: RejectedWriter) -> None:
        self.dataset, self.rejected_writer, self.count = dataset, rejected, 0
        self.files: list[Path] = []

    def kept(self, items: list[Item]) -> None:
        self.count += len(items)
        self.dataset.write(items)

    def rejected(self, rows: list[tuple[Item, str, Drop]], pass_number: int) -> None:
        self.rejected_writer.rejected(rows, pass_number)


def publish(cfg: FilterConfig, tmp: Path, report: dict[str, Any], tally: Tally) -> None:
    """Finish the staging folder (report, plot, manifest last), then publish it in place of the old output
    (pipeline/publish.py): a kill at any point leaves the old output or the new one, whole."""
    files = report.pop("dataset_files")
    write_json(tmp / "report.json", report)
    plot_report(report, tally, tmp / "report.png")
    summary = {k: report[k] for k in ("input", "kept", "rejected", "rejected_by_reason", "verdicts")}
    write_manifest(
        tmp,
        "filter",
        to_dict(cfg),
        inputs=[cfg.input],
        counts=summary,
        dataset_files=files,
        pass_rate=report["pass_rate"].get("mean"),
    )
    publish_folder(tmp, cfg.output)
