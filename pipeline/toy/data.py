"""`distill toy-data DIR`: the toy task's problem files, the teacher's training set, and a tokenizer corpus.

    distill toy-data data/toy --train 4000 --heldout 300 --teacher-examples 20000 --seed 0

Writes DIR/train.jsonl and DIR/heldout.jsonl (Problem records: what the demo's teacher solves and what every
model is scored on), DIR/teacher-sft/data/*.parquet (worked solutions in the filter stage's dataset format, to
train the toy teacher with the sft stage; drawn from the train split only) and DIR/corpus.txt (text to train
the toy tokenizer on).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.prompts import build_messages, load_prompt
from pipeline.records.write import write_jsonl
from pipeline.toy.task import make_problems, solution_of

HELP = "write the toy arithmetic task's problems, the toy teacher's training set and a tokenizer corpus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="output folder")
    parser.add_argument("--train", type=int, default=6000, help="training problems for the demo's teacher")
    parser.add_argument("--heldout", type=int, default=400, help="held-out problems every model is scored on")
    parser.add_argument(
        "--teacher-examples", type=int, default=8000, help="worked solutions to train the teacher"
    )
    parser.add_argument("--seed", type=int, default=0)


def write_teacher_set(folder: Path, count: int, seed: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    template = load_prompt("math-r1-v1")
    rows = [
        {
            "id": f"{p.id}/0",
            "problem_id": p.id,
            "source": p.source,
            "prompt": build_messages(template, p.problem),
            "completion": [{"role": "assistant", "content": solution_of(p)}],
        }
        for p in make_problems(seed + 1000, count, "train")
    ]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def main_toy_data(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    train = make_problems(args.seed, args.train, "train")
    heldout = make_problems(args.seed + 1, args.heldout, "heldout")
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", heldout)
    write_teacher_set(out / "teacher-sft", args.teacher_examples, args.seed)
    template = load_prompt("math-r1-v1")
    corpus = [
        template.render(p.problem) + "\n" + solution_of(p)
        for p in make_problems(args.seed + 7, 3000, "train")
    ]
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n")
    print(
        f"wrote {out}: {len(train)} train and {len(heldout)} held-out problems, {args.teacher_examples} worked "
        "solutions for the teacher, a tokenizer corpus"
    )
    return 0


def checked_teacher_rows(tokenizer: Any, count: int, seed: int, rate: float) -> list[dict[str, Any]]:
    """Task v2's teacher set, pre-tokenized for TRL: each worked solution checked column by column, each column
    line written wrong with probability `rate` and repaired (pipeline/toy/checks.py). `labels` are -100 on the
    prompt and on every token that overlaps a wrong digit, so the teacher learns to check and repair, never to
    make the error; the rest of the completion and the closing `<|im_end|>` are trained on."""
    import random

    from pipeline.toy.checks import checked_solution_with_errors

    template, rng, rows = load_prompt("math-r1-v1"), random.Random(seed), []
    for p in make_problems(seed + 1000, count, "train"):
        m = p.metadata
        text, wrong = checked_solution_with_errors(m["a"], m["b"], m["op"], rng, rate)
        prompt = build_messages(template, p.problem)
        rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [*encoded["input_ids"], tokenizer.eos_token_id]
        spans = [*encoded["offset_mapping"], (len(text), len(text))]
        no_loss = [any(s < e2 and s2 < e for s2, e2 in wrong) for s, e in spans]
        rows.append({
            "id": f"{p.id}/0",
            "input_ids": prompt_ids + ids,
            "labels": [-100] * len(prompt_ids) + [-100 if skip else t for t, skip in zip(ids, no_loss, strict=True)],
        })  # fmt: skip
    return rows
