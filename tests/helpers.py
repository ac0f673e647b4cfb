"""Test helpers: a tiny teacher that has memorised a few worked arithmetic problems, trained in seconds.

Also: a generate recipe over many sums, snapshots of committed files, and finding engine processes (kill tests).

Its samples are canonical text (they re-tokenize to the ids it generated) and mostly correct, which real-engine
tests of generate, filter, eval and kd need; a random model emits byte soup.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PROBLEMS = [(a, b) for a, b in [(2, 3), (7, 4), (12, 30), (5, 8), (21, 13), (9, 9), (40, 2), (6, 15)]]


def problem_rows() -> list[dict]:
    return [
        {"id": f"add-{a}-{b}", "problem": f"What is {a}+{b}?", "answer": str(a + b), "source": "toy"}
        for a, b in PROBLEMS
    ]


def worked_solution(a: int, b: int) -> str:
    return f"<think>\nI add {a} and {b}: {a} + {b} = {a + b}.\n</think>\n\nThe answer is \\boxed{{{a + b}}}."


def write_problems(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in problem_rows()))
    return path


def train_memoriser(base: Path, out: Path, steps: int = 200, seed: int = 0) -> Path:
    """Fine-tune `base` (a tiny-model folder) on the worked solutions of PROBLEMS; save to `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.prompts import build_messages, load_prompt

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    template = load_prompt("math-r1-v1")
    rows, masks = [], []
    for a, b in PROBLEMS:
        prompt = tok.apply_chat_template(
            build_messages(template, f"What is {a}+{b}?"), tokenize=False, add_generation_prompt=True
        )
        p_ids = tok.encode(prompt, add_special_tokens=False)
        c_ids = tok.encode(worked_solution(a, b), add_special_tokens=False) + [tok.eos_token_id]
        rows.append(p_ids + c_ids)
        masks.append([0] * len(p_ids) + [1] * len(c_ids))
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor(
        [
            [t if m else -100 for t, m in zip(r, mk, strict=True)] + [-100] * (width - len(r))
            for r, mk in zip(rows, masks, strict=True)
        ]
    )
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja" or f.name == "tiny_model.json":
            shutil.copy(f, out / f.name)
    return out


def sft_rows() -> list[dict]:
    """Examples in the filter stage's dataset format (TRL conversational prompt/completion)."""
    from pipeline.prompts import build_messages, load_prompt

    template = load_prompt("math-r1-v1")
    return [
        {
            "id": f"add-{a}-{b}/0",
            "problem_id": f"add-{a}-{b}",
            "source": "toy",
            "prompt": build_messages(template, f"What is {a}+{b}?"),
            "completion": [{"role": "assistant", "content": worked_solution(a, b)}],
        }
        for a, b in PROBLEMS
    ]


def write_sft_dataset(folder: Path, rows: list[dict] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    from pipeline.records.manifest import write_manifest

    rows = rows or sft_rows()
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000.parquet")
    write_manifest(folder, "filter", {}, [], {"kept": len(rows)})  # a complete filter output
    return folder


def sums_recipe(tmp_path: Path, teacher_dir: Path, problems: int, name: str) -> Path:
    """A generate recipe file for the tiny teacher: `problems` sums x 2 samples at temperature 1, top-3 logprobs; flushed 8 samples a shard."""
    path = tmp_path / "many.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i:03d}", "problem": f"What is {i}+{(i * 37) % 100}?", "answer": None})
            + "\n"
            for i in range(problems)
        )
    )
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        f"stage: generate\nmodel: {teacher_dir}\nproblems:\n  path: {path}\n"
        f"output: {tmp_path / name}\nflush_every: 8\nlogprobs: 3\n"
        "sampling:\n  n: 2\n  max_tokens: 64\n  temperature: 1.0\n"
        "engine:\n  max_model_len: 512\n  enforce_eager: true\n  dtype: float32\n"
    )
    return recipe


def snapshot(out: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith(("samples-", "logprobs-"))
    }


def engine_processes() -> list[int]:
    """Pids of the vLLM engine-core processes on this machine."""

    def cmdline(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            return ""

    return [int(d) for d in os.listdir("/proc") if d.isdigit() and "EngineCore" in cmdline(d)]


def rows(folder: Path) -> dict[str, dict]:
    """Every Sample row under `folder` (shard folders included) by id; a duplicate id fails the test."""
    out = {}
    for shard in sorted(folder.rglob("samples-*.jsonl")):
        for line in shard.read_text().splitlines():
            row = json.loads(line)
            assert row["id"] not in out, f"duplicate {row['id']}"
            out[row["id"]] = row
    return out
