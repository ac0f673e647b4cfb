"""The `distill` command: one subcommand per stage, plus `validate` and `tiny-model`.

    distill <stage> --config recipes/....yaml [dotted.key=value ...]
    distill validate --config recipes/....yaml [dotted.key=value ...]
    distill tiny-model DIR [--hidden-size 128 ...]
    distill verify INPUT.jsonl -o OUT.jsonl [--kind math|code]
    distill push FOLDER --repo-id OWNER/NAME [--private] [--checkpoints] [--dry-run]
    distill serve MODEL [vLLM arguments: --port 8000 ...]


Only argparse and the light config modules are imported here, so `distill --help` is instant; each stage
imports its heavy libraries (torch, vLLM, TRL) when it runs.

Errors: any UserError (pipeline/errors.py: recipes, records, paths, models, hand-offs, push) is printed as one
line `error: FILE[:LINE]: field 'X': what is wrong; what to do` with exit code 2; an error about a recipe field
gets the recipe line (or the override) that set it. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from pipeline import logs, preflight
from pipeline.config import ConfigError, dump_yaml, from_dict, read_recipe, to_dict
from pipeline.errors import UserError
from pipeline.filter import verify
from pipeline.push import hub
from pipeline.sandbox.box import SandboxUnavailable
from pipeline.tiny_model import TinyModelSpec

# stage name -> (config class, run function, one-line help). A stage is listed here once it works.
STAGES: dict[str, tuple[str, str, str]] = {
    "generate": (
        "pipeline.generate.config:GenerateConfig",
        "pipeline.generate.stage:run",
        "a teacher writes chain-of-thought samples (vLLM, OpenAI-compatible server or transformers)",
    ),
    "filter": (
        "pipeline.filter.config:FilterConfig",
        "pipeline.filter.stage:run",
        "verify, clean, deduplicate and decontaminate samples into a training dataset, with a report",
    ),
    "sft": (
        "pipeline.train.sft.config:SFTStageConfig",
        "pipeline.train.sft.stage:run",
        "fine-tune a student on the filtered traces with TRL (full, LoRA, QLoRA; accelerate launch)",
    ),
    "eval": (
        "pipeline.eval.config:EvalConfig",
        "pipeline.eval.stage:run",
        "pass@k of models on named benchmarks, generated and graded the same way, in one table",
    ),
    "kd": (
        "pipeline.train.kd.config:KDStageConfig",
        "pipeline.train.kd.stage:run",
        "distil the teacher's logits into a student: stored top-k logprobs or a live teacher",
    ),
    "opd": (
        "pipeline.train.opd.config:OPDStageConfig",
        "pipeline.train.opd.stage:run",
        "on-policy distillation: the student samples, its teacher (local or served) scores every token",
    ),
}


# each stage's own `key=value` example in its --help
EXAMPLES = {
    "generate": "sampling.n=4 problems.limit=100",
    "filter": "input=runs/generate output=runs/filter-2",
    "sft": "trainer.learning_rate=1e-5 trainer.num_train_epochs=2",
    "eval": "model=runs/sft sampling.n=8",
    "kd": "kd.kd_weight=0.7 trainer.learning_rate=1e-5",
    "opd": "opd.loss=jsd trainer.max_steps=100",
}


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_stage_config(stage: str, path: str | None, overrides: list[str], deep: bool = True) -> Any:
    """Load a recipe for `stage`; the recipe's own `stage:` key, when present, must agree.

    With `deep`, blocks passed through to other libraries (`engine:`, `trainer:`) are checked by them too.
    """
    from pipeline.config import Source, apply_override

    data, lines = read_recipe(path) if path else ({}, {})
    declared = data.pop("stage", None)
    if declared is not None and declared != stage:
        raise ConfigError(f"{path}: this recipe is for stage '{declared}', not '{stage}'")
    for override in overrides:
        apply_override(data, override)
    source = Source(path or "the command line", lines, {o.partition("=")[0] for o in overrides})
    cfg = from_dict(_resolve(STAGES[stage][0]), data, source)
    if hasattr(cfg, "check"):
        cfg.check(source)  # cheap cross-field checks that need to say where (e.g. the filter's steps)
    if deep:
        check_passthrough(cfg, source)
    return cfg


def check_passthrough(cfg: Any, source: Any) -> None:
    """The blocks a recipe hands to libraries (keys and value types, by the library's own fields), then what
    they imply: the learning-rate schedule against max_steps, vLLM's engine settings against the model."""
    from pipeline.engine_settings import check_engine_settings

    if hasattr(cfg, "check_passthrough"):
        cfg.check_passthrough(source.where)
    if isinstance(getattr(cfg, "trainer", None), dict):
        preflight.check_schedule(cfg.trainer, source.where)
    if getattr(cfg, "backend", None) == "vllm" and cfg.engine:
        models = [cfg.model] if getattr(cfg, "model", None) else []
        models += [m.path for m in getattr(cfg, "models", ())]
        for model in models:
            check_engine_settings(model, cfg.engine, source.where, getattr(cfg, "revision", None))


def recipe_stage(path: str) -> str:
    """The stage a recipe declares with its top-level `stage:` key."""
    data, _ = read_recipe(path)
    stage = data.get("stage")
    if stage not in STAGES:
        known = ", ".join(STAGES)
        if stage is None:
            raise ConfigError(
                f"{path}: no top-level 'stage:' key; it names the stage the recipe is for ({known})"
            )
        raise ConfigError(f"{path}: unknown stage '{stage}'; known stages: {known}")
    return stage


def _split_overrides(values: list[str], parser: argparse.ArgumentParser) -> list[str]:
    for value in values:
        if "=" not in value:
            parser.error(f"unexpected argument {value!r}: overrides look like dotted.key=value")
    return values


def cmd_validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    stage = args.stage or recipe_stage(args.config)
    cfg = load_stage_config(stage, args.config, _split_overrides(args.overrides, parser))
    print(f"# {args.config}: valid recipe for stage '{stage}'")
    print(dump_yaml({"stage": stage, **to_dict(cfg)}), end="")
    return 0


def cmd_stage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    overrides = _split_overrides(args.overrides, parser)
    if getattr(args, "shard", None):  # `--shard i/N` is the recipe's `shard` key, checked the same way
        overrides.append(f"shard={args.shard}")
    cfg = load_stage_config(args.command, args.config, overrides)
    run = _resolve(STAGES[args.command][1])
    try:
        result = run(cfg, args)
    except Exception as e:
        from pipeline.engine_settings import vllm_settings_error

        e = vllm_settings_error(e) or e  # vLLM refusing the engine: block, told in one line
        if isinstance(e, UserError) and e.file is None and e.field:  # a recipe field: where it is set
            raise UserError(str(e), file=recipe_where(args.config, overrides, e.field)) from None
        if isinstance(e, UserError):
            raise e from None
        raise
    return int(result) if isinstance(result, int) else 0


def recipe_where(path: str, overrides: list[str], key: str) -> str:
    """`recipe.yaml:LINE` of a dotted key, or the override that set it."""
    from pipeline.config import Source

    _, lines = read_recipe(path)
    return Source(path, lines, {o.partition("=")[0] for o in overrides}).where(key)


TINY_HELP = {"intermediate_size": "default: 4 x hidden size"}


def cmd_tiny_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pipeline.tiny_model import build_tiny_model, count_parameters

    try:
        spec = TinyModelSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TinyModelSpec)})
    except ValueError as e:
        parser.error(str(e))
    corpus = Path(args.corpus).read_text(encoding="utf-8") if args.corpus else None
    out = build_tiny_model(args.dir, spec, corpus, args.tokenizer_from)

    print(f"wrote {out} ({count_parameters(out):,} parameters, head_dim {spec.hidden_size // spec.heads})")
    return 0


