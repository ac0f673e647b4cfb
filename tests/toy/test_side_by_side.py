"""The demo's display of parallel runs: prefixed whole lines, and a run that waits for another's output."""

from __future__ import annotations

import sys

from pipeline.toy.side_by_side import run_side_by_side


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_lines_are_prefixed_whole_and_carriage_returns_become_lines(capsys):
    codes = run_side_by_side({"a": py("print('one\\rtwo', flush=True)"), "bb": py("print('three')")}, env={})
    out = capsys.readouterr().out
    assert codes == {"a": 0, "bb": 0}
    assert "[a ] one\n" in out and "[a ] two\n" in out and "[bb] three\n" in out and "\r" not in out


def test_a_waiting_run_starts_once_another_has_saved_what_it_needs(tmp_path, capsys):
    saved, order = tmp_path / "checkpoint", tmp_path / "order"
    writer = py(
        "import pathlib, time; time.sleep(0.3); "
        f"pathlib.Path({str(order)!r}).write_text('writer saved\\n'); pathlib.Path({str(saved)!r}).mkdir(); "
        "time.sleep(0.5); print('writer done')"
    )
    reader = py(
        f"import pathlib; p = pathlib.Path({str(order)!r}); p.write_text(p.read_text() + 'reader ran\\n')"
    )
    codes = run_side_by_side(
        {"writer": writer, "reader": reader}, env={}, ready={"reader": saved.exists}, poll=0.05
    )
    assert codes == {"writer": 0, "reader": 0}
    assert order.read_text() == "writer saved\nreader ran\n"  # never before the save
    out = capsys.readouterr().out
    assert "[reader] starting: what it waited for is ready" in out and "[writer] writer done" in out


def test_a_waiting_run_is_not_started_when_the_run_it_waits_for_fails(tmp_path, capsys):
    never = tmp_path / "never"
    codes = run_side_by_side(
        {"sft": py("import sys; sys.exit(3)"), "opd": py("print('ran')")},
        env={},
        ready={"opd": never.exists},
        poll=0.05,
    )
    assert codes == {"sft": 3, "opd": None}
    assert "[opd] not started" in capsys.readouterr().out


def test_a_waiting_run_is_not_started_when_everything_else_ended_without_it(tmp_path, capsys):
    codes = run_side_by_side(
        {"sft": py("pass"), "kd": py("pass"), "opd": py("print('ran')")},
        env={},
        ready={"opd": (tmp_path / "never").exists},
        poll=0.05,
    )
    assert codes == {"sft": 0, "kd": 0, "opd": None}
    out = capsys.readouterr().out
    assert "[opd] not started" in out and "[opd] ran" not in out


def test_training_progress_is_shown_readable_and_metrics_go_to_the_log_only(tmp_path, capsys):
    lines = [
        "12:03:41 INFO pipeline.train.progress: step 120/4000 (3%) loss 0.9226 lr 3.0e-03 ETA 6m12s",
        '12:03:41 INFO pipeline.train.metrics: {"loss": 0.9226, "grad_norm": 1.7, "step": 120}',
        "{'loss': '0.9226', 'grad_norm': '1.7'}",
        "12:03:42 WARNING pipeline.train.sft.stage: something to read",
    ]
    code = "".join(f"print({line!r}); " for line in lines)
    codes = run_side_by_side({"sft": py(code)}, env={}, logs=tmp_path / "logs")
    assert codes == {"sft": 0}
    assert capsys.readouterr().out.splitlines() == [
        "[sft] step 120/4000 (3%) loss 0.9226 lr 3.0e-03 ETA 6m12s",
        "[sft] 12:03:42 WARNING pipeline.train.sft.stage: something to read",
    ]
    assert (tmp_path / "logs" / "sft.log").read_text().splitlines() == lines  # every line, whole
