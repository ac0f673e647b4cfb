"""The `distill` command: light start-up, validate, errors with exit codes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, run_distill


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from pipeline.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'trl', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_commands():
    result = run_distill("--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "tiny-model" in result.stdout


def test_overrides_must_look_like_key_value(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: nothing\n")
    result = run_distill("validate", "--config", str(recipe), "oops")
    assert result.returncode != 0


def test_overrides_on_both_sides_of_an_option_all_apply_in_order(tmp_path):
    """`--config r.yaml a=1 --shard 0/2 b=2` (the sbatch files append the user's `--shard` and overrides after
    their own): argparse's positional takes only the first run of overrides; the rest must apply too, in order."""
    from tests.conftest import distill_main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"stage: generate\nmodel: m\nproblems:\n  path: {tmp_path / 'p.jsonl'}\noutput: out\n")
    args = ["--config", str(recipe), "sampling.n=2", "--stage", "generate", "sampling.n=3", "logprobs=4"]
    result = distill_main("validate", *args)
    assert result.returncode == 0, result.stderr
    assert "n: 3" in result.stdout and "logprobs: 4" in result.stdout
    for bad in (["oops"], ["--bogus", "x=1"]):  # not an override, an unknown option: refused as before
        result = distill_main(
            "validate", "--config", str(recipe), "sampling.n=2", "--stage", "generate", *bad
        )
        assert result.returncode == 2 and bad[0] in result.stderr, result.stderr


def test_each_stage_help_shows_an_override_example_of_its_own_that_validates():
    from pipeline.cli import EXAMPLES, STAGES, build_parser, load_stage_config

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    shown = set()
    for stage in STAGES:
        text = subparsers[stage].format_help()
        example = EXAMPLES[stage]
        assert " ".join(example.split()) in " ".join(text.split()), stage
        shown.add(example)
        load_stage_config(stage, f"recipes/demo/{stage}.yaml", example.split(), deep=False)
    assert len(shown) == len(STAGES)  # not one example for all (sampling.n=4 means nothing to sft)


def test_tiny_model_help_shows_every_default():
    from pipeline.tiny_model import TinyModelSpec

    text = " ".join(run_distill("tiny-model", "--help").stdout.split())
    assert "--hidden-size HIDDEN_SIZE default: 128" in text
    assert (
        f"--max-position-embeddings MAX_POSITION_EMBEDDINGS default: {TinyModelSpec().max_position_embeddings}"
        in text
    )
    assert "default: 4 x hidden size" in text


def test_make_help_lists_every_target_with_its_help():
    import re

    makefile = (REPO / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE)
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.strip()}
    assert set(listed) == set(targets)
    assert listed["sft"].startswith("STUDENT=") and listed["serve"].startswith("MODEL=")


def test_trls_vllm_version_warning_is_printed_once_a_run():
    imports = "import pipeline.train.opd.trainer, pipeline.train.sft.stage, pipeline.train.kd.stage"
    # the two interpreters at once: each spends its ~10 s importing torch, TRL and vLLM on one core
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", setup + imports],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for setup in ("", "from pipeline import logs; logs.setup(); ")
    ]
    outs = [proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outs]
    without, with_setup = (err.count("TRL currently supports vLLM versions") for _, err in outs)
    assert without > 1  # TRL warns from each of its modules that checks the vLLM version
    assert with_setup == 1
