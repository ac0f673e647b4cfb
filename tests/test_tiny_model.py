"""The tiny-model builder: loads offline in transformers, keeps <think> in the template, serves in vLLM."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import run_distill

TEXT = "<think>\nLet 123 + 4567 = 4690, héllo wörld\n</think>\n\nThe answer is \\boxed{4690}.<|im_end|>"
CHAT = [
    {"role": "user", "content": "What is 12+35?"},
    {"role": "assistant", "content": "<think>\n2 + 5 = 7, 1 + 3 = 4\n</think>\n\n\\boxed{47}"},
]


def test_loads_offline_with_transformers_and_runs_forward(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert (
        model.config.model_type == "qwen2" and model.config.head_dim >= 32
        if hasattr(model.config, "head_dim")
        else model.config.hidden_size // model.config.num_attention_heads >= 32
    )
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == tok.eos_token_id
    out = model(**tok("hello", return_tensors="pt"))
    assert out.logits.shape[-1] == model.config.vocab_size >= len(tok)


def test_token_ids_agree_between_tokenizers_and_auto_tokenizer(tiny_model_dir):
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert type(auto).__name__ == "Qwen2Tokenizer"  # rebuilt pre-tokenizer, as for real Qwen checkpoints
    assert raw.encode(TEXT).ids == auto(TEXT)["input_ids"]
    ids = auto(TEXT)["input_ids"]
    assert auto.convert_tokens_to_ids("<think>") in ids and ids[-1] == auto.eos_token_id
    assert auto.decode(ids) == TEXT


def test_chat_template_keeps_think_content_in_the_assistant_turn_and_masks_the_rest(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = tok.apply_chat_template(CHAT, tokenize=False)
    assert (
        "<|im_start|>assistant\n<think>\n2 + 5 = 7, 1 + 3 = 4\n</think>\n\n\\boxed{47}<|im_end|>" in rendered
    )
    enc = tok.apply_chat_template(CHAT, return_assistant_tokens_mask=True, return_dict=True)
    supervised = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(supervised) == CHAT[1]["content"] + "<|im_end|>"
    assert supervised[-1] == tok.eos_token_id
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(prompt)


@pytest.mark.slow
def test_vllm_generates_from_the_tiny_model_with_the_same_token_ids(teacher_engine, teacher_dir):
    """The session's vLLM engine (the tiny model as the memoriser trained it, saved with its tokenizer; eval's
    test loads the untrained one in vLLM too), not a second engine start-up."""
    from vllm import SamplingParams

    llm = teacher_engine.llm
    auto = AutoTokenizer.from_pretrained(teacher_dir)
    assert llm.get_tokenizer().encode(TEXT) == auto(TEXT)["input_ids"]
    out = llm.generate(["What is 2+2?"], SamplingParams(max_tokens=8, temperature=0.6, n=2, logprobs=3))
    assert len(out[0].outputs) == 2
    for completion in out[0].outputs:
        assert 1 <= len(completion.token_ids) <= 8 and len(completion.logprobs) == len(completion.token_ids)


def test_distill_tiny_model_command_builds_a_model_with_the_given_shape(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one two three four five six seven 1 2 3 <think> x </think>\n" * 20)
    result = run_distill(
        "tiny-model",
        str(tmp_path / "m"),
        "--hidden-size",
        "64",
        "--layers",
        "1",
        "--heads",
        "2",
        "--vocab-size",
        "512",
        "--seed",
        "3",
        "--corpus",
        str(corpus),
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 1, 512)
    assert "parameters" in result.stdout


def test_tiny_model_rejects_shapes_that_cannot_work(tmp_path):
    result = run_distill("tiny-model", str(tmp_path / "m"), "--hidden-size", "100", "--heads", "3")
    assert result.returncode != 0 and "not divisible" in result.stderr


@pytest.mark.parametrize("seed", [0])
def test_same_seed_gives_identical_weights(tmp_path, seed):
    from safetensors.torch import load_file

    from pipeline.tiny_model import TinyModelSpec, build_tiny_model

    a = load_file(build_tiny_model(tmp_path / "a", TinyModelSpec(seed=seed)) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", TinyModelSpec(seed=seed)) / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
