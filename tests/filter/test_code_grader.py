"""Grading code answers: extraction and test normalisation from literal strings, then real sandboxed runs of
HumanEval and MBPP reference solutions, stdio programs, and wrong, broken or hostile answers."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.filter.code_grader import extract_code, grade_code, grade_code_many
from pipeline.filter.parse import gradable_text
from pipeline.filter.verdict import Verdict
from pipeline.records.code_tests import check_tests, normalize_tests
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


# --- answers that try to pass without being right -----------------------------------------------------------

SQUARE = {"kind": "asserts", "asserts": ["assert f(2) == 4", "assert f(3) == 9"]}
WRONG = "def f(x):\n    return x + 2\n"  # right for 2, wrong for 3
CHEATS = {
    "reexec_under_O": "import os, sys\nif not sys.flags.optimize:\n    os.execv(sys.executable, [sys.executable, '-O', *sys.argv])\n"
    + WRONG,
    "own_source_and_token": "import sys\nprint(open(sys.argv[-1]).read()[-40:])\n" + WRONG,
    "frame_constants": (
        "import sys\ndef f(x):\n    frame = sys._getframe()\n    while frame:\n"
        "        for c in frame.f_code.co_consts:\n            if isinstance(c, int) and c == x * x:\n"
        "                return c\n        frame = frame.f_back\n    return x + 2\n"
    ),
    "excepthook_prints_success": "import sys\nsys.excepthook = lambda *a: print('passed')\n" + WRONG,
    "always_equal": "class E:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\ndef f(x):\n    return E()\n",
    "int_subclass_always_equal": "class E(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return E(0)\n",
    "linecache_expected": (
        "import linecache, sys\ndef f(x):\n    for name in list(linecache.cache) + ['tests', '<string>']:\n"
        "        for line in linecache.getlines(name):\n            if f'f({x}) ==' in line:\n"
        "                return int(line.split('==')[1])\n    return x + 2\n"
    ),
    "settrace_skips_asserts": "import sys\nsys.settrace(lambda *a: None)\n" + WRONG,
    "fake_protocol_on_stdout": "print('{\"ok\": 9}')\nprint('{\"ready\": true}')\n" + WRONG,
    "fake_replies_on_its_pipe": 'import os\nos.write(4, b\'{"ready": true}\\n{"kinds": {}}\\n\')\n' + WRONG,
    "exits_0_before_tests": "import sys\n" + WRONG + "sys.exit(0)\n",
    "exits_0_inside_a_call": "import os\ndef f(x):\n    os._exit(0)\n",
    "stop_iteration_ends_a_loop": "def f(x):\n    raise StopIteration\n",
    "kills_its_supervisor": "import os, signal\nfor pid in (1, os.getppid()):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
    + WRONG,
    "exception_carrying_an_object": "class E:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    raise ValueError(E())\n",
    "huge_reply": "def f(x):\n    return 'x' * (40 << 20)\n",
    "deep_reply": "def f(x):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n",
}


@pytest.fixture(scope="module", params=["namespaces", "landlock"])
def mode_sandbox(request):
    from pipeline.sandbox.box import Sandbox, SandboxUnavailable

    python = "/usr/bin/python3.11" if request.param == "landlock" else Sandbox().python
    sandbox = Sandbox(mode=request.param, python=python)
    try:
        sandbox.resolved_mode()
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    return sandbox


@needs_root
@pytest.mark.parametrize("name", sorted(CHEATS))
def test_a_wrong_answer_cannot_make_itself_pass(name, mode_sandbox):
    tests = dict(SQUARE)
    if name == "stop_iteration_ends_a_loop":  # map() would take a StopIteration for its end
        tests = {"kind": "asserts", "asserts": ["assert all(map(lambda x: f(x) == x * x, [2, 3]))"]}
    verdict = grade_code(answer(CHEATS[name]), tests, timeout=5, sandbox=mode_sandbox)
    assert verdict.correct is False, verdict
    assert verdict.sandbox == mode_sandbox.mode


@needs_root
def test_the_same_wrong_answer_fails_and_the_right_one_passes_in_every_mode(mode_sandbox):
    right = grade_code(answer("def f(x):\n    return x * x"), SQUARE, sandbox=mode_sandbox)
    wrong = grade_code(answer(WRONG), SQUARE, sandbox=mode_sandbox)
    assert (right.correct, wrong.correct, wrong.detail) == (True, False, "AssertionError")


@needs_root
def test_redefining_a_builtin_or_a_prompt_helper_changes_nothing(humaneval, mode_sandbox):
    tests = {"kind": "asserts", "asserts": ["assert int(f(3)) == 9"]}
    cheat = "int = lambda x: 9\n" + WRONG
    assert grade_code(answer(cheat), tests, sandbox=mode_sandbox).correct is False
    poly_cheat = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 12345.0\n"
    verdict = grade_code(answer(poly_cheat), normalize_tests(humaneval["HumanEval/32"]), sandbox=mode_sandbox)
    assert verdict.correct is False


@needs_root
def test_a_stdio_answer_cannot_read_the_expected_output(tmp_path, mode_sandbox):
    graded = tmp_path / "graded.jsonl"
    graded.write_text(json.dumps({"tests": STDIO}))
    graded.chmod(0o644)
    cheat = (
        "import glob, json\nfor path in glob.glob('/tmp/**/*.jsonl', recursive=True) + "
        f"[{str(graded)!r}]:\n    try:\n        print(json.load(open(path))['tests']['cases'][0]['output'])\n"
        "        break\n    except Exception:\n        pass\nelse:\n    print(0)\n"
    )
    verdict = grade_code(answer(cheat), STDIO, sandbox=mode_sandbox)
    assert (verdict.correct, verdict.reason) == (False, "wrong_output")


@needs_root
def test_the_filter_keeps_right_code_drops_wrong_and_hostile_code_and_reports_the_mode(tmp_path):
    from tests.conftest import run_distill

    answers = {
        "right": "def f(x):\n    return x * x",
        "wrong": WRONG,
        "always_equal": CHEATS["always_equal"],
        "reexec_under_O": CHEATS["reexec_under_O"],
    }
    rows = []
    for i, code in enumerate(answers.values()):
        completion = f"<think>\nsquare it\n</think>\n\n{answer(code)}"
        rows.append({"id": f"sq/{i}", "problem_id": "sq", "sample_index": i, "problem": "Square x.",
                     "answer": None, "prompt": [{"role": "user", "content": "Square x."}], "completion": completion,
                     "finish_reason": "stop", "num_prompt_tokens": 3, "num_completion_tokens": 9, "teacher": "t",
                     "sampling": {}, "tests": SQUARE})  # fmt: skip
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "code.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {tmp_path / 'samples.jsonl'}\noutput: {tmp_path / 'out'}\ncount_tokens: false\n"
        "steps:\n  - name: parse\n  - name: code\n    sandbox:\n      mode: auto\n"
    )
    result = run_distill("filter", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "code sandbox: mode namespaces" in result.stderr  # auto says what it picked
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert report["sandbox"] == "namespaces" and report["kept"] == 1
    assert sorted(r["id"] for r in rejected) == ["sq/1", "sq/2", "sq/3"]


@needs_root
def test_every_cheat_fails_for_an_unprivileged_user_in_modes_userns_and_landlock(tmp_path):
    """The same answers, graded by `distill verify` run as a plain user (the tests create it)."""
    from tests.sandbox_user import SandboxUser

    user = SandboxUser.create()
    try:
        work = user.home / "work"
        work.mkdir()
        os.chown(work, user.uid, user.gid)
        names = sorted(CHEATS)
        rows = [{"id": n, "completion": answer(CHEATS[n]), "tests": SQUARE} for n in names]
        rows.append({"id": "right", "completion": answer("def f(x):\n    return x * x"), "tests": SQUARE})
        src = work / "cheats.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        src.chmod(0o644)
        for mode in ("userns", "landlock"):
            out = work / f"{mode}.jsonl"
            args = [
                "verify",
                str(src),
                "-o",
                str(out),
                "--kind",
                "code",
                "--sandbox-mode",
                mode,
                "--timeout",
                "5",
            ]
            done = user.run(["-m", "pipeline.cli", *args])
            assert done.returncode == 0, done.stderr
            graded = {
                r["id"]: (r["correct"], r["sandbox"]) for r in map(json.loads, out.read_text().splitlines())
            }
            assert graded == {**{n: (False, mode) for n in names}, "right": (True, mode)}
    finally:
        user.remove()
