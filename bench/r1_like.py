"""Synthetic R1-like teacher samples for the filter's scale benchmark: ~7 KB of reasoning each, deterministic.

    python bench/r1_like.py OUT.jsonl 100000      # or write_samples(path, n) from a script

Four samples a problem; the reasoning is paragraphs of words drawn from a fixed vocabulary (so traces are not
repetitive loops and not near duplicates of each other), an answer in `\\boxed{}` after `</think>`: right for
~75% of samples, wrong otherwise, ~2% cut off by the token budget, ~2% an exact copy of the previous completion.
The first n samples of a larger set are the set of n (same seed), so sizes compare like for like.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

VOCAB = [
    f"{a}{b}"
    for a in ("con", "de", "re", "pro", "in", "ex", "sub", "trans", "per", "ad", "com", "dis")
    for b in (
        "sider",
        "duce",
        "solve",
        "pute",
        "fine",
        "tract",
        "stitute",
        "form",
        "mit",
        "ject",
        "verge",
        "pand",
    )
] + ["the", "a", "of", "to", "and", "is", "we", "so", "then", "if", "x", "y", "n", "sum", "check", "wait"]


def reasoning(rng: random.Random, chars: int = 7000) -> str:
    paragraphs, size = [], 0
    while size < chars:
        words = rng.choices(VOCAB, k=rng.randint(60, 110))
        paragraphs.append(" ".join(words).capitalize() + ".")
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs)


def sample(
    i: int, rng: random.Random, previous: str | None, problems: int | None = None, chars: int = 7000
) -> dict:
    """Sample i: of problem i // 4 (or i % `problems`, a fixed set of problems), reasoning of ~`chars`."""
    p, k = (i // 4, i % 4) if problems is None else (i % problems, i // problems)
    pid, gold = f"p{p:07d}", str(p % 997)
    answer = gold if rng.random() < 0.75 else str(int(gold) + 1)
    completion = f"<think>\n{reasoning(rng, chars)}\n</think>\n\nSo the answer is \\boxed{{{answer}}}."
    if previous is not None and rng.random() < 0.02:
        completion = previous
    problem = f"Problem {pid}: find the value of the expression number {p} modulo 997."
    return {
        "id": f"{pid}/{k}",
        "problem_id": pid,
        "sample_index": k,
        "problem": problem,
        "answer": gold,
        "prompt": [{"role": "user", "content": problem}],
        "completion": completion,
        "finish_reason": "length" if rng.random() < 0.02 else "stop",
        "num_prompt_tokens": 20,
        "num_completion_tokens": len(completion) // 4,
        "teacher": "synthetic-r1",
        "sampling": {"temperature": 0.6, "top_p": 0.95},
        "source": ("algebra", "geometry", "number_theory")[p % 3],
    }


def write_samples(path: Path, n: int, seed: int = 0, problems: int | None = None, chars: int = 7000) -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = None
    with path.open("w") as f:
        for i in range(n):
            row = sample(i, rng, previous, problems, chars)
            previous = row["completion"]
            f.write(json.dumps(row) + "\n")
    return path


if __name__ == "__main__":
    write_samples(Path(sys.argv[1]), int(sys.argv[2]))
