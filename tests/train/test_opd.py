"""The opd stage with real parts: TRL's DistillationTrainer, a local teacher, a real `vllm serve` teacher on
loopback, routing by source, pre-flight refusals, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.cli import main
from pipeline.records.manifest import read_manifest
from tests.conftest import REPO, distill_main, free_port
from tests.helpers import write_problems

pytestmark = pytest.mark.slow
SECRET = "sk-test-not-to-be-printed-0123456789"


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("opd") / "problems.jsonl")


def overrides(student: Path, teachers: str, problems: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model={student}",
        f"problems.path={problems}",
        f"teachers={teachers}",
        f"output={out}",
        "trainer.max_steps=3",
        "trainer.per_device_train_batch_size=2",
        "trainer.max_completion_length=24",
        "trainer.logging_steps=1",
        "trainer.save_steps=2",
        "trainer.disable_tqdm=true",
        *extra,
    ]


def opd(*args: str) -> int:
    return main(["opd", "--config", str(REPO / "recipes/demo/opd.yaml"), *args])


def local(path: Path) -> str:
    return f"{{'*': {{model: {path}}}}}"


def served(url: str, retries: int = 1) -> str:
    server = f"base_url: '{url}', model: teacher, api_key_env: OPD_TEST_KEY, max_retries: {retries}"
    return f"{{'*': {{server: {{{server}}}}}}}"


# --- a local teacher ---------------------------------------------------------------------------------------


def test_local_teacher_scores_equal_a_plain_forward_pass(teacher_dir):
    from transformers import AutoModelForCausalLM

    from pipeline.train.opd.config import TeacherSpec
    from pipeline.train.opd.teachers import LocalTeacher

    teacher = LocalTeacher(TeacherSpec(model=str(teacher_dir)), {}, "cpu", chunk_size=5)
    seqs = [([5, 6, 7], [8, 9, 10, 11]), ([12, 13], [14, 15])]
    scores = teacher.score(seqs, k=3)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    for (p, c), s in zip(seqs, scores, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        rows = logp[len(p) - 1 : len(p) + len(c) - 1]  # the positions that predict each completion token
        assert torch.allclose(s.logprob, rows[torch.arange(len(c)), torch.tensor(c)], atol=1e-5)
        assert torch.equal(s.topk_ids.long(), rows.topk(3).indices)
        assert torch.allclose(s.topk_logprobs, rows.topk(3).values, atol=1e-5)


def test_opd_trains_with_a_local_teacher_and_records_costs(tiny_model_dir, teacher_dir, problems, tmp_path):
    out = tmp_path / "out"
    assert (
        opd(*overrides(tiny_model_dir, local(teacher_dir), problems, out, "opd.loss=sampled_reverse_kl")) == 0
    )
    manifest = read_manifest(out)
    counts = manifest["counts"]
    assert manifest["stage"] == "opd" and manifest["teachers"] == {"*": str(teacher_dir)}
    assert counts["global_step"] == 3 and counts["rollouts"] == 6 and counts["problems_seen"] == 6
    steps = [e for e in manifest["log_history"] if "opd/reverse_kl" in e]
    assert len(steps) == 3
    for key in (
        "opd/correct",
        "completions/mean_length",
        "completions/clipped_ratio",
        "time/rollout_s",
        "time/teacher_s",
        "time/optim_s",
    ):
        assert all(e.get(key) is not None for e in steps), key
    # every rollout's completion was scored once: 3 steps x 2 rollouts of at most 24 tokens
    assert 0 < counts["teacher_tokens_scored"] == steps[-1]["opd/teacher_tokens"] <= 6 * 24
    # the loss logged is the sampled reverse KL itself (its value), not a surrogate
    assert all(abs(e["loss"] - e["opd/reverse_kl"]) < 1e-3 for e in steps)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_opd_trains_with_trls_full_vocabulary_jsd_against_one_local_teacher(
    tiny_model_dir, teacher_dir, problems, tmp_path
):
    out = tmp_path / "out"
    full = ("opd.loss=jsd", "opd.support=full", "trainer.beta=1.0", "trainer.max_steps=2")
    assert opd(*overrides(tiny_model_dir, local(teacher_dir), problems, out, *full)) == 0
    steps = [e for e in read_manifest(out)["log_history"] if "opd/reverse_kl" in e]
    assert len(steps) == 2 and all(e["loss"] > 0 for e in steps)


def test_model_card_says_on_policy_distillation_from_its_teacher(
    tiny_model_dir, teacher_dir, problems, tmp_path
):
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, local(teacher_dir), problems, out, "trainer.max_steps=1")) == 0
    stage = tmp_path / "stage"
    assert (
        main(["push", str(out), "--repo-id", "me/opd-student", "--dry-run", "--stage-dir", str(stage)]) == 0
    )
    card = (stage / "main" / "README.md").read_text()
    assert f"on-policy distillation from `{teacher_dir}`" in card
    assert "opd.loss" in card and "jsd" in card and "opd.topk" in card  # the demo recipe's settings


def test_rerun_of_a_finished_run_trains_nothing_and_a_kill_resumes(
    tiny_model_dir, teacher_dir, problems, tmp_path
):
    out = tmp_path / "out"
    args = overrides(
        tiny_model_dir, local(teacher_dir), problems, out, "trainer.max_steps=12", "trainer.save_steps=1"
    )
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "opd",
        "--config",
        str(REPO / "recipes/demo/opd.yaml"),
        *args,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-3" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_manifest(out) is None
    resumed = distill_main(*cmd[3:])  # the resume and the rerun in this process: only the kill needs its own
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest["counts"]["global_step"] == 12 and "checkpoint-" in manifest["resumed_from"]
    before = sorted(p.name for p in out.iterdir()), (out / "manifest.json").read_bytes()
    again = distill_main(*cmd[3:])
    assert again.returncode == 0 and "already complete" in again.stderr
    assert (sorted(p.name for p in out.iterdir()), (out / "manifest.json").read_bytes()) == before


# --- routing and pre-flight --------------------------------------------------------------------------------


def test_unmapped_sources_are_listed_before_any_model_loads(tiny_model_dir, teacher_dir, tmp_path, capsys):
    rows = [
        {"id": str(i), "problem": f"What is {i}+1?", "answer": str(i + 1), "source": s}
        for i, s in enumerate(["toy", "geo", "geo", "nt"])
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teachers = f"{{toy: {{model: {teacher_dir}}}}}"
    assert opd(*overrides(tiny_model_dir, teachers, path, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "no teacher for source 'geo' (2 problems), 'nt' (1 problems)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_problems_without_the_problem_field_are_refused_with_file_and_line(
    tiny_model_dir, teacher_dir, tmp_path, capsys
):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"id": "a", "problem": "What is 1+1?"})
        + "\n"
        + json.dumps({"id": "b", "question": "x"})
        + "\n"
    )
    assert opd(*overrides(tiny_model_dir, local(teacher_dir), path, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"{path}:2" in err and "'problem'" in err


def test_each_source_is_scored_by_its_own_teacher(tiny_model_dir, teacher_dir):
    from pipeline.train.opd.config import OPDSettings, TeacherSpec
    from pipeline.train.opd.teachers import LocalTeacher
    from pipeline.train.opd.trainer import OPDTrainer

    a = LocalTeacher(TeacherSpec(model=str(teacher_dir)), {}, "cpu")
    b = LocalTeacher(TeacherSpec(model=str(tiny_model_dir)), {}, "cpu")
    routes = {"toy": "toy", "geo": "geo"}
    trainer = SimpleNamespace(teachers={"toy": a, "geo": b}, route=routes.get, opd=OPDSettings(topk=4))
    seqs = [([5, 6], [7, 8, 9]), ([10, 11], [12]), ([13], [14, 15])]
    got = OPDTrainer._score(trainer, ["geo", "toy", "geo"], seqs)
    for s, teacher, seq in zip(got, (b, a, b), seqs, strict=True):
        # batched (right-padded) and alone: equal up to float rounding
        assert torch.allclose(s.logprob, teacher.score([seq], 4)[0].logprob, atol=1e-5)


def test_a_mixed_source_scores_the_weighted_mixture_of_its_teachers(tiny_model_dir, teacher_dir):
    from transformers import AutoModelForCausalLM

    from pipeline.train.opd.config import TeacherSpec
    from pipeline.train.opd.mixture import MixedScorer
    from pipeline.train.opd.teachers import LocalTeacher

    members = [LocalTeacher(TeacherSpec(model=str(m)), {}, "cpu") for m in (teacher_dir, tiny_model_dir)]
    p, c = [5, 6, 7], [8, 9, 10]
    got = MixedScorer(members, [0.7, 0.3]).score([(p, c)], k=4)[0]
    dense = []
    for m in (teacher_dir, tiny_model_dir):
        with torch.no_grad():
            logits = AutoModelForCausalLM.from_pretrained(m).eval()(torch.tensor([p + c])).logits[0]
        dense.append(torch.softmax(logits.double(), -1)[len(p) - 1 : len(p) + len(c) - 1])
    mixture = 0.7 * dense[0] + 0.3 * dense[1]
    assert torch.allclose(got.logprob.double(), mixture[torch.arange(3), torch.tensor(c)].log(), atol=1e-5)
    # top-k: each teacher's mass on its own top-4 only (the rest is its tail), the 4 largest of that union
    union = sum(
        w * torch.zeros_like(d).scatter(-1, d.topk(4).indices, d.topk(4).values)
        for w, d in zip((0.7, 0.3), dense, strict=True)
    )
    assert torch.allclose(got.topk_logprobs.double(), union.topk(4).values.log(), atol=1e-5)
    assert torch.equal(got.topk_ids.long(), union.topk(4).indices)


def test_opd_with_a_mixture_of_teachers_trains_and_the_card_names_the_fusion(
    tiny_model_dir, teacher_dir, problems, tmp_path
):
    out = tmp_path / "out"
    mixed = f"{{'*': [{{model: {teacher_dir}, weight: 3}}, {{model: {tiny_model_dir}, weight: 1}}]}}"
    assert opd(*overrides(tiny_model_dir, mixed, problems, out, "trainer.max_steps=2")) == 0
    fusion = f"fusion of {teacher_dir} 0.75, {tiny_model_dir} 0.25"
    assert read_manifest(out)["teachers"] == {"*": fusion}
    stage = tmp_path / "stage"
    assert main(["push", str(out), "--repo-id", "me/s", "--dry-run", "--stage-dir", str(stage)]) == 0
    assert f"on-policy distillation from `{fusion}`" in (stage / "main" / "README.md").read_text()


@pytest.mark.parametrize("weights", [(0, 0), (-1, 2)])
def test_mixture_weights_that_do_not_sum_to_a_positive_number_are_one_line(
    weights, tiny_model_dir, teacher_dir, problems, tmp_path, capsys
):
    a, b = weights
    mixed = f"{{'*': [{{model: {teacher_dir}, weight: {a}}}, {{model: {tiny_model_dir}, weight: {b}}}]}}"
    assert opd(*overrides(tiny_model_dir, mixed, problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teachers" in err[0] and "weight" in err[0] and not (tmp_path / "out").exists()


def chat_template_variant(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for f in dst.glob("*.jinja"):
        f.write_text(
            f.read_text().replace(
                "'<|im_start|>' + message['role'] + '\\n'", "'<|im_start|>' + message['role'] + ':\\n'"
            )
        )
    config = dst / "tokenizer_config.json"
    data = json.loads(config.read_text())
    if "chat_template" in data:
        data["chat_template"] = data["chat_template"].replace(
            "message['role'] + '\\n'", "message['role'] + ':\\n'"
        )
        config.write_text(json.dumps(data))
    return dst


def test_a_teacher_with_another_chat_template_is_refused_with_the_first_differing_tokens(
    tiny_model_dir, teacher_dir, problems, tmp_path, capsys
):
    other = chat_template_variant(teacher_dir, tmp_path / "teacher-other-template")
    assert opd(*overrides(tiny_model_dir, local(other), problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "field 'teachers.*.model'" in err
    assert "tokenises the rendered prompt differently from the student, from token" in err
    assert "student [" in err and "vs teacher [" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, problems, tmp_path, capsys):
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    corpus = "Another tokenizer, trained on other text: 0123456789 + - = ? <think> </think> \\boxed{}\n" * 20
    other = build_tiny_model(tmp_path / "other", TinyModelSpec(vocab_size=300, seed=3), corpus)
    assert opd(*overrides(tiny_model_dir, local(other), problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert (
        "field 'teachers.*.model'" in err and "vocabulary differs from the student's" in err and "GOLD" in err
    )


def test_resuming_with_another_teacher_set_is_refused(
    tiny_model_dir, teacher_dir, problems, tmp_path, capsys
):
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, local(teacher_dir), problems, out, "trainer.max_steps=2")) == 0
    more = overrides(
        tiny_model_dir, local(tiny_model_dir), problems, out, "trainer.max_steps=4", "check_template=false"
    )
    assert opd(*more) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints of another run" in err and "changed: teachers: " in err


# --- self-distillation with privileged context (pipeline/train/opd/privileged.py) -----------------------------

SELF_PRIVILEGED = "{'*': {self_distill: true, privileged: {reference: answer}}}"


def test_a_privileged_teacher_scores_the_same_completion_tokens_after_its_longer_prompt(teacher_dir):
    """Independently: the teacher's conversation rendered as text with the completion's text after it, tokenised
    whole and run through the model; its last tokens must be the student's completion ids, scored alike."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.prompts import build_messages, load_prompt, prompt_ids
    from pipeline.train.opd.config import TeacherSpec
    from pipeline.train.opd.privileged import COLUMN, PrivilegedContext, teacher_messages, teacher_prompt_ids
    from pipeline.train.opd.teachers import LocalTeacher

    teacher = LocalTeacher(TeacherSpec(model=str(teacher_dir)), {}, "cpu")
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    messages = build_messages(load_prompt("math-r1-v1"), "What is 12+7?")
    completion_text = "<think>\n12+7: 2+7=9, 1+0=1\n</think>\n\n\\boxed{19}"
    completion = tok.encode(completion_text, add_special_tokens=False)
    student = prompt_ids(tok, messages)
    row = {COLUMN: json.dumps(teacher_messages(messages, "19", PrivilegedContext()))}
    [privileged] = teacher_prompt_ids([row], [student], lambda x: teacher, think_prefix=False)
    [scores] = teacher.score([(privileged, completion)], k=3)

    text = tok.apply_chat_template(json.loads(row[COLUMN]), tokenize=False, add_generation_prompt=True)
    assert "What is 12+7?" in text and "Here is a reference solution:\n19\n" in text
    ids = tok(text + completion_text, add_special_tokens=False).input_ids
    assert ids[-len(completion) :] == completion and len(ids) - len(completion) > len(student)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    rows = logp[
        len(ids) - len(completion) - 1 : len(ids) - 1
    ]  # the positions predicting each completion token
    assert torch.allclose(
        scores.logprob, rows[torch.arange(len(completion)), torch.tensor(completion)], atol=1e-5
    )
    [plain] = teacher.score([(student, completion)], k=3)  # the student's own prompt: another judgement
    assert (plain.logprob - scores.logprob).abs().max() > 1e-3


