"""Prompts are versioned by file name and never edited in place; rendering substitutes only {problem}."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.prompts import PROMPTS_DIR, build_messages, load_prompt


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


# A prompt's text is part of every Sample made with it: changing one means a new file (next version).
PROMPT_HASHES = {
    "choice-r1-v1": "a8f62ecd4439cb3ea821d9966e2f48c9d8abe3fa7db931426e4d8eb5e2e868be",
    "code-v1": "3f294b0e2fc84225dac32c9ef93d86fc1cfb076b20b51ad5c1136eecfb93bac9",
    "math-r1-v1": "599d4ec3b79e68b21557029a4ca01cf8e4c77fd470d302fd2524a708a4cc7d98",
    "system-reasoning-v1": "5f1412814281be2e5ce7c5607cf94d71e2a60330c4eb041ace823c152776e59a",
}