def cmd_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return verify.main_verify(args)


def cmd_push(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return hub.run_push(args)


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pipeline.serve import main_serve

    return main_serve(args)


def cmd_toy_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pipeline.toy.data import main_toy_data

    return main_toy_data(args)


def cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pipeline.toy.demo import main_demo

    return main_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill", description="Distil a teacher's reasoning into students."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_stage_parsers(sub)
    _add_validate_parser(sub)
    _add_tiny_model_parser(sub)
    _add_tool_parsers(sub)
    return parser


def _add_stage_parsers(sub: Any) -> None:
    """One subcommand per stage: `--config`, dotted overrides, `--allow-incomplete` (and generate's `--shard`)."""
    for name, (_, _, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, help="recipe YAML")
        p.add_argument(
            "overrides", nargs="*", metavar="key=value", help=f"dotted overrides, e.g. {EXAMPLES[name]}"
        )
        if name == "generate":
            p.add_argument("--shard", help="i/N: process the i-th of N deterministic shards of the problems")
        p.add_argument(
            "--allow-incomplete",
            action="store_true",
            help="read an input folder without its manifest.json (the remains of a killed or failed run)",
        )


def _add_validate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="check a recipe and print it resolved (loads no model; TRL, PEFT and vLLM check their blocks)",
    )
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument(
        "--stage", choices=list(STAGES) or None, help="stage to validate for (default: the recipe's)"
    )
    # every validate now checks the trainer:/engine:/peft blocks against their libraries; --deep is kept so
    # that older commands and scripts still run
    p.add_argument("--deep", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. sampling.n=8")


def _add_tiny_model_parser(sub: Any) -> None:
    p = sub.add_parser("tiny-model", help="build a tiny Qwen2 model and BPE tokenizer offline (tests, demos)")
    p.add_argument("dir", help="output folder")
    for f in dataclasses.fields(TinyModelSpec):  # one flag per field, its default the spec's
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=int,
            default=f.default,
            help=TINY_HELP.get(f.name) or f"default: {f.default}",
        )
    p.add_argument("--corpus", help="text file to train the tokenizer on (default: a built-in sample)")
    p.add_argument(
        "--tokenizer-from", help="reuse the tokenizer of this tiny-model folder instead of training one"
    )


def _add_tool_parsers(sub: Any) -> None:
    """serve, verify, push, toy-data and demo: each module gives its own help text and arguments."""
    from pipeline import serve
    from pipeline.toy import data as toy_data
    from pipeline.toy import demo

    tools = (("serve", serve), ("verify", verify), ("push", hub), ("toy-data", toy_data), ("demo", demo))
    for name, module in tools:
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)


COMMANDS = {
    "validate": cmd_validate,
    "tiny-model": cmd_tiny_model,
    "verify": cmd_verify,
    "push": cmd_push,
    "serve": cmd_serve,
    "toy-data": cmd_toy_data,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come on both sides of an option (`--config r.yaml a=1 --shard 0/2 b=2`, as the sbatch files
    # build commands); argparse's positional takes only the first run of them and leaves the rest over
    args, rest = parser.parse_known_args(argv)
    if (
        rest
        and isinstance(getattr(args, "overrides", None), list)
        and not any(r.startswith("-") for r in rest)
    ):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.setup()
    handler = COMMANDS.get(args.command, cmd_stage)
    try:
        return handler(args, parser)
    # ours (file/line/field and what to do; no sandbox here says what is missing); anything else, a sandbox that
    # failed while running included, is a bug or a broken machine: its traceback
    except (UserError, SandboxUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