def test_self_distillation_with_privileged_context_trains_and_its_card_says_so(
    tiny_model_dir, problems, tmp_path
):
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, SELF_PRIVILEGED, problems, out, "trainer.max_steps=2")) == 0
    manifest = read_manifest(out)
    assert manifest["teachers"] == {"*": str(tiny_model_dir)}  # a frozen copy of the student itself
    steps = [e for e in manifest["log_history"] if "opd/reverse_kl" in e]
    # at step 1 the copy has the student's weights: only the reference in its prompt makes them differ
    assert len(steps) == 2 and steps[0]["opd/reverse_kl"] != 0
    stage = tmp_path / "stage"
    assert main(["push", str(out), "--repo-id", "me/opsd", "--dry-run", "--stage-dir", str(stage)]) == 0
    card = (stage / "main" / "README.md").read_text()
    assert f"self-distillation from a frozen copy of its starting weights (`{tiny_model_dir}`)" in card
    assert "privileged context: the teacher saw each problem's `answer`" in card


def test_privileged_context_on_problems_without_a_reference_is_refused_and_nothing_written(
    tiny_model_dir, tmp_path, capsys
):
    rows = [json.loads(line) for line in write_problems(tmp_path / "p.jsonl").read_text().splitlines()]
    rows[1]["answer"] = None
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, SELF_PRIVILEGED, bad, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "field 'teachers.*.privileged.reference'" in err[0]
    assert f"1 of the {len(rows)} problems" in err[0] and rows[1]["id"] in err[0]
    assert not out.exists()


