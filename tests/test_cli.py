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
