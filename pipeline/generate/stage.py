"""The generate stage: a teacher writes chain-of-thought samples for problems, resumably, shard by shard.

    distill generate --config recipes/teachers/qwq-32b.yaml [--shard 3/8] [sampling.n=4 ...]

The run, top to bottom: plan (read and check every input, refuse a folder made with other settings, skip every
sample already written; plan.py), start the engine (in this process, or replicas on a Ray cluster with
`launch: ray`; engines.py), stream its completions into the commit loop (this process is the only writer; a
shard every `flush_every` samples; commit.py), then check the folder holds exactly the plan and write
`manifest.json` last. In `mode: score` the teacher scores existing samples' completions instead.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.errors import UserError
from pipeline.generate.commit import commit, finish
from pipeline.generate.config import GenerateConfig
from pipeline.generate.engine_api import Engine
from pipeline.generate.engines import build_engine
from pipeline.generate.plan import make_plan
from pipeline.generate.progress import Stats
from pipeline.generate.resume import done_ids
from pipeline.outputs import FolderLock

log = logging.getLogger("distill.generate")


def run(cfg: GenerateConfig, args: Any = None, engine: Engine | None = None, tokenizer: Any = None) -> int:
    """Run the stage; a caller that already holds the `engine` and its `tokenizer` (eval, tests) reuses them.
    The folder written is locked for the run (pipeline/outputs.py): a second run started on it is refused."""
    lock = FolderLock("generate")
    try:
        return _run(cfg, args, engine, tokenizer, lock)
    finally:
        lock.release()


def _run(cfg: GenerateConfig, args: Any, engine: Engine | None, tokenizer: Any, lock: FolderLock) -> int:
    plan = make_plan(cfg, tokenizer, engine, getattr(args, "allow_incomplete", False), lock)
    log.info(
        "%s: %d samples planned, %d already written, %d to go",
        plan.out,
        len(plan.planned),
        len(plan.done),
        plan.todo,
    )
    run_stats: Stats | None = None
    if plan.todo:
        owned = engine is None
        engine = engine or build_engine(cfg, plan.tokenizer)  # a cluster that cannot be reached stops here
        try:
            limit = getattr(engine, "max_model_len", None) or plan.max_model_len
            if limit is not None and (plan.max_model_len is None or limit < plan.max_model_len):
                plan.check(limit)  # the engine's context is shorter than the one planned: every prompt again
            if not lock.held:  # a new folder: made and locked only now that the run is sure to write
                plan.out.mkdir(parents=True, exist_ok=True)
                lock.take(plan.out)
                if done_ids(plan.out):  # written by another run since this one planned: refused, not mixed
                    raise UserError(
                        f"{plan.out} was written by another distill generate run while this one started",
                        file=plan.out,
                        field="output",
                        hint="rerun this command once that run has ended: it resumes from what that run committed",
                    )
            (plan.out / "manifest.json").unlink(missing_ok=True)  # the folder is incomplete until we finish
            run_stats = commit(cfg, plan, engine.run(cfg, plan.requests(limit)))
        finally:
            if owned:
                engine.close()
    return finish(cfg, plan, run_stats)
