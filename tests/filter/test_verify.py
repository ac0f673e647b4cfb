"""`distill verify` end to end, run as `python -m pipeline.filter.verify` in a subprocess on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

RECORDS = [
    # think block closed: only the text after </think> is graded (the box inside the reasoning is not)
    {
        "id": "p1/0",
        "completion": "<think>\ntry \\boxed{3}\n</think>\n\n\\boxed{\\frac{1}{2}}",
        "answer": "\\dfrac12",
    },
    {"id": "p1/1", "completion": "<think>\nwork\n</think>\n\nThe answer is 3.", "answer": "\\dfrac12"},
    # no think block: plain chain-of-thought, the whole completion is graded
    {
        "id": "p2/0",
        "completion": "2 + 2 = 4, so the answer is $4$.",
        "answer": "4",
        "metadata": {"k": [1, 2]},
    },
    # unterminated think block: no final answer, wrong whatever the box inside says
    {"id": "p3/0", "completion": "<think>\nit must be \\boxed{7}, but", "answer": "7"},
    {"id": "p4/0", "completion": "\\boxed{27}", "answer": 27.0},  # AMC golds are JSON numbers
    {"id": "p5/0", "completion": "\\boxed{5}", "answer": None},
]


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.filter.verify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_verify_grades_every_record_in_order_keeping_all_fields(tmp_path):
    source = write_lines(tmp_path / "samples.jsonl", [json.dumps(r) for r in RECORDS])
    result = run_verify(str(source), "-o", str(tmp_path / "graded.jsonl"))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in (tmp_path / "graded.jsonl").read_text().splitlines()]
    added = {"correct", "extracted_answer", "verdict_reason"}
    assert [set(r) for r in out] == [set(original) | added for original in RECORDS]
    assert [{k: r[k] for k in original} for r, original in zip(out, RECORDS, strict=True)] == RECORDS
    verdicts = [(r["correct"], r["extracted_answer"], r["verdict_reason"]) for r in out]
    assert verdicts == [
        (True, "\\frac{1}{2}", "correct"),
        (False, "3", "wrong"),
        (True, "4", "correct"),
        (False, None, "no_answer"),
        (True, "27", "correct"),
        (None, "5", "no_gold"),
    ]
    assert "6 records: 3 correct, 2 wrong, 1 cannot tell" in result.stderr


def test_verify_reads_other_field_names(tmp_path):
    rows = [{"id": "a", "response": "\\boxed{9}", "gold": "9"}]
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out.jsonl"
    result = run_verify(
        str(source), "-o", str(out), "--completion-field", "response", "--answer-field", "gold"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["correct"] is True


def test_verify_rejects_a_malformed_line_naming_file_and_line_and_writes_nothing(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[0]), '{"id": "p1/1", "completion": '])
    out = tmp_path / "out.jsonl"
    result = run_verify(str(source), "-o", str(out))
    assert result.returncode == 2
    assert f"{source}:2: not valid JSON" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_verify_rejects_a_missing_completion_naming_the_field(tmp_path):
    source = write_lines(
        tmp_path / "in.jsonl", [json.dumps(RECORDS[0]), json.dumps({"id": "x", "answer": "1"})]
    )
    out = tmp_path / "out.jsonl"
    result = run_verify(str(source), "-o", str(out))
    assert result.returncode == 2
    assert f"{source}:2: field 'completion' is missing" in result.stderr
    assert not out.exists()


def test_verify_rejects_a_gold_of_the_wrong_type(tmp_path):
    source = write_lines(
        tmp_path / "in.jsonl", [json.dumps({"id": "x", "completion": "\\boxed{1}", "answer": [1]})]
    )
    result = run_verify(str(source), "-o", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert f"{source}:1: field 'answer' must be a string, got list" in result.stderr


def test_verify_refuses_an_unknown_kind(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(RECORDS[0])])
    result = run_verify(str(source), "-o", str(tmp_path / "out.jsonl"), "--kind", "sql")
    assert result.returncode == 2  # argparse: invalid choice
    assert "invalid choice: 'sql'" in result.stderr and not (tmp_path / "out.jsonl").exists()


def test_distill_verify_grades_code_answers_against_their_tests(tmp_path):
    from tests.conftest import SHARED_DATA, run_distill

    problem = json.loads((SHARED_DATA / "benchmarks" / "humaneval.jsonl").read_text().splitlines()[0])
    solution = problem["prompt"] + problem["canonical_solution"]
    rows = [
        {
            "id": "he0/0",
            "completion": f"<think>\nloop over pairs\n</think>\n\n```python\n{solution}\n```",
            "tests": problem,
        },
        {
            "id": "he0/1",
            "completion": "<think>\nguess\n</think>\n\n```python\ndef has_close_elements(n, t):\n"
            "    return False\n```",
            "tests": problem,
        },
        {"id": "he0/2", "completion": "<think>\nno code\n</think>\n\nSorry.", "tests": problem},
        {
            "id": "x/0",
            "completion": "```python\nprint(int(input()) * 2)\n```",
            "tests": [{"input": "21\n", "output": "42\n"}],
        },
        {"id": "y/0", "completion": "```python\nprint(1)\n```", "tests": None},
    ]
    src = tmp_path / "code.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_distill("verify", str(src), "-o", str(tmp_path / "out.jsonl"), "--kind", "code")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert [r["correct"] for r in out] == [True, False, False, True, None]
    assert [r["verdict_reason"] for r in out] == ["passed", "failed", "no_code", "passed", "no_tests"]
    assert out[0]["tests"] == problem  # every input field kept


# --- code, as root and as an unprivileged user --------------------------------------------------------------


def _code_rows() -> tuple[list[dict], list[bool | None]]:
    """Right, wrong and hostile answers to HumanEval/0 and a stdio problem, with the verdict each deserves."""
    from tests.conftest import SHARED_DATA

    problem = json.loads((SHARED_DATA / "benchmarks" / "humaneval.jsonl").read_text().splitlines()[0])
    stdio = [{"input": "21\n", "output": "42\n"}]
    fence = "```python\n{}\n```"
    answers = [
        (problem["prompt"] + problem["canonical_solution"], problem, True),
        ("def has_close_elements(n, t):\n    return False", problem, False),
        ("class E:\n    def __eq__(self, o):\n        return True\ndef has_close_elements(n, t):\n    return E()",
         problem, False),
        ("import os, sys\nif not sys.flags.optimize:\n    os.execv(sys.executable, [sys.executable, '-O', *sys.argv])\n"
         "def has_close_elements(n, t):\n    return True", problem, False),
        ("print(int(input()) * 2)", stdio, True),
        ("import glob\nprint(open(glob.glob('/tmp/**/code.jsonl', recursive=True)[0]).read().count('42'))", stdio,
         False),
        ("print(1)", None, None),
    ]  # fmt: skip
    rows = [
        {"id": f"r{i}", "completion": fence.format(code), "tests": t}
        for i, (code, t, _) in enumerate(answers)
    ]
    return rows, [expected for *_, expected in answers]


def _user_workspace(user) -> tuple[Path, Path, list[bool | None]]:
    """A folder the test user owns with `_code_rows()` in it, readable by all: (folder, file, verdicts due)."""
    import os

    work = user.home / "work"
    work.mkdir()
    os.chown(work, user.uid, user.gid)
    rows, expected = _code_rows()
    src = write_lines(work / "code.jsonl", [json.dumps(r) for r in rows])
    src.chmod(0o644)
    return work, src, expected


def test_distill_verify_code_gives_each_answer_its_verdict_and_names_the_mode(tmp_path):
    from pipeline.sandbox.box import Sandbox
    from tests.conftest import run_distill

    rows, expected = _code_rows()
    src = write_lines(tmp_path / "code.jsonl", [json.dumps(r) for r in rows])
    result = run_distill("verify", str(src), "-o", str(tmp_path / "out.jsonl"), "--kind", "code")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in out] == expected
    # as root "namespaces"; None: no tests, nothing ran
    assert {r["sandbox"] for r in out} == {Sandbox().resolved_mode(), None}


def test_distill_verify_code_as_an_unprivileged_user(tmp_path):
    import os

    import pytest

    from tests.sandbox_user import SandboxUser

    if os.geteuid() != 0:
        pytest.skip("creating the test user needs root")
    user = SandboxUser.create()
    try:
        work, src, expected = _user_workspace(user)
        # plain user (auto: userns), forced landlock, and rootless root (`unshare -r`: uid 0 of a user namespace)
        for name, mode, prefix, used in [
            ("user", "auto", (), "userns"),
            ("landlock", "landlock", (), "landlock"),
            ("rootless", "auto", ("unshare", "-r"), "userns"),
        ]:
            out = work / f"out-{name}.jsonl"
            args = ["verify", str(src), "-o", str(out), "--kind", "code", "--sandbox-mode", mode]
            done = user.run(["-m", "pipeline.cli", *args], prefix=prefix)
            assert done.returncode == 0, done.stderr
            graded = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r["correct"] for r in graded] == expected, name
            assert {r["sandbox"] for r in graded} == {used, None}
        refused = user.run(["-m", "pipeline.cli", "verify", str(src), "-o", str(work / "x.jsonl"), "--kind", "code",
                            "--sandbox-mode", "namespaces"])  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert (
            refused.stderr.startswith("error: no code sandbox available")
            and "namespaces: needs root" in refused.stderr
        )
        assert not (work / "x.jsonl").exists()
    finally:
        user.remove()


def test_filter_checks_the_sandbox_before_any_step_and_fails_in_one_line(tmp_path):
    import os

    import pytest

    from tests.conftest import run_distill

    if os.geteuid() != 0:
        pytest.skip("mode userns is refused to root only")
    recipe = tmp_path / "code.yaml"
    recipe.write_text(
        f"stage: filter\ninput: {tmp_path / 'missing.jsonl'}\noutput: {tmp_path / 'out'}\ncount_tokens: false\n"
        "steps:\n  - name: parse\n  - name: code\n    sandbox:\n      mode: userns\n"  # userns is not for root
    )
    result = run_distill("filter", "--config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: no code sandbox available (sandbox.mode=userns): userns: " in result.stderr
    assert not (tmp_path / "out").exists()


def test_distill_verify_code_from_a_venv_under_tmp_as_root_and_as_a_user(tmp_path):
    """CI containers keep their venv under /tmp: the sandbox must bind it and keep the box's /tmp its own."""
    import os
    import shutil
    import subprocess
    import tempfile

    import pytest

    from tests.sandbox_user import PYTHON, SandboxUser

    if os.geteuid() != 0:
        pytest.skip("creating the test user needs root")
    user = SandboxUser.create()
    folder = Path(tempfile.mkdtemp(prefix="distill-venv-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        subprocess.run(
            [PYTHON, "-m", "venv", "--without-pip", "--system-site-packages", str(folder / "venv")],
            check=True,
        )
        python = str(folder / "venv" / "bin" / "python")
        work, src, expected = _user_workspace(user)
        env = {**os.environ, "PYTHONPATH": str(user.home)}
        for name, mode, as_user, used in [
            ("root", "auto", False, "namespaces"),
            ("root-landlock", "landlock", False, "landlock"),
            ("user", "auto", True, "userns"),
            ("user-landlock", "landlock", True, "landlock"),
        ]:
            out = work / f"out-{name}.jsonl"
            args = [
                "-m",
                "pipeline.cli",
                "verify",
                str(src),
                "-o",
                str(out),
                "--kind",
                "code",
                "--sandbox-mode",
                mode,
            ]
            if as_user:
                done = user.run(args, python=python)
            else:
                done = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=work)
            assert done.returncode == 0, (name, done.stderr)
            graded = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r["correct"] for r in graded] == expected, name
            assert {r["sandbox"] for r in graded} == {used, None}, name
    finally:
        shutil.rmtree(folder)
        user.remove()
