"""Training progress in a log file: a readable line per logging step (step/total, loss, lr, tok/s, ETA), the full
metrics as JSON for the log, and no tqdm carriage returns."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pipeline.logs import duration
from pipeline.records.manifest import read_manifest
from pipeline.train.progress import progress_line
from tests.conftest import REPO
from tests.helpers import write_sft_dataset


@pytest.mark.parametrize(
    ("step", "total", "logs", "eta", "rate", "line"),
    [
        (120, 4000, {"loss": 0.92261, "learning_rate": 0.003, "grad_norm": 1.7}, 372.4, 2480.2,
         "step 120/4000 (3%) loss 0.9226 lr 3.0e-03 2,480 tok/s ETA 6m12s"),
        (2, 12, {"loss": "1.234", "learning_rate": "5e-06"}, None, None, "step 2/12 (16%) loss 1.234 lr 5.0e-06"),
        (7, 12, {}, 8000.0, None, "step 7/12 (58%) ETA 2h13m"),
        (12, 12, {"train_runtime": 42.3, "train_loss": 0.51}, None, None, "done: 12 steps in 42s, mean loss 0.51"),
    ],
)  # fmt: skip
def test_a_progress_line_reads_as_one_sentence(step, total, logs, eta, rate, line):
    assert progress_line(step, total, logs, eta, rate) == line


def test_durations_are_short():
    assert [duration(s) for s in (0.4, 45, 372, 3600, 7505)] == ["0s", "45s", "6m12s", "1h00m", "2h05m"]


@pytest.mark.slow
def test_a_training_run_logged_to_a_file_reads_line_by_line(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_sft_dataset(data)
    out = tmp_path / "out"
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"stage: sft\nmodel: {tiny_model_dir}\ndata: [{{path: {data}}}]\noutput: {out}\ntrainer:\n"
        "  max_steps: 12\n  per_device_train_batch_size: 4\n  learning_rate: 3.0e-3\n  logging_steps: 4\n"
        "  save_steps: 12\n  gradient_checkpointing: false\n  report_to: none\n  max_length: 256\n"
    )
    log = tmp_path / "train.log"
    with log.open("w") as f:  # a file, as `distill sft ... > train.log 2>&1` gives
        code = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "sft", "--config", str(recipe)],
            stdout=f,
            stderr=f,
            cwd=REPO,
        ).returncode
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "\r" not in text and "{'loss'" not in text and "it/s]" not in text  # no tqdm, no raw dict prints
    pattern = (
        r"pipeline\.train\.progress: step (\d+)/12 \(\d+%\) loss (\S+) lr (\S+)(?: ([\d,]+) tok/s)? ETA (\S+)"
    )
    lines = re.findall(pattern, text)
    assert [int(m[0]) for m in lines] == [4, 8, 12]
    history = {e["step"]: e for e in read_manifest(out)["log_history"] if "loss" in e}
    for step, loss, lr, _, _ in lines:  # the line's figures are the trainer's own, as saved in its history
        assert float(loss) == pytest.approx(history[int(step)]["loss"], rel=1e-3)
        assert float(lr) == pytest.approx(history[int(step)]["learning_rate"], rel=0.05)
    assert all(m[3] for m in lines[1:]) and lines[-1][4] == "0s"  # tok/s from the second on; nothing left
    metrics = [json.loads(m) for m in re.findall(r"pipeline\.train\.metrics: (\{.*\})", text)]
    assert [m["loss"] for m in metrics if "loss" in m] == [history[s]["loss"] for s in (4, 8, 12)]
    assert "pipeline.train.progress: done: 12 steps in" in text
