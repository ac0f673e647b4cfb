"""The filter stage: teacher samples in, a verified, clean training dataset out, with an account of every drop.

    distill filter --config recipes/filter/math.yaml [input=runs/generate/x output=runs/filter/x]

Reads every sample (and the teacher's logprob sidecar when there is one), runs the recipe's steps in order over
the samples still kept, then writes, into a temporary folder renamed into place at the end:
  data/train-*.parquet   the kept samples in TRL's conversational prompt/completion format (+ teacher top-k)
  rejected.jsonl         every dropped sample with the step, reason and detail that dropped it
  report.json, report.png  counts per step and reason, pass rates, token lengths, and their plots
  manifest.json          written last
Every input sample ends up kept or rejected exactly once (checked before anything is published).
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from pipeline import preflight
from pipeline.config import to_dict
from pipeline.filter.config import FilterConfig
from pipeline.filter.dataset import write_dataset
from pipeline.filter.report import build_report, plot_report
from pipeline.filter.sidecars import check_sidecars
from pipeline.filter.steps import Context, Drop, Item, Length, count_tokens
from pipeline.handoff import require_complete
from pipeline.publish import publish_folder, staging_folder
from pipeline.records.manifest import write_manifest
from pipeline.records.read import read_unique_samples
from pipeline.records.schema import RecordError, to_row
from pipeline.records.write import write_json, write_jsonl

log = logging.getLogger("distill.filter")


def load_items(cfg: FilterConfig) -> list[Item]:
    return [Item.from_sample(sample) for sample in read_unique_samples(cfg.input)]


def counting_tokenizer(cfg: FilterConfig, items: list[Item], needed: bool) -> Any:
    """The recipe's tokenizer (default: the teacher's), or None if unavailable and not `needed`."""
    if not cfg.count_tokens:
        return None
    name = cfg.tokenizer or (items[0].sample.teacher if items else None)
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


def run_steps(steps: list, items: list[Item], context: Context) -> tuple[dict[int, tuple[str, Drop]], list]:
    fate: dict[int, tuple[str, Drop]] = {}
    alive = list(range(len(items)))
    step_log = []
    for step in steps:
        started = time.perf_counter()
        drops = step.run([items[i] for i in alive], context)
        for j, drop in drops.items():
            fate[alive[j]] = (step.name, drop)
            if step.failure:
                context.record_failure(items[alive[j]])
        reasons: dict[str, int] = {}
        for drop in drops.values():
            reasons[drop.reason] = reasons.get(drop.reason, 0) + 1
        step_log.append(
            {
                "step": step.name,
                "in": len(alive),
                "dropped": len(drops),
                "reasons": reasons,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        log.info("%-13s %6d in, %6d dropped %s", step.name, len(alive), len(drops), reasons or "")
        alive = [i for j, i in enumerate(alive) if j not in drops]
    return fate, step_log


def run(cfg: FilterConfig, args: Any = None) -> int:
    require_complete(cfg.input, "generate", allow_incomplete=getattr(args, "allow_incomplete", False))
    preflight.check_output_folder(cfg.output, stage="filter")
    steps = cfg.build_steps()
    for step in steps:
        step.prepare()  # e.g. no code sandbox here: one clear error before anything runs
    items = load_items(cfg)
    if not items:
        raise RecordError(f"{cfg.input}: no samples")
    tok = counting_tokenizer(cfg, items, any(isinstance(s, Length) for s in steps))
    if cfg.logprobs:  # the teacher's own tokenizer can also check the sidecars' tokens
        check_sidecars(cfg.input, tok if cfg.tokenizer in (None, items[0].sample.teacher) else None)
    context = Context(count_tokens=token_counter(tok), workers=cfg.workers)
    started = time.perf_counter()
    fate, step_log = run_steps(steps, items, context)
    count_tokens(items, context)
    kept = [i for i in range(len(items)) if i not in fate]
    assert len(kept) + len(fate) == len(items)  # every sample kept or rejected exactly once
    report = build_report(items, fate, step_log, context)
    report["seconds"] = round(time.perf_counter() - started, 2)
    if context.sandbox:
        report["sandbox"] = context.sandbox
    publish(cfg, items, fate, kept, report)
    log.info("kept %d of %d samples -> %s", len(kept), len(items), cfg.output)
    return 0


def publish(cfg: FilterConfig, items: list[Item], fate: dict, kept: list[int], report: dict) -> None:
    """Write everything into a staging folder, then publish it in place of the old output (pipeline/publish.py):
    a kill at any point leaves the old output or the new one, whole."""
    tmp = staging_folder(cfg.output)
    try:
        files = write_dataset(tmp / "data", [items[i] for i in kept], cfg)
        write_jsonl(
            tmp / "rejected.jsonl",
            (
                {**to_row(items[i].sample), "step": step, "reason": drop.reason, "detail": drop.detail}
                for i, (step, drop) in sorted(fate.items())
            ),
        )
        write_json(tmp / "report.json", report)
        plot_report(report, items, fate, tmp / "report.png")
        summary = {k: report[k] for k in ("input", "kept", "rejected", "rejected_by_reason", "verdicts")}
        write_manifest(
            tmp,
            "filter",
            to_dict(cfg),
            inputs=[cfg.input],
            counts=summary,
            dataset_files=[str(f.relative_to(tmp)) for f in files],
            pass_rate=report["pass_rate"].get("mean"),
        )
        publish_folder(tmp, cfg.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
