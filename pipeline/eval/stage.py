"""The eval stage: pass@k of teacher, base and students on benchmarks, generated and graded the same way.

    distill eval --config recipes/eval/math.yaml model=runs/sft/qwen2.5-math-7b
    distill eval --config recipes/demo/eval.yaml                       # several models -> one table

Everything that can refuse the run is checked before any engine starts: the output folder (eval's own or
empty), every model (finished, loadable, with a tokenizer), every benchmark's problems (named ones or your own,
read as generate reads problems), and the code sandbox when a benchmark needs it. Then, for each model: one
engine (the generate stage's: vLLM, OpenAI-compatible server or transformers) writes every benchmark's samples to
`output/<label>/<benchmark>/` (resumable, fingerprinted); the filter's verifiers grade them into `graded.jsonl`
(`regrade: true` re-scores saved samples without generating); results: `results.md` and `results.json` (metrics
and every setting that decides them), written last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.config import to_dict
from pipeline.eval.config import BenchmarkSpec, EvalConfig, label_of
from pipeline.eval.generation import generate_all
from pipeline.eval.grading import grade, score
from pipeline.eval.problems import kind_of, load, write_problems
from pipeline.eval.recovery import first_pass_error_rate, forced_problems, recovery_metrics
from pipeline.eval.report import settings, write_results
from pipeline.outputs import mark

log = logging.getLogger("distill.eval")


def run(cfg: EvalConfig, args: Any = None) -> int:
    tokenizers = check_models(cfg, getattr(args, "allow_incomplete", False))
    problems = {b.name: load(b) for b in cfg.benchmarks}  # every record checked before anything is written
    kinds = {b.name: kind_of(b, problems[b.name]) for b in cfg.benchmarks}
    sandbox = check_sandbox(set(kinds.values()), cfg.sandbox.mode)
    forced = forced_problems(cfg.recovery, problems[cfg.recovery.benchmark]) if cfg.recovery else []
    mark(cfg.output, "eval")  # checked: the folder is eval's from here on
    files = {b.name: (write_problems(cfg, b, problems[b.name]), kinds[b.name]) for b in cfg.benchmarks}
    if cfg.recovery is not None:
        files[cfg.recovery.name] = (write_problems(cfg, BenchmarkSpec(cfg.recovery.name), forced), "math")
    results: dict[str, Any] = {"models": [], "settings": {}}
    for spec in cfg.model_specs():
        label = label_of(spec)
        if not cfg.regrade:
            generate_all(cfg, spec, files, tokenizers[label])
        metrics = {}
        for bench in cfg.benchmarks:
            rows = grade(cfg, Path(cfg.output) / label / bench.name, kinds[bench.name])
            metrics[bench.name] = m = score(rows, cfg.ks, kinds[bench.name])
            log.info("%s on %s: pass@1 %.3f ± %.3f", label, bench.name, m["pass@1"], m["pass@1_stderr"])
            if cfg.recovery is not None and bench.name == cfg.recovery.benchmark:
                m["first_pass_error_rate"] = first_pass_error_rate(rows, problems[bench.name])
                m.update(recovery_metrics(Path(cfg.output) / label / cfg.recovery.name, forced))
                log.info("%s on %s: first-pass column errors %s, recovery R %.3f", label, bench.name,
                         m["first_pass_error_rate"], m["recovery_rate"])  # fmt: skip
        results["models"].append({"model": spec.path, "label": label, "metrics": metrics})
        results["settings"][label] = settings(cfg, spec, tokenizers[label], sandbox)
    results["config"] = to_dict(cfg)
    print(write_results(cfg.output, results))
    return 0


def check_models(cfg: EvalConfig, allow_incomplete: bool) -> dict[str, Any]:
    """The output folder is eval's own or empty; every model (a killed sft / kd folder is no model to score) is
    there and has a tokenizer: a bad `model=` fails before the first engine, naming its field. Each model's
    tokenizer, by label (None: served), for its engine."""
    from pipeline.errors import UserError
    from pipeline.eval.generation import generate_config
    from pipeline.handoff import require_trained_model
    from pipeline.preflight import check_output_folder, load_tokenizer

    check_output_folder(cfg.output, stage="eval")
    tokenizers: dict[str, Any] = {}
    for i, spec in enumerate(cfg.model_specs()):
        require_trained_model(spec.path, allow_incomplete=allow_incomplete, field=cfg.model_field(i))
        tokenizers[label_of(spec)] = None
        if cfg.backend == "openai":
            continue
        try:  # the model is there (local or on the Hub) and has a tokenizer
            tokenizers[label_of(spec)] = load_tokenizer(
                generate_config(cfg, spec, cfg.benchmarks[0], Path("-"), "math")
            )
        except UserError as e:  # named as eval's recipe field, not the generate config's
            field = cfg.model_field(i, "tokenizer" if e.field == "tokenizer" else "path")
            raise UserError(e.message, file=e.file, line=e.line, field=field, hint=e.hint) from e
    return tokenizers


def check_sandbox(kinds: set[str], mode: str) -> str | None:
    """The sandbox mode code benchmarks will use, checked before anything is generated (None: no code)."""
    if "code" not in kinds:
        return None
    from pipeline.sandbox.box import require_mode

    return require_mode(mode)
