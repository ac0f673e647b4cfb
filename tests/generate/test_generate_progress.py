"""generate's progress in a pipe or file: a line at each tenth of the run with its rate, elapsed time and ETA."""

from __future__ import annotations

import time
from types import SimpleNamespace

from pipeline.generate.progress import Stats, plain_line, progress_bar


def completion(tokens: int) -> SimpleNamespace:
    return SimpleNamespace(num_prompt_tokens=10, num_completion_tokens=tokens, finish_reason="stop")


def test_a_plain_line_has_the_rate_and_an_eta_from_it():
    stats = Stats(total=40)
    for _ in range(10):
        stats.add(completion(100))
    stats.started = time.perf_counter() - 20.0  # 10 samples in 20 s: 30 left take 60 s
    line = plain_line(stats)
    assert line.startswith("generate: 10/40 samples (25%), 50 completion tok/s, 20s elapsed, ETA 1m0")
    assert line[-3:] in ("00s", "01s")


def test_in_a_pipe_progress_is_ten_lines_with_an_eta_and_no_redraws(capsys):
    stats = Stats(total=50)
    with progress_bar(stats) as update:  # pytest's captured stderr is not a terminal
        for _ in range(50):
            stats.add(completion(8))
            update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and "\r" not in "".join(lines)
    assert lines[0].startswith("generate: 5/50 samples (10%), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("generate: 50/50 samples (100%), ") and lines[-1].endswith("ETA 0s")
