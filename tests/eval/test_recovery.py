"""Eval's toy task v2 measures: first-pass column errors and forced-error recovery R, and their bad input."""

from __future__ import annotations

import pytest

from pipeline.eval.recovery import RecoveryConfig, forced_problems
from pipeline.records.schema import Problem
from pipeline.toy.checks import checked_solution, first_pass_errors, recovered
from pipeline.toy.task import make_problems
from tests.conftest import REPO, run_distill


def test_first_pass_errors_count_the_first_attempt_at_each_column_even_when_repaired():
    right = checked_solution(47, 38, "+")
    assert first_pass_errors(right, 47, 38, "+") == (0, 2)
    repaired = right.replace("7+8+0=15\n", "7+8+0=14\nchk 14-8-0=6 6-7=-1 no\nfix\n7+8+0=15\n", 1)
    assert first_pass_errors(repaired, 47, 38, "+") == (1, 2)
    assert first_pass_errors("<think>\nno working\n</think>\n\\boxed{85}", 47, 38, "+") == (0, 0)
    borrowed = checked_solution(90, 17, "-")
    assert first_pass_errors(borrowed.replace("0-0+10-7=3", "0-0-7=3"), 90, 17, "-") == (1, 2)


def test_forced_problems_carry_a_prefix_whose_repair_is_judged_from_the_operands():
    problems = make_problems(1, 40, "heldout")
    forced = forced_problems(RecoveryConfig("toy", seed=3), problems)
    assert [p.id for p in forced] == [p.id for p in problems]  # every toy problem has a column to break
    for p in forced:
        m = p.metadata
        prefix, column = m["forced_prefix"], m["column"]
        wrong = prefix.rstrip("\n").split("\n")[-1]
        assert wrong not in checked_solution(m["a"], m["b"], m["op"]).split("\n")  # the last line is wrong
        # the right continuation, as the checked working writes it after that column's state line
        working = checked_solution(m["a"], m["b"], m["op"]).split("\n")
        states = [
            i for i, line in enumerate(working) if " r" in line and line[0].isdigit() and "=" not in line
        ]
        right, check = working[states[column] + 1], working[states[column] + 2]
        assert not recovered("\n".join([check, "fix", right, check]), m["a"], m["b"], m["op"], column)
        from pipeline.toy.checks import check_line

        failing = check_line(working[states[column]], wrong)
        assert recovered("\n".join([failing, "fix", right, check]), m["a"], m["b"], m["op"], column)
    assert forced_problems(RecoveryConfig("toy", column=1), problems)  # two-digit operands: columns 0 and 1


@pytest.mark.parametrize(
    ("problems", "column", "message"),
    [
        ([Problem("p1", "What is 2+2?", "4")], None, "not the toy task with column checks"),
        (make_problems(1, 5, "heldout"), 7, "has column 7: no injection point"),
    ],
)
def test_a_task_without_checks_or_injection_points_is_refused_in_one_line(problems, column, message):
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=message):
        forced_problems(RecoveryConfig("toy", column=column), problems)


def test_recovery_options_bad_input_through_the_cli_is_one_line_and_writes_nothing(tmp_path):
    base = ["eval", "--config", "recipes/demo/eval.yaml", "models=[{path: data/toy-teacher, label: t}]"]
    cases = [
        (["recovery={benchmark: math500}"], "field 'recovery.benchmark': 'math500' is not one of"),
        (["recovery={benchmark: toy, column: 9}"], "field 'recovery.column'"),
        (["benchmarks=[{name: mine, path: %s}]" % (REPO / "data/demo/arithmetic.jsonl"),
          "recovery={benchmark: mine}"], "not the toy task with column checks"),
    ]  # fmt: skip
    for i, (overrides, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = run_distill(*base, f"output={out}", *overrides)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
        assert not out.exists() or not any(p.name != ".distill-stage.json" for p in out.rglob("*"))
