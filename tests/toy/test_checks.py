"""Toy task v2: checks after each column, injected errors that the check sees and the trace repairs."""

from __future__ import annotations

import random

import pytest

from pipeline.filter.math_grader import grade
from pipeline.toy.checks import (
    check_line,
    checked_solution,
    checked_solution_with_errors,
    forced_error_prefix,
    recovered,
)


@pytest.mark.parametrize(
    ("state", "column", "check"),
    [
        ("47+38 c0 r", "7+8+0=15", "chk 15-8-0=7 7-7=0 ok"),
        ("47+38 c0 r", "7+8+0=14", "chk 14-8-0=6 6-7=-1 no"),
        ("4+3 c1 r5", "4+3+1=8", "chk 8-3-1=4 4-4=0 ok"),
        ("4+3 c1 r5", "4+3+0=7", "chk 7-3-1=3 3-4=-1 no"),  # the carry dropped: the state still holds it
        ("90-17 b0 r", "0-0+10-7=3", "chk 3+7+0=10 10-10=0 ok"),
        ("90-17 b0 r", "0-0+10-7=4", "chk 4+7+0=11 11-10=1 no"),
        ("90-17 b0 r", "0-0-7=3", "chk 3+7+0=10 10-0=10 no"),  # the borrow forgotten
        ("9-1 b1 r3", "9-1-1=7", "chk 7+1+1=9 9-9=0 ok"),
        # a wrong operand, a right result: nothing to repair
        ("9-1 b1 r3", "1-1-1=7", "chk 7+1+1=9 9-9=0 ok"),
    ],
)
def test_a_check_recomputes_the_column_from_its_result_against_the_state_above(state, column, check):
    assert check_line(state, column) == check


def test_clean_checked_solutions_pass_every_check_and_the_verifier():
    rng = random.Random(0)
    for _ in range(300):
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        a, b = (b, a) if op == "-" and b > a else (a, b)
        text = checked_solution(a, b, op)
        checks = [line for line in text.splitlines() if line.startswith("chk")]
        assert checks and all(c.endswith(" ok") for c in checks)
        assert grade(text, str(a + b if op == "+" else a - b)).correct


def test_injected_errors_are_seen_fixed_and_marked_for_no_loss():
    rng, errors = random.Random(1), 0
    for _ in range(300):
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        a, b = (b, a) if op == "-" and b > a else (a, b)
        text, spans = checked_solution_with_errors(a, b, op, rng, rate=0.5)
        lines = text.splitlines()
        fixes = [i for i, line in enumerate(lines) if line == "fix"]
        assert len(fixes) == len(spans)
        errors += len(spans)
        for i, (start, end) in zip(fixes, spans, strict=True):
            assert lines[i - 1].endswith(" no") and lines[i + 2].endswith(
                " ok"
            )  # failing check, fix, right, ok
            wrong_line_start = text.index(lines[i - 2] + "\n" + lines[i - 1])
            assert wrong_line_start <= start < end <= wrong_line_start + len(lines[i - 2])
            assert text[start:end].isdigit() and lines[i - 2] != lines[i + 1]
        assert grade(text, str(a + b if op == "+" else a - b)).correct
    assert 150 < errors < 600  # ~0.5 of ~600 column lines, less the changes a check cannot see


def test_a_forced_error_prefix_ends_on_a_wrong_column_and_its_repair_counts_as_recovery():
    rng = random.Random(2)
    prefix = forced_error_prefix(47, 38, "+", 1, rng)
    lines = prefix.removeprefix("<think>\n").rstrip("\n").split("\n")
    assert (
        lines[:4] == ["47+38 c0 r", "7+8+0=15", "chk 15-8-0=7 7-7=0 ok", "4+3 c1 r5"]
        and lines[4] != "4+3+1=8"
    )
    right = "\n".join([check_line("4+3 c1 r5", lines[4]), "fix", "4+3+1=8", "chk 8-3-1=4 4-4=0 ok", "c0 r85"])
    assert recovered(right, 47, 38, "+", 1)
    assert not recovered("chk 8-3-1=4 4-4=0 ok\nc0 r85", 47, 38, "+", 1)  # went on as if nothing were wrong
    wrong_fix = "\n".join([check_line("4+3 c1 r5", lines[4]), "fix", "4+3+1=9", "chk 8-3-1=4 4-4=0 ok"])
    assert not recovered(wrong_fix, 47, 38, "+", 1)  # its own check claims ok; the fixed line is still wrong
    assert forced_error_prefix(47, 38, "+", 2, rng) is None  # two columns only


def test_the_checked_teacher_set_trains_on_repairs_and_never_on_the_wrong_digits(tiny_model_dir):
    from transformers import AutoTokenizer

    from pipeline.toy.data import checked_teacher_rows

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = checked_teacher_rows(tok, count=40, seed=0, rate=0.5)
    masked_wrong = 0
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        text = tok.decode(ids)
        assert text.count("<think>") == 1 and ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
        start = labels.index(next(x for x in labels if x != -100))
        completion = tok.decode(ids[start:])
        lines = completion.split("\n")
        for i, line in enumerate(lines):
            if line != "fix":
                continue
            wrong, right = lines[i - 2], lines[i + 1]
            # the tokens of the wrong line that carry no loss decode to (part of) where it differs from the right one
            at = completion.index(wrong + "\n" + lines[i - 1] + "\nfix")
            positions = [k for k in range(start, len(ids)) if labels[k] == -100]
            assert positions, "a wrong digit must carry no loss"
            masked = "".join(tok.decode([ids[k]]) for k in positions)
            assert any(c.isdigit() for c in masked) and wrong != right and at >= 0
            masked_wrong += 1
        supervised = tok.decode([t for t in labels if t != -100])
        assert "chk" in supervised and supervised.count("fix") == completion.count(
            "fix"
        )  # repairs are taught
    assert masked_wrong > 10


@pytest.mark.slow
def test_sft_trains_on_pre_tokenized_rows_keeping_their_no_loss_labels(tiny_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from pipeline.config import load_config
    from pipeline.records.manifest import write_manifest
    from pipeline.toy.data import checked_teacher_rows
    from pipeline.train.sft.config import SFTStageConfig
    from pipeline.train.sft.stage import build_trainer

    rows = checked_teacher_rows(AutoTokenizer.from_pretrained(tiny_model_dir), count=24, seed=0, rate=0.5)
    (tmp_path / "data" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "data" / "train.parquet")
    write_manifest(tmp_path / "data", "filter", {}, [], {})
    cfg = load_config(SFTStageConfig, None, [
        f"model={tiny_model_dir}", f"data=[{{path: {tmp_path / 'data'}}}]", f"output={tmp_path / 'out'}",
        "trainer.max_steps=2", "trainer.packing=true", "trainer.max_length=1024", "trainer.report_to=none",
        "trainer.per_device_train_batch_size=2", "trainer.gradient_checkpointing=false",
    ])  # fmt: skip
    trainer, dataset = build_trainer(cfg)
    trained = [x for r in trainer.train_dataset["labels"] for x in r if x != -100]
    assert len(trained) == sum(sum(x != -100 for x in r["labels"]) for r in rows)
    assert trainer.train().global_step == 2
