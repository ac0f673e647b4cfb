"""Grading code answers: extraction and test normalisation from literal strings, then real sandboxed runs of
HumanEval and MBPP reference solutions, stdio programs, and wrong, broken or hostile answers."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.filter.code_grader import (
    Verdict,
    check_tests,
    extract_code,
    grade_code,
    grade_code_many,
    normalize_tests,
)
from pipeline.filter.parse import gradable_text
from tests.conftest import SHARED_DATA

BENCHMARKS = SHARED_DATA / "benchmarks"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the sandbox runs programs as fresh uids: needs root"
)


def benchmark(name: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (BENCHMARKS / f"{name}.jsonl").read_text().splitlines()]
    return {str(row["task_id"]): row for row in rows}


def answer(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n\nIt runs in linear time."


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    return benchmark("humaneval")


@pytest.fixture(scope="module")
def mbpp() -> dict[str, dict]:
    return benchmark("mbpp")


# --- extraction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
        ("```python\na = 1\n```\nthen\n```python\nb = 2\n```", "b = 2"),  # the final block
        ("```\nx = 1\n```", "x = 1"),  # bare
        ("```py\nx = 1\n```", "x = 1"),
        ("````python\nx = 1\n````", "x = 1"),
        ("```Python3 title=main.py\nx = 1\n```", "x = 1"),
        ("```python\nx = 1\n```\nOutput:\n```\n42\n```", "x = 1"),  # a python block beats later bare output
        ("```bash\npip install x\n```\n```\ny = 2\n```", "y = 2"),
        ("1. The code:\n   ```python\n   def f():\n       pass\n   ```", "def f():\n    pass"),  # in a list
        ("Use `x = 1` inline, or ```x = 2``` inline.", None),
        ("```python\nx = 1\n```\n```python\ndef cut_off(", "x = 1"),  # an unclosed fence is no block
        ("```python\n\n```", None),
        ("```bash\nls\n```", None),
        ("No code at all.", None),
    ],
)
def test_extract_code(text, expected):
    assert extract_code(text) == expected


# --- tests normalisation ------------------------------------------------------------------------------------


def test_normalize_tests_from_raw_humaneval_and_mbpp_records(humaneval, mbpp):
    he = humaneval["HumanEval/0"]
    assert normalize_tests(he) == {
        "kind": "humaneval",
        "test": he["test"],
        "entry_point": "has_close_elements",
        "prelude": he["prompt"],
    }
    assert normalize_tests(mbpp["367"]) == {
        "kind": "asserts",
        "asserts": mbpp["367"]["test_list"],
        "setup": mbpp["367"]["test_setup_code"],
    }


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})},
            {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}]},
        ),
        (
            {"input_output": {"inputs": [["1", "2"]], "outputs": [["3"]]}},  # APPS lists of lines
            {"kind": "stdio", "cases": [{"input": "1\n2", "output": "3"}]},
        ),
        ([{"input": "a", "output": "b"}], {"kind": "stdio", "cases": [{"input": "a", "output": "b"}]}),
        ({"kind": "asserts", "asserts": ["assert True"]}, {"kind": "asserts", "asserts": ["assert True"]}),
    ],
)
def test_normalize_tests_from_stdio_and_normalised_records(record, expected):
    assert normalize_tests(record) == expected


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ({"kind": "unit"}, "field 'kind'"),
        ({"kind": "humaneval", "test": "def check(c): pass"}, "field 'entry_point'"),
        ({"kind": "asserts", "asserts": "assert f(1) == 2"}, "field 'asserts'"),
        ({"kind": "asserts", "asserts": [1]}, "list of strings"),
        ({"kind": "asserts", "asserts": [], "setup": 3}, "field 'setup'"),
        ({"kind": "stdio", "cases": [{"input": "1"}]}, "'cases'"),
    ],
)
def test_malformed_tests_are_an_error_naming_the_field(tests, message):
    with pytest.raises(ValueError, match=message):
        check_tests(tests)


def test_unrecognised_or_call_based_records_are_an_error():
    with pytest.raises(ValueError, match="unrecognised"):
        normalize_tests({"question": "?"})
    with pytest.raises(ValueError, match="fn_name"):
        normalize_tests({"input_output": {"inputs": [], "outputs": [], "fn_name": "f"}})


# --- verdicts without running anything ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tests", "expected"),
    [
        ("no code here", {"kind": "asserts", "asserts": ["assert True"]}, Verdict(False, None, "no_code")),
        (None, {"kind": "asserts", "asserts": ["assert True"]}, Verdict(False, None, "no_code")),
        (answer("x = 1"), None, Verdict(None, "x = 1", "no_tests")),
        (answer("x = 1"), {"kind": "stdio", "cases": []}, Verdict(None, "x = 1", "no_tests")),
        (answer("x = 1"), {"kind": "asserts", "asserts": []}, Verdict(None, "x = 1", "no_tests")),
    ],
)
def test_no_code_and_no_tests(text, tests, expected):
    assert grade_code(text, tests) == expected


# --- real runs ----------------------------------------------------------------------------------------------


@needs_root
def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(humaneval):
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/38"]  # 10 and 38 use prompt helpers
    right = [(answer(humaneval[i]["prompt"] + humaneval[i]["canonical_solution"]), humaneval[i]) for i in ids]
    wrong = [
        (answer("def truncate_number(number):\n    return number // 1.0"), humaneval["HumanEval/2"]),
        (answer("def has_close_elements(numbers, threshold):\n    return True"), humaneval["HumanEval/0"]),
    ]
    verdicts = grade_code_many([(text, normalize_tests(record)) for text, record in right + wrong], workers=2)
    assert [v.reason for v in verdicts] == ["passed"] * 4 + ["failed"] * 2
    assert [v.correct for v in verdicts] == [True] * 4 + [False] * 2
    assert verdicts[4].detail == "AssertionError" and "return number // 1.0" in verdicts[4].extracted_answer


@needs_root
def test_mbpp_reference_code_passes_with_its_setup_and_a_wrong_one_fails(mbpp):
    items = [
        (answer(mbpp[i]["code"]), normalize_tests(mbpp[i])) for i in ("1", "367")
    ]  # 367: setup uses Node
    items.append((answer("def min_cost(cost, m, n):\n    return 0"), normalize_tests(mbpp["1"])))
    verdicts = grade_code_many(items, workers=2)
    assert [(v.correct, v.reason) for v in verdicts] == [
        (True, "passed"),
        (True, "passed"),
        (False, "failed"),
    ]


STDIO = {
    "kind": "stdio",
    "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "10   20\n", "output": "  30  \n\n"}],
}


@needs_root
@pytest.mark.parametrize(
    ("code", "reason", "detail"),
    [
        ("a, b = map(int, input().split())\nprint(a + b)", "passed", ""),
        ("a, b = map(int, input().split())\nprint(' ', a + b, ' ')\nprint()", "passed", ""),  # whitespace
        ("a, b = map(int, input().split())\nprint(a * b if a > 5 else a + b)", "wrong_output", "case 1:"),
        ("print(int(input()) + 1)", "failed", "case 0: ValueError"),
        ("print(1 +)", "syntax_error", "case 0: SyntaxError"),
    ],
)
def test_stdio_programs_are_compared_line_by_line(code, reason, detail):
    verdict = grade_code(answer(code), STDIO)
    assert (verdict.correct, verdict.reason) == (reason == "passed", reason)
    assert verdict.detail.startswith(detail)


@needs_root
def test_an_answer_that_exits_before_the_tests_does_not_pass():
    tests = {"kind": "asserts", "asserts": ["assert f() == 1"]}
    verdict = grade_code(answer("import sys\ndef f():\n    return 2\nsys.exit(0)"), tests)
    assert (verdict.correct, verdict.reason) == (False, "failed")
    assert verdict.detail == "exited before the tests finished"


@needs_root
def test_a_completion_is_graded_on_its_answer_and_an_endless_one_times_out():
    tests = {"kind": "asserts", "asserts": ["assert f(2) == 4"]}
    completion = "<think>\nTry ```python\ndef f(x): return x```\n</think>\n\n" + answer(
        "def f(x):\n    return x * x"
    )
    assert grade_code(gradable_text(completion), tests).reason == "passed"
    endless = grade_code(answer("def f(x):\n    while True:\n        pass\nf(1)"), tests, timeout=1)
    assert (endless.correct, endless.reason) == (False, "timeout")
