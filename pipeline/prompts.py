"""Prompt templates from `prompts/` (versioned by file name) and the chat messages built from them.

    messages = build_messages(load_prompt("math-r1-v1"), "What is 2+3?", system=None)

`{problem}` is the only placeholder; templates are plain text, so `\\boxed{}` needs no escaping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
THINK_PREFIX = "<think>\n"


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


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], think_prefix: bool = False) -> list[int]:
    """The token ids a model is prompted with: the chat template's text with the generation prompt, encoded
    without extra special tokens, then the `<think>\\n` prefix encoded on its own (generate, eval and opd alike)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = tokenizer.encode(THINK_PREFIX, add_special_tokens=False) if think_prefix else []
    return tokenizer.encode(text, add_special_tokens=False) + prefix
