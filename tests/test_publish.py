"""Publishing a whole folder survives a SIGKILL in every window, and the next run cleans up after it.

The kills are exact: DISTILL_TEST_KILL_AT makes the real `distill filter` process SIGKILL itself at a named
point of pipeline/publish.py (see pipeline/faults.py).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from pipeline.publish import publish_folder, recover_folder
from pipeline.records.manifest import read_manifest, write_manifest
from tests.conftest import run_distill

GOOD = "<think>\nI add 2 and 3: 2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}."


def write_generate_output(folder: Path, n: int) -> Path:
    rows = [
        {"id": f"p{i}/0", "problem_id": f"p{i}", "sample_index": 0, "problem": "What is 2+3?", "answer": "5",
         "prompt": [{"role": "user", "content": "What is 2+3?"}], "completion": GOOD, "finish_reason": "stop",
         "num_prompt_tokens": 9, "num_completion_tokens": 20, "teacher": "t", "sampling": {}}
        for i in range(n)
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_manifest(folder, "generate", {}, [], {"samples": n})
    return folder


def filter_recipe(tmp_path: Path, samples: Path) -> Path:
    recipe = tmp_path / "filter.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {samples}\noutput: {tmp_path / 'out'}\ncount_tokens: false\nworkers: 1\n"
        "steps:\n  - name: parse\n"
    )
    return recipe


def kept(out: Path) -> int:
    return read_manifest(out)["counts"]["kept"]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("point", ["publish:before-aside", "publish:after-aside", "publish:after-rename"])
def test_filter_killed_while_publishing_keeps_a_whole_output_and_the_next_run_cleans_up(tmp_path, point):
    recipe = filter_recipe(tmp_path, write_generate_output(tmp_path / "gen", 3))
    out = tmp_path / "out"
    assert run_distill("filter", "--config", str(recipe)).returncode == 0
    assert kept(out) == 3
    write_generate_output(tmp_path / "gen", 5)  # new samples: the next publish replaces the output
    killed = run_distill("filter", "--config", str(recipe), env={"DISTILL_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # a reader sees the whole old output (or the whole new one once it was renamed in), never a part
    recover_folder(out)
    assert kept(out) == (5 if point == "publish:after-rename" else 3)
    assert {p.name for p in out.iterdir()} >= {"data", "rejected.jsonl", "report.json", "manifest.json"}
    again = run_distill("filter", "--config", str(recipe))
    assert again.returncode == 0, again.stderr[-2000:]
    assert kept(out) == 5 and leftovers(out) == []


def test_sft_reading_a_folder_whose_publish_was_killed_gets_the_previous_output_back(tmp_path):
    """Killed between the two renames, the output folder is missing: the next reader puts the old one back."""
    recipe = filter_recipe(tmp_path, write_generate_output(tmp_path / "gen", 3))
    out = tmp_path / "out"
    assert run_distill("filter", "--config", str(recipe)).returncode == 0
    killed = run_distill(
        "filter", "--config", str(recipe), env={"DISTILL_TEST_KILL_AT": "publish:after-aside"}
    )
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and len(leftovers(out)) == 2  # the old output aside, the new one staged
    from pipeline.handoff import require_complete

    assert require_complete(out, "filter")["counts"]["kept"] == 3
    assert leftovers(out) == []


def test_publish_replaces_a_folder_and_leaves_nothing_beside_it(tmp_path):
    final = tmp_path / "final"
    for generation in ("old", "new"):
        staged = tmp_path / f".final.tmp-{os.getpid()}"
        staged.mkdir()
        (staged / "which").write_text(generation)
        publish_folder(staged, final)
    assert (final / "which").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["final"]


def test_a_staging_folder_of_a_live_process_is_not_removed(tmp_path):
    final = tmp_path / "final"
    live = tmp_path / f".final.tmp-{os.getppid()}"  # our parent is alive: another run still writing
    dead = tmp_path / ".final.tmp-999999999"
    live.mkdir()
    dead.mkdir()
    recover_folder(final)
    assert live.exists() and not dead.exists()