def test_a_self_distillation_teacher_that_is_another_model_is_refused(
    tiny_model_dir, problems, tmp_path, capsys
):
    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    other = build_tiny_model(tmp_path / "deep", TinyModelSpec(layers=3, seed=4))
    teachers = f"{{'*': {{self_distill: true, model: {other}}}}}"
    assert opd(*overrides(tiny_model_dir, teachers, problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "field 'teachers.*.model'" in err and "num_hidden_layers 3 (student 2)" in err
    assert not (tmp_path / "out").exists()


# --- a served teacher (a real vllm serve on loopback) ------------------------------------------------------


# `teacher_server`: the session's `distill serve` of the tiny teacher (tests/conftest.py)


class QuietServer(ThreadingHTTPServer):
    """A client that hung up before its answer was written (the run ended, or gave up on a 503) is not an error of
    the proxy's: socketserver would print its BrokenPipeError traceback to the stderr the tests read."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FlakyProxy:
    """A loopback HTTP proxy to a vLLM server that answers 503 to every scoring request past `allow`, records the
    token ids of every scoring request it forwarded, and (`forward_tokenize=False`) acts as a router that forwards
    only the OpenAI routes `/v1/*`."""

    def __init__(self, upstream: str, forward_tokenize: bool = True) -> None:
        self.upstream, self.allow, self.seen, self.keys = upstream.removesuffix("/v1"), 10**9, 0, set()
        self.scored: list[list[int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.keys.add(self.headers.get("Authorization"))
                if self.path.endswith("/completions"):
                    with proxy.lock:  # handler threads run at once: count each request exactly once
                        proxy.seen += 1
                        refuse = proxy.seen > proxy.allow
                    if refuse:
                        return self.answer(503, b"")
                self.forward(body)

            def forward(self, body: bytes | None) -> None:
                if not forward_tokenize and not self.path.startswith("/v1/"):
                    return self.answer(404, b'{"detail": "Not Found"}')
                req = urllib.request.Request(
                    proxy.upstream + self.path, body, {"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                if status == 200 and self.path.endswith("/completions"):
                    proxy.scored.append(json.loads(body)["prompt"])
                self.answer(status, data)

            def answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_served_teacher_scores_equal_the_local_teachers(teacher_server, teacher_dir):
    from pipeline.train.opd.config import TeacherServer, TeacherSpec
    from pipeline.train.opd.served import ServedTeacher
    from pipeline.train.opd.teachers import LocalTeacher

    local_t = LocalTeacher(TeacherSpec(model=str(teacher_dir)), {}, "cpu")
    served_t = ServedTeacher(
        TeacherSpec(server=TeacherServer(base_url=teacher_server, model="teacher", concurrency=2))
    )
    tok = local_t.tokenizer
    prompt = local_t.prompt_ids([{"role": "user", "content": "What is 7+4?"}], False)
    seqs = [
        (
            prompt,
            tok.encode(
                "<think>\nI add 7 and 4: 7 + 4 = 11.\n</think>\n\nThe answer is 11.", add_special_tokens=False
            ),
        ),
        (prompt[:5], [17, 30, 99, 5, 250]),
    ]
    for a, b in zip(local_t.score(seqs, 5), served_t.score(seqs, 5), strict=True):
        # both in float32: vLLM's CPU kernels and transformers' differ by float rounding only
        assert (a.logprob - b.logprob).abs().max() < 2e-3
        assert (a.topk_logprobs - b.topk_logprobs).abs().max() < 2e-3
        top1 = a.topk_logprobs[:, 0] - a.topk_logprobs[:, 1] > 1e-2  # ties may swap order
        assert torch.equal(a.topk_ids[top1, 0], b.topk_ids[top1, 0])
    assert served_t.prompt_ids([{"role": "user", "content": "What is 7+4?"}], False) == prompt
    forced = local_t.prompt_ids([{"role": "user", "content": "What is 7+4?"}], True)
    assert served_t.prompt_ids([{"role": "user", "content": "What is 7+4?"}], True) == forced


def test_opd_with_a_served_teacher_survives_its_outage_and_resumes(
    tiny_model_dir, teacher_server, problems, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("OPD_TEST_KEY", SECRET)
    proxy = FlakyProxy(teacher_server)
    out = tmp_path / "out"
    args = overrides(
        tiny_model_dir, served(proxy.url), problems, out, "trainer.max_steps=4", "opd.loss=jsd", "opd.topk=5"
    )
    proxy.allow = 5  # the pre-flight's vocabulary probe, then 2 rollouts a step: steps 1 and 2 are scored,
    # step 3 finds the teacher down
    assert opd(*args) == 2
    err = capsys.readouterr().err
    assert f"teacher 'teacher' at {proxy.url} failed after 1 retries" in err and "503" in err
    assert SECRET not in err and "Traceback" not in err
    assert f"Bearer {SECRET}" in proxy.keys  # the key was sent to the server, and only there
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and read_manifest(out) is None
    proxy.allow = 10**9
    assert opd(*args) == 0
    manifest = read_manifest(out)
    assert manifest["counts"]["global_step"] == 4 and manifest["resumed_from"].endswith("checkpoint-2")
    assert SECRET not in (out / "manifest.json").read_text()
    # the costs count the whole run, the 2 steps before the outage too: the teacher answered 8 scoring requests
    requests, tokens, problems_seen = teacher_side_counts(proxy, tiny_model_dir)
    assert requests == 8 and manifest["counts"]["teacher_tokens_scored"] == tokens
    assert manifest["counts"]["problems_seen"] == problems_seen
    proxy.server.shutdown()


def test_unreachable_served_teacher_is_named_before_training(
    tiny_model_dir, problems, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("OPD_TEST_KEY", SECRET)
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert opd(*overrides(tiny_model_dir, served(url), problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"teacher replica {url} does not answer" in err and SECRET not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- teacher replicas, pre-flight of served teachers, costs over several processes ------------------------


def replicas(urls: list[str], retries: int = 1) -> str:
    listed = ", ".join(f"'{u}'" for u in urls)
    return f"{{'*': {{server: {{base_url: [{listed}], model: teacher, max_retries: {retries}}}}}}}"


def completions_served(log: Path) -> int:
    """Scoring requests a vLLM server answered, from its own access log."""
    return sum('"POST /v1/completions HTTP/1.1" 200' in line for line in log.read_text().splitlines())


def test_a_replica_killed_mid_run_loses_no_step_and_no_scoring_request(
    tiny_model_dir, teacher_dir, teacher_server, problems, tmp_path
):
    from tests.conftest import vllm_server

    out, log = tmp_path / "out", tmp_path / "replica-b.log"
    with vllm_server(teacher_dir, log, "--max-logprobs", "20") as (url_b, proc_b):
        killed_while_training = []

        def kill_b_mid_run() -> None:  # once B has scored rollouts of two steps (its pre-flight probe is one)
            while completions_served(log) < 3:
                time.sleep(0.05)
            killed_while_training.append(read_manifest(out) is None)
            os.killpg(proc_b.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_b_mid_run, daemon=True)
        killer.start()
        args = overrides(
            tiny_model_dir, replicas([teacher_server, url_b]), problems, out, "trainer.max_steps=6"
        )
        assert opd(*args, "trainer.save_steps=100", "opd.loss=jsd", "opd.topk=5") == 0
        killer.join(timeout=5)
        assert killed_while_training == [True] and proc_b.wait(timeout=30) is not None
    counts = read_manifest(out)["counts"]
    assert counts["global_step"] == 6 and counts["rollouts"] == 12
    history = [e for e in read_manifest(out)["log_history"] if "opd/reverse_kl" in e]
    assert len(history) == 6  # every step trained on scores of all its rollouts


def test_a_dead_replica_at_start_is_named_and_nothing_is_written(
    tiny_model_dir, teacher_server, problems, tmp_path, capsys
):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, replicas([teacher_server, dead]), problems, out)) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert f"teacher replica {dead} does not answer" in line and "start it, or remove it" in line
    assert "teachers.*.server.base_url" in line and "Traceback" not in err and not out.exists()


def test_a_router_that_does_not_forward_tokenize_is_named_and_nothing_is_written(
    tiny_model_dir, teacher_server, problems, tmp_path, capsys
):
    router = FlakyProxy(teacher_server, forward_tokenize=False)
    out = tmp_path / "out"
    assert opd(*overrides(tiny_model_dir, served(router.url), problems, out)) == 2
    err = capsys.readouterr().err
    assert f"{router.url.removesuffix('/v1')}/tokenize" in err and "404" in err
    assert "a router that forwards /tokenize" in err and "Traceback" not in err and not out.exists()
    router.server.shutdown()


@pytest.fixture(scope="module")
def wide_student(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny student with its output layer padded to 2,048 ids (the same tokenizer): ids a teacher of 1,024
    cannot score."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("wide") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(2048)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_a_student_vocabulary_the_served_teacher_cannot_score_is_refused_up_front(
    wide_student, teacher_server, problems, tmp_path, capsys
):
    out = tmp_path / "out"
    assert opd(*overrides(wide_student, served(teacher_server, retries=8), problems, out)) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "cannot score token id 2047, the student's highest of 2048" in line and "400" in line
    assert "Traceback" not in err and not out.exists()


def test_a_student_vocabulary_the_local_teacher_cannot_score_is_refused_before_training(
    wide_student, teacher_dir, problems, tmp_path, capsys
):
    assert opd(*overrides(wide_student, local(teacher_dir), problems, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "has 1024 token ids, the student samples from 2048" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("checkpoint-*"))


def test_a_4xx_from_the_teacher_is_not_retried(teacher_server, tmp_path):
    from pipeline.train.opd.config import TeacherError, TeacherServer, TeacherSpec
    from pipeline.train.opd.served import ServedTeacher

    proxy = FlakyProxy(teacher_server)
    teacher = ServedTeacher(
        TeacherSpec(server=TeacherServer(base_url=proxy.url, model="teacher", max_retries=8))
    )
    started = time.monotonic()
    with pytest.raises(TeacherError, match="refused a scoring request: 400 .*not retried"):
        teacher.score([([5, 6], [7, 4000])], k=5)  # 4000: outside the teacher's 1,024 ids
    assert proxy.seen == 1 and time.monotonic() - started < 10  # one request, no backoff
    proxy.server.shutdown()


def test_costs_are_summed_over_processes_and_match_the_teachers_own_count(
    tiny_model_dir, teacher_server, problems, tmp_path
):
    proxy = FlakyProxy(teacher_server)
    out = tmp_path / "out"
    two = f"launch.accelerate_config={REPO / 'recipes/accelerate/cpu-2proc.yaml'}"
    assert (
        opd(*overrides(tiny_model_dir, served(proxy.url), problems, out, two, "opd.loss=jsd", "opd.topk=5"))
        == 0
    )
    counts = read_manifest(out)["counts"]
    assert counts["world_size"] == 2 and counts["rollouts"] == 12  # 3 steps x 2 rollouts x 2 processes
    requests, tokens, problems_seen = teacher_side_counts(proxy, tiny_model_dir)
    assert requests == 12 and counts["teacher_tokens_scored"] == tokens
    assert counts["problems_seen"] == problems_seen > 6  # more than one process's 6 rollouts could reach
    proxy.server.shutdown()


def teacher_side_counts(proxy: FlakyProxy, student: Path) -> tuple[int, int, int]:
    """From the requests the teacher answered (each a problem's prompt followed by a rollout): scoring requests,
    completion tokens scored and distinct problems."""
    from transformers import AutoTokenizer

    from pipeline.prompts import build_messages, load_prompt, prompt_ids
    from tests.helpers import problem_rows

    tok, template = AutoTokenizer.from_pretrained(student), load_prompt("math-r1-v1")
    prompts = {
        r["id"]: prompt_ids(tok, build_messages(template, r["problem"]), False) for r in problem_rows()
    }
    scored = [r for r in proxy.scored if len(r) > 1]  # the pre-flight's one-token vocabulary probe aside
    matched = [next(i for i, p in prompts.items() if r[: len(p)] == p) for r in scored]
    tokens = sum(len(r) - len(prompts[i]) for r, i in zip(scored, matched, strict=True))
    return len(scored), tokens, len(set(matched))
