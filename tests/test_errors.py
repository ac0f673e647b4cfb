"""Bad input, tried as a new user would: one line `error: FILE[:LINE]: field 'X': what; what to do`, exit 2,
nothing published, nothing started (no engine, no training), and no traceback."""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
from pathlib import Path

import pytest

from pipeline.records.manifest import read_manifest
from tests.conftest import REPO, distill_main
from tests.helpers import problem_rows, write_problems, write_sft_dataset


def fails_with(result, pattern: str) -> None:
    """Exit 2 and exactly one `error:` line matching `pattern` on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), result.stderr[-2000:]


def generate_recipe(tmp_path: Path, model: Path | str, problems: Path, *extra: str) -> Path:
    recipe = tmp_path / "gen.yaml"
    lines = ["stage: generate", f"model: {model}", f"problems: {{path: {problems}}}", f"output: {tmp_path / 'out'}",
             "sampling: {max_tokens: 48}", *extra]  # fmt: skip
    recipe.write_text("\n".join(lines) + "\n")
    return recipe


def test_a_non_utf8_byte_in_problems_names_the_line(tiny_model_dir, tmp_path):
    problems = write_problems(tmp_path / "p.jsonl")
    lines = problems.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"What", b"Wh\xffat")
    problems.write_bytes(b"".join(lines))
    result = distill_main("generate", "--config", str(generate_recipe(tmp_path, tiny_model_dir, problems)))
    fails_with(result, r"p.jsonl:3: not valid UTF-8 \(byte 0xff at column \d+\); save the file as UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_non_utf8_byte_in_completions_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        b'{"completion": "\\\\boxed{1}", "answer": "1"}\n{"completion": "\xe9", "answer": "1"}\n'
    )
    result = distill_main("verify", str(path), "-o", str(tmp_path / "g.jsonl"))
    fails_with(result, r"c.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 17\)")


def test_a_missing_model_path_says_so(tmp_path):
    problems = write_problems(tmp_path / "p.jsonl")
    result = distill_main(
        "generate", "--config", str(generate_recipe(tmp_path, tmp_path / "no" / "model", problems))
    )
    fails_with(
        result, r"field 'model': no such model folder '.*/no/model'; give the path of a local model folder"
    )
    assert "Repo id" not in result.stderr


def test_a_model_folder_without_a_tokenizer_is_refused_before_the_engine_starts(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    problems = write_problems(tmp_path / "p.jsonl")
    started = time.monotonic()
    result = distill_main("generate", "--config", str(generate_recipe(tmp_path, model, problems)))
    fails_with(
        result, rf"field 'model': {model} has no tokenizer \(none of tokenizer.json, .*\); copy the tokenizer"
    )
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


def test_vllm_engine_keys_given_to_the_transformers_backend_are_refused(tiny_model_dir, tmp_path):
    problems = write_problems(tmp_path / "p.jsonl")
    recipe = generate_recipe(tmp_path, tiny_model_dir, problems, "backend: transformers",
                             "engine: {max_model_len: 512}")  # fmt: skip
    fails_with(
        distill_main("generate", "--config", str(recipe)),
        r"unknown key 'engine.max_model_len' in .*gen.yaml:7: not an argument of transformers' from_pretrained",
    )


@pytest.mark.parametrize("stage", ["generate", "filter"])
def test_an_output_path_that_is_a_file_is_refused(tiny_model_dir, tmp_path, stage):
    (tmp_path / "out").write_text("not a folder")
    problems = write_problems(tmp_path / "p.jsonl")
    if stage == "generate":
        recipe = generate_recipe(tmp_path, tiny_model_dir, problems)
    else:
        recipe = tmp_path / "f.yaml"
        recipe.write_text(f"stage: filter\ninput: {problems}\noutput: {tmp_path / 'out'}\n")
    fails_with(
        distill_main(stage, "--config", str(recipe)), rf"{tmp_path / 'out'}: field 'output': .* is a file"
    )
    assert (tmp_path / "out").read_text() == "not a folder"


def test_an_empty_problems_file_publishes_nothing(tiny_model_dir, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text("\n")
    result = distill_main("generate", "--config", str(generate_recipe(tmp_path, tiny_model_dir, problems)))
    fails_with(result, r"p.jsonl: field 'problems': no problems; nothing to generate")
    assert read_manifest(tmp_path / "out") is None


def test_a_prompt_longer_than_the_context_is_refused_before_the_engine_starts(tiny_model_dir, tmp_path):
    rows = problem_rows()
    rows[1]["problem"] = "What is " + " + ".join(["1"] * 400) + "?"
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = generate_recipe(tmp_path, tiny_model_dir, problems, "engine: {max_model_len: 512}")
    started = time.monotonic()
    result = distill_main("generate", "--config", str(recipe))
    fails_with(result, r"p.jsonl:2: field 'problem': the prompt is \d+ tokens; the model's context is 512")
    assert time.monotonic() - started < 60 and "vllm" not in result.stderr.lower().split("error:")[-1]
    assert not (tmp_path / "out").exists()


def test_override_errors_blame_the_override_and_list_items_can_be_overridden(tmp_path):
    recipe = tmp_path / "f.yaml"
    recipe.write_text(
        "stage: filter\ninput: x\nsteps:\n  - name: math\n  - name: select\n    per_problem: 2\n"
    )
    ok = distill_main("validate", "--config", str(recipe), "steps[1].per_problem=1")
    assert ok.returncode == 0 and "per_problem: 1" in ok.stdout
    fails_with(distill_main("validate", "--config", str(recipe), "steps[1].per_problem=x"),
               r"override 'steps\[1\].per_problem=...': 'steps\[1\].per_problem' must be int")  # fmt: skip
    fails_with(distill_main("validate", "--config", str(recipe), "steps[4].per_problem=1"),
               r"override 'steps\[4\].per_problem=1': no list item \[4\]")  # fmt: skip
    gen = tmp_path / "g.yaml"
    gen.write_text("stage: generate\nmodel: m\nproblems:\n  path: p.jsonl\nsampling:\n  temperature: 0.5\n")
    fails_with(distill_main("validate", "--config", str(gen), "sampling.n=0"),
               r"^error: override 'sampling.n=...': sampling: sampling.n must be >= 1")  # fmt: skip


def test_duplicate_sample_ids_name_both_lines(tmp_path):
    from tests.filter.test_filter import GOOD, _asdict, sample

    row = json.dumps(_asdict(sample("a", 0, GOOD)))
    (tmp_path / "s.jsonl").write_text(f"{row}\n{json.dumps(_asdict(sample('b', 0, GOOD)))}\n{row}\n")
    recipe = tmp_path / "f.yaml"
    recipe.write_text(f"stage: filter\ninput: {tmp_path / 's.jsonl'}\noutput: {tmp_path / 'out'}\n")
    fails_with(distill_main("filter", "--config", str(recipe)),
               r"s.jsonl:3: field 'id': sample id 'a/0' appears twice \(first at .*s.jsonl:1\)")  # fmt: skip


def test_a_dataset_with_an_int_completion_column_is_refused_before_training(tiny_model_dir, tmp_path):
    data = write_sft_dataset(tmp_path / "data", [{"prompt": "What is 2+3?", "completion": 5}])
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"stage: sft\nmodel: {tiny_model_dir}\ndata: [{{path: {data}}}]\noutput: {tmp_path / 'o'}\n"
    )
    fails_with(distill_main("sft", "--config", str(recipe)),
               r"field 'completion': must be text or a list of chat messages \(\{role, content\}\), got .*int64")  # fmt: skip


@pytest.mark.parametrize("stage", ["sft", "kd"])
def test_the_readme_gpu_recipes_on_a_cpu_machine_say_deepspeed_is_needed(stage):
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    result = distill_main(stage, "--config", f"recipes/students/qwen2.5-math-1.5b/{stage}.yaml", cwd=REPO)
    fails_with(result, r"recipes/accelerate/zero2.yaml: field 'launch.accelerate_config': this recipe trains with "
                       r"DeepSpeed, which is not installed")  # fmt: skip


def test_a_hub_dataset_offline_names_it_and_the_local_alternative():
    result = distill_main("generate", "--config", "recipes/teachers/qwq-32b.yaml", cwd=REPO)
    fails_with(result, r"cannot load hub:open-r1/OpenR1-Math-220k.*: .*; give a reachable Hub id .*or a local copy "
                       r"with 'path:'")  # fmt: skip


def test_sidecars_get_the_same_permissions_as_shards(teacher_dir, tmp_path):
    problems = write_problems(tmp_path / "p.jsonl")
    recipe = generate_recipe(tmp_path, teacher_dir, problems, "backend: transformers", "logprobs: 3")
    result = distill_main("generate", "--config", str(recipe))
    assert result.returncode == 0, result.stderr[-2000:]
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    out = tmp_path / "out"
    assert (
        mode(out / "logprobs-00000.safetensors")
        == mode(out / "samples-00000.jsonl")
        == mode(out / "manifest.json")
    )


def test_a_huge_prompt_is_refused_without_tokenizing_it(tiny_model_dir, tmp_path):
    rows = problem_rows()
    rows[2]["problem"] = "What is " + "1 + " * 5_000_000 + "1?"  # 20 MB
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = generate_recipe(tmp_path, tiny_model_dir, problems, "engine: {max_model_len: 512}")
    started = time.monotonic()
    result = distill_main("generate", "--config", str(recipe))
    fails_with(result, r"p.jsonl:3: field 'problem': the prompt is over 512 tokens \(20,000,010 characters\)")
    assert time.monotonic() - started < 60


# --- our own failures keep their traceback: never disguised as bad input --------------------------------------


def test_a_sandbox_failing_mid_run_is_not_reported_as_bad_input(tmp_path, monkeypatch):
    """SandboxError is the sandbox breaking while it runs (an infrastructure failure): its traceback, not exit 2."""
    from pipeline import cli
    from pipeline.sandbox.box import Sandbox, SandboxError

    src = tmp_path / "code.jsonl"
    src.write_text(json.dumps({"id": "a", "completion": "```python\nprint(2)\n```",
                               "tests": [{"input": "", "output": "2\n"}]}) + "\n")  # fmt: skip

    proven = Sandbox._result  # the mode's proof at start still works: the sandbox breaks on the answer's run

    def broken(self, mode, returncode, reports, box):
        if (box / "main.py").read_text().strip() == "print(2)":
            raise SandboxError("the supervisor died")
        return proven(self, mode, returncode, reports, box)

    monkeypatch.setattr(Sandbox, "_result", broken)
    with pytest.raises(SandboxError, match="the supervisor died"):
        cli.main(["verify", str(src), "-o", str(tmp_path / "out.jsonl"), "--kind", "code"])
    assert not (tmp_path / "out.jsonl").exists()


def test_a_bug_in_push_shows_its_scrubbed_traceback_and_a_hub_refusal_one_line(tmp_path, monkeypatch, capsys):
    import argparse

    from huggingface_hub.errors import HfHubHTTPError

    from pipeline.push import hub

    token = "hf_" + "A" * 34
    monkeypatch.setattr(hub, "hub_token", lambda: token)

    def bug(args, redactor):
        raise TypeError(f"unexpected argument (Authorization: Bearer {token})")

    monkeypatch.setattr(hub, "push", bug)
    assert hub.run_push(argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: unexpected argument" in err
    assert token not in err and "push failed" not in err

    def refused(args, redactor):
        import httpx

        response = httpx.Response(403, request=httpx.Request("POST", "https://hub.example/api/repos/create"))
        raise HfHubHTTPError(f"403 Forbidden: token {token} may not create owner/x", response=response)

    monkeypatch.setattr(hub, "push", refused)
    assert hub.run_push(argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: push failed: HfHubHTTPError: 403 Forbidden") and "Traceback" not in err
    assert token not in err and len(err.strip().splitlines()) == 1


def test_a_grader_bug_is_logged_with_its_traceback_and_counted_as_grader_error(tmp_path):
    """A bug in a grading worker costs one sample (grader_error) and is seen: its traceback on stderr."""
    import subprocess
    import sys

    script = tmp_path / "grade.py"
    script.write_text(
        "import logging\n"
        "import pipeline.filter.math_pool as pool\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "def buggy(text, gold, timeout, memory=None):\n"
        "    raise AttributeError(\"'NoneType' object has no attribute 'args'\")\n"
        "pool.grade = buggy  # the workers fork from here, with it\n"
        "if __name__ == '__main__':\n"
        "    print([v.reason for v in pool.grade_many([('\\\\boxed{2}', '2')], workers=1)])\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['grader_error']"
    assert "Traceback (most recent call last)" in done.stderr and "AttributeError: 'NoneType'" in done.stderr
    assert "a bug, please report it" in done.stderr
