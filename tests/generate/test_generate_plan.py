"""generate's plan: what a rerun may add to an output folder, and when the folder is complete.

The fingerprint covers what decides the plan (problem ids and text hashes, limit, field mapping) besides how
samples are made; it is stored with the first committed samples, so a run that failed before any sample never
blocks its fixed rerun. Uses the transformers backend on the tiny memorising teacher (seconds per run).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.generate.stage import run
from pipeline.records.manifest import read_manifest
from pipeline.records.schema import RecordError
from tests.conftest import distill_main, run_distill, teacher_recipe
from tests.helpers import problem_rows


def recipe(teacher_dir: Path, tmp_path: Path, **overrides):
    return teacher_recipe(teacher_dir, tmp_path, backend="transformers", engine="{}", **overrides)


def ids(out: Path) -> list[str]:
    return sorted(
        json.loads(line)["id"] for p in out.glob("samples-*.jsonl") for line in p.read_text().splitlines()
    )


def test_a_run_killed_before_its_first_sample_leaves_the_folder_free_for_other_settings(
    teacher_dir, tmp_path
):
    cfg = recipe(teacher_dir, tmp_path)
    file = tmp_path / "gen.yaml"
    file.write_text(f"stage: generate\nmodel: {teacher_dir}\nproblems: {{path: {cfg.problems.path}}}\n"
                    f"output: {cfg.output}\nbackend: transformers\nsampling: {{max_tokens: 48}}\n")  # fmt: skip
    killed = run_distill(
        "generate", "--config", str(file), env={"DISTILL_TEST_KILL_AT": "generate:after-fingerprint"}
    )
    assert killed.returncode == -signal.SIGKILL
    assert (Path(cfg.output) / "fingerprint.json").exists() and ids(Path(cfg.output)) == []
    rerun = distill_main("generate", "--config", str(file), "sampling.temperature=0.3")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(ids(Path(cfg.output))) == 8


def test_a_first_run_without_a_tokenizer_does_not_block_the_rerun_once_it_is_added(teacher_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(teacher_dir, model, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    cfg = teacher_recipe(model, tmp_path, backend="transformers", engine="{}")
    with pytest.raises(Exception, match="has no tokenizer"):
        run(cfg)
    for f in teacher_dir.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy(f, model / f.name)
    assert run(cfg) == 0 and len(ids(Path(cfg.output))) == 8


def test_resume_refuses_changed_problems_limit_or_fields_and_lists_what_changed(teacher_dir, tmp_path):
    cfg = recipe(teacher_dir, tmp_path)
    assert run(cfg) == 0
    problems = Path(cfg.problems.path)
    rows = problem_rows()
    rows[1]["problem"] = "What is 7+5?"
    rows.append({"id": "add-1-1", "problem": "What is 1+1?", "answer": "2"})
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        ConfigError, match=r"input records changed: 1 \(add-7-4\); input records added: 1 \(add-1-1\)"
    ):
        run(cfg)
    rows = problem_rows()
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"input records removed: 4 .*problems.limit: None -> 4"):
        run(recipe(teacher_dir, tmp_path, problems__limit=4))
    renamed = [{"question" if k == "problem" else k: v for k, v in r.items()} for r in rows]
    problems.write_text("".join(json.dumps(r) + "\n" for r in renamed))
    with pytest.raises(ConfigError, match=r"problems.fields: \{\} -> \{'question': 'problem'\}"):
        run(recipe(teacher_dir, tmp_path, problems__fields="{question: problem}"))
    assert len(ids(Path(cfg.output))) == 8 and read_manifest(cfg.output) is not None  # nothing added or lost


def test_samples_outside_the_plan_fail_the_completeness_check(teacher_dir, tmp_path):
    cfg = recipe(teacher_dir, tmp_path)
    assert run(cfg) == 0
    out = Path(cfg.output)
    stray = json.loads((out / "samples-00000.jsonl").read_text().splitlines()[0])
    stray.update(id="gone/0", problem_id="gone")
    (out / "samples-00009.jsonl").write_text(json.dumps(stray) + "\n")
    with pytest.raises(RecordError, match=r"1 unplanned samples \(gone/0\); not writing the manifest"):
        run(cfg)


def test_a_run_keeps_ids_not_samples_and_refuses_a_planned_input_changed_under_it(tiny_model_dir, tmp_path):
    """A million planned samples must not cost a million rendered requests or written samples in memory: the plan
    keeps ids and content hashes (~0.2 KB a sample here) and renders the requests again as the engine takes them
    (held before: ~1.8 KB a sample at these 100-token prompts: token ids, messages, Work and Request objects); the
    final check streams the written samples (4.1 KB a sample here when it held them)."""
    import random
    import tracemalloc

    from pipeline.generate.plan import make_plan
    from pipeline.preflight import load_tokenizer

    problems, n, rng = 3000, 4, random.Random(0)
    words = ["find", "the", "sum", "of", "all", "integers", "x", "such", "that", "area", "triangle", "sides"]
    path = tmp_path / "many.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "problem": " ".join(rng.choices(words, k=60)), "answer": str(i)})
            + "\n"
            for i in range(problems)
        )
    )
    cfg = teacher_recipe(tiny_model_dir, tmp_path, problems__path=str(path), sampling__n=n)
    tokenizer = load_tokenizer(cfg)
    tracemalloc.start()
    try:
        plan = make_plan(cfg, tokenizer, None, allow_incomplete=False)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.todo == problems * n
    assert held / (problems * n) < 500, f"the plan holds {held / (problems * n):.0f} bytes a sample"
    first = next(plan.requests())
    assert (first.sample_id, first.work.problem.id, len(first.prompt_ids) > 60) == ("p0/0", "p0", True)

    # the completeness check and the manifest's counts read the written samples one at a time (before: all of
    # them at once, ~4 KB a sample here, ~30 KB at R1's)
    from pipeline.generate.commit import finish
    from pipeline.records.write import ShardWriter

    writer, text = ShardWriter(plan.out), "so the answer is " * 150
    for start in range(0, problems * n, 1000):
        writer.write(
            {
                "id": f"p{i // n}/{i % n}",
                "problem_id": f"p{i // n}",
                "sample_index": i % n,
                "problem": "",
                "answer": None,
                "prompt": [],
                "completion": text,
                "finish_reason": "stop",
                "num_prompt_tokens": 100,
                "num_completion_tokens": 600,
                "teacher": "t",
                "sampling": {},
            }  # fmt: skip
            for i in range(start, min(start + 1000, problems * n))
        )
    tracemalloc.start()
    try:
        assert finish(cfg, plan, None) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / (problems * n) < 1000, f"the check held {peak / (problems * n):.0f} bytes a sample"
    counts = read_manifest(plan.out)["counts"]
    assert (counts["samples"], counts["problems"], counts["completion_tokens"]) == (12000, 3000, 7_200_000)

    # the input under a running plan: a record added waits for the next run; one changed or removed is refused
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(
        "".join(lines) + json.dumps({"id": "new", "problem": "What is 1+1?", "answer": "2"}) + "\n"
    )
    assert sum(1 for _ in plan.requests()) == problems * n
    path.write_text("".join(lines[:7] + lines[8:]))
    with pytest.raises(
        RecordError, match=r"4 planned samples' records were removed while generate was running"
    ):
        sum(1 for _ in plan.requests())
    edited = [*lines]
    edited[1234] = lines[1234].replace('"problem": "', '"problem": "edited ')
    edited[2000] = lines[2000].replace(
        '"answer"', '"metadata": {"start": "so"}, "answer"'
    )  # any field counts
    for line in (1235, 2001):
        path.write_text("".join(edited))
        with pytest.raises(RecordError, match=rf"{path}:{line}: changed while generate was running"):
            sum(1 for _ in plan.requests())
        edited[line - 1] = lines[line - 1]
    path.write_text("".join(lines[:5]) + '{"id": "p5", "prob')  # rewritten in place, cut short
    with pytest.raises(
        RecordError, match=rf"{path}:6: not valid JSON .*read cleanly when the run was planned"
    ):
        sum(1 for _ in plan.requests())
