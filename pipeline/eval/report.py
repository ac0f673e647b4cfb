"""What a score is reported with: every setting that decides it (model, revision, chat template, prompt,
sampling, verifiers), and the results written last and whole: `results.json` and the `results.md` table."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.eval.config import EvalConfig, ModelSpec
from pipeline.eval.generation import PROMPTS
from pipeline.records.write import atomic_write, write_json

log = logging.getLogger("distill.eval")
RESULTS = "results.json"


def template_sha(tokenizer: Any) -> str | None:
    """The hash of the chat template the model's prompts went through; None for a served model (no tokenizer
    here: the server applies its own)."""
    from pipeline.generate.resume import chat_template_sha

    return chat_template_sha(tokenizer.chat_template) if tokenizer is not None else None


def settings(cfg: EvalConfig, spec: ModelSpec, tokenizer: Any, sandbox: str | None) -> dict[str, Any]:
    """Everything that decides a score, recorded beside it (open-r1's users could not reproduce scores without)."""
    from pipeline.prompts import load_prompt
    from pipeline.records.manifest import package_versions
    from pipeline.train.method_names import model_method

    versions = package_versions()
    return {
        "model": spec.path,
        "revision": spec.revision,
        "method": model_method(
            spec.path
        ),  # self-distillation, mutual learning, ... from its training manifest
        "chat_template_sha256": template_sha(tokenizer),
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
        "sandbox": sandbox,
        "recovery": asdict(cfg.recovery) if cfg.recovery else None,
    }


def markdown_table(results: dict[str, Any]) -> str:
    benches = list(results["models"][0]["metrics"]) if results["models"] else []
    checked = [b for b in benches if "recovery_rate" in results["models"][0]["metrics"][b]]
    extra = [f"{b} {what}" for b in checked for what in ("first-pass column errors", "recovery R")]
    head = (
        "| model | "
        + " | ".join([*(f"{b} pass@1" for b in benches), *extra])
        + " | mean tokens | truncated |"
    )
    lines = [head, "|" + "---|" * (len(benches) + len(extra) + 3)]
    for m in results["models"]:
        cells = [
            f"{100 * m['metrics'][b]['pass@1']:.1f} ± {100 * m['metrics'][b]['pass@1_stderr']:.1f}"
            for b in benches
        ]
        for b in checked:
            first = m["metrics"][b]["first_pass_error_rate"]
            cells += [
                "-" if first is None else f"{100 * first:.1f}%",
                f"{100 * m['metrics'][b]['recovery_rate']:.1f}%",
            ]
        tokens = sum(m["metrics"][b]["mean_output_tokens"] for b in benches) / max(len(benches), 1)
        trunc = sum(m["metrics"][b]["truncation_rate"] for b in benches) / max(len(benches), 1)
        method = (results.get("settings", {}).get(m["label"]) or {}).get("method")
        label = f"{m['label']} ({method})" if method else m["label"]  # how it was made, when not plain
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tokens:.0f} | {100 * trunc:.1f}% |")
    return "\n".join(lines) + "\n"


def write_results(output: str | Path, results: dict[str, Any]) -> str:
    """results.md, then results.json (the mark of a finished eval), each written whole; the table."""
    table = markdown_table(results)
    atomic_write(Path(output) / "results.md", lambda tmp: tmp.write_text(table))
    write_json(Path(output) / RESULTS, results)
    return table
