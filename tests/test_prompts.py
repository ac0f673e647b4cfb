"""Prompts are versioned by file name and never edited in place; rendering substitutes only {problem}."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.prompts import (
    PROMPTS_DIR,
    THINK_PREFIX,
    build_messages,
    load_prompt,
    prompt_ids,
    think_overlap,
    with_think_prefix,
)


def test_r1_math_prompt_is_deepseeks_instruction_in_the_user_turn():
    messages = build_messages(load_prompt("math-r1-v1"), "What is $2+3$?")
    assert messages == [
        {
            "role": "user",
            "content": "What is $2+3$?\nPlease reason step by step, and put your "
            "final answer within \\boxed{}.",
        }
    ]


def test_system_prompt_is_optional_and_comes_first():
    messages = build_messages(
        load_prompt("code-v1"), "Reverse a list.", system=load_prompt("system-reasoning-v1")
    )
    assert [m["role"] for m in messages] == ["system", "user"] and "Reverse a list." in messages[1]["content"]


def test_prompt_files_are_never_edited_in_place():
    hashes = {
        p.stem: hashlib.sha256(p.read_text().rstrip("\n").encode()).hexdigest()
        for p in sorted(PROMPTS_DIR.glob("*.txt"))
    }
    assert hashes == PROMPT_HASHES, "a prompt changed: add a new versioned file instead of editing this one"


def test_unknown_prompt_lists_the_available_ones():
    with pytest.raises(FileNotFoundError, match="available: choice-r1-v1, code-v1, math-r1-v1"):
        load_prompt("math-r2")


@pytest.mark.parametrize(
    ("rendered", "overlap"),
    [
        ("<|im_start|>assistant\n", 0),  # ChatML, Qwen2.5, Qwen3 (thinking mode opens nothing)
        ("<|im_start|>assistant\n<think>\n", 8),  # QwQ-32B
        ("<｜Assistant｜><think>\n", 8),  # DeepSeek-R1 since its 2025 template update
        ("<｜Assistant｜><think>", 7),  # a template that opens the tag but not the line
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", 0),  # Qwen3 with thinking off: closed block
        ("", 0),
    ],
)
def test_think_overlap_finds_a_think_block_the_template_opened(rendered, overlap):
    assert think_overlap(rendered, THINK_PREFIX) == overlap


@pytest.fixture
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("opening", ["<think>\\n", "<think>"])
def test_think_prefix_is_never_doubled_by_a_template_that_opens_the_block(tokenizer, opening):
    messages = build_messages(load_prompt("math-r1-v1"), "What is 2+3?")
    plain = prompt_ids(tokenizer, messages, think_prefix=True)
    generation = "'<|im_start|>assistant\\n'"
    assert generation in tokenizer.chat_template
    tokenizer.chat_template = tokenizer.chat_template.replace(generation, f"{generation} + '{opening}'")
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("assistant\n" + opening.replace("\\n", "\n"))
    forced = prompt_ids(tokenizer, messages, think_prefix=True)
    prefix = tokenizer.encode(THINK_PREFIX, add_special_tokens=False)
    assert tokenizer.decode(forced).count("<think>") == 1 and forced[-len(prefix) :] == prefix
    assert forced == plain  # the same prompt as a template that opens nothing, with the prefix forced
    # a served teacher renders to ids: the same rule at the token level
    own = tokenizer.encode(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )
    assert with_think_prefix(own, prefix) == forced


def test_think_prefix_is_added_when_the_template_opens_nothing(tokenizer):
    messages = build_messages(load_prompt("math-r1-v1"), "What is 2+3?")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    prefix = tokenizer.encode(THINK_PREFIX, add_special_tokens=False)
    assert prompt_ids(tokenizer, messages, think_prefix=False) == ids
    assert (
        prompt_ids(tokenizer, messages, think_prefix=True) == ids + prefix == with_think_prefix(ids, prefix)
    )


# A prompt's text is part of every Sample made with it: changing one means a new file (next version).
PROMPT_HASHES = {
    "choice-r1-v1": "a8f62ecd4439cb3ea821d9966e2f48c9d8abe3fa7db931426e4d8eb5e2e868be",
    "code-v1": "3f294b0e2fc84225dac32c9ef93d86fc1cfb076b20b51ad5c1136eecfb93bac9",
    "math-r1-v1": "599d4ec3b79e68b21557029a4ca01cf8e4c77fd470d302fd2524a708a4cc7d98",
    "system-reasoning-v1": "5f1412814281be2e5ce7c5607cf94d71e2a60330c4eb041ace823c152776e59a",
}
