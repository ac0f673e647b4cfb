"""Prompt templates from `prompts/` (versioned by file name) and the chat messages built from them.

    messages = build_messages(load_prompt("math-r1-v1"), "What is 2+3?", system=None)

`{problem}` is the only placeholder; templates are plain text, so `\\boxed{}` needs no escaping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
THINK_PREFIX = "<think>\n"
T = TypeVar("T")


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def tag(self) -> str:
        """Name and content hash, as fingerprints and eval settings record a prompt."""
        return f"{self.name} sha256:{self.sha256[:16]}"

    def render(self, problem: str) -> str:
        return self.text.replace("{problem}", problem)


def load_prompt(name_or_path: str) -> Prompt:
    """A prompt by name (`math-r1-v1` -> prompts/math-r1-v1.txt) or by path to a .txt file."""
    path = Path(name_or_path)
    if path.suffix != ".txt":
        path = PROMPTS_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.txt")))
        raise FileNotFoundError(f"prompt '{name_or_path}' not found ({path}); available: {available}")
    text = path.read_text(encoding="utf-8").rstrip("\n")
    return Prompt(name=path.stem, text=text)


def build_messages(template: Prompt, problem: str, system: Prompt | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system.text}] if system else []
    messages.append({"role": "user", "content": template.render(problem)})
    return messages


def think_overlap(rendered: Sequence[T], prefix: Sequence[T]) -> int:
    """How much of `prefix`'s start `rendered` already ends with: the length of the longest piece of the
    `<think>\\n` prefix a chat template put there itself (0 when it opens no think block). Works on text and on
    token ids alike. QwQ-32B's template, and DeepSeek-R1's since its 2025 update, end the generation prompt
    with `<think>\\n`: forcing the prefix again would prompt `<think>\\n<think>\\n`."""
    for n in range(min(len(prefix), len(rendered)), 0, -1):
        if list(rendered[-n:]) == list(prefix[:n]):
            return n
    return 0


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], think_prefix: bool = False) -> list[int]:
    """The token ids a model is prompted with: the chat template's text with the generation prompt, encoded
    without extra special tokens, then the `<think>\\n` prefix encoded on its own (generate, eval and opd alike).

    A template that opens the think block itself is not given a second one: the part of the prefix it already
    wrote is cut from its text and the whole prefix encoded in its place, so the prompt ends with exactly one
    `<think>\\n` and always with the prefix's own ids (the ones generate stores as the completion's start)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not think_prefix:
        return tokenizer.encode(text, add_special_tokens=False)
    text = text[: len(text) - think_overlap(text, THINK_PREFIX)]
    return tokenizer.encode(text, add_special_tokens=False) + tokenizer.encode(
        THINK_PREFIX, add_special_tokens=False
    )


def with_think_prefix(ids: list[int], prefix_ids: list[int]) -> list[int]:
    """Token ids of a rendered prompt plus the part of the think prefix its template did not already write
    (for a served model, whose rendering arrives as ids)."""
    return ids + prefix_ids[think_overlap(ids, prefix_ids) :]
