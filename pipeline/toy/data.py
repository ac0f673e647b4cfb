"""`distill toy-data DIR`: the toy task's problem files and a tokenizer corpus; `distill toy-data DIR
--teacher-set TOKENIZER`: the toy teacher's training set, pre-tokenized with the teacher's tokenizer.

    distill toy-data data/toy --train 6000 --heldout 400 --seed 0
    distill toy-data runs/toy/teacher-set --teacher-set runs/toy/teacher-init --teacher-examples 16000 \
        --error-rate 0.5 --seed 0

The first writes DIR/train.jsonl and DIR/heldout.jsonl (Problem records: what the demo's teacher solves and what
every model is scored on) and DIR/corpus.txt (task v2 text, checks and repairs included, to train the toy
tokenizer on). The second writes DIR/data/*.parquet: `input_ids` and `labels` for the sft stage, one task v2
worked solution per problem (drawn from the train split's generator with another seed), each column line written
wrong with probability `--error-rate`, then checked, fixed and checked again (pipeline/toy/checks.py); the wrong
digits carry no loss, so the teacher learns to repair errors and not to make them.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from pipeline.prompts import build_messages, load_prompt
from pipeline.records.write import write_jsonl
from pipeline.toy.checks import checked_solution_with_errors
from pipeline.toy.task import make_problems

HELP = "write the toy arithmetic task's problems and tokenizer corpus, or the toy teacher's training set"
TEACHER_SEED_OFFSET = 1000  # the teacher's worked solutions come from problems drawn with seed + 1000
TEACHER_PROBLEMS = (
    8000  # distinct problems the teacher set draws from (the train split has ~10.7k); past that,
)
# each problem comes again with other errors drawn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="output folder")
    parser.add_argument("--train", type=int, default=6000, help="training problems for the demo's teacher")
    parser.add_argument("--heldout", type=int, default=400, help="held-out problems every model is scored on")
    parser.add_argument(
        "--teacher-set", metavar="TOKENIZER", help="write the teacher's pre-tokenized training set instead"
    )
    parser.add_argument(
        "--teacher-examples", type=int, default=16000, help="worked solutions to train the teacher on"
    )
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.5,
        help="chance that a column line of a teacher example is wrong",
    )
    parser.add_argument("--seed", type=int, default=0)


def checked_teacher_rows(tokenizer: Any, count: int, seed: int, rate: float) -> list[dict[str, Any]]:
    """Task v2's teacher set, pre-tokenized for TRL: each worked solution checked column by column, each column
    line written wrong with probability `rate` and repaired (pipeline/toy/checks.py). `labels` are -100 on the
    prompt and on every token that overlaps a wrong digit, so the teacher learns to check and repair, never to
    make the error; the rest of the completion and the closing `<|im_end|>` are trained on."""
    template, rng, rows = load_prompt("math-r1-v1"), random.Random(seed), []
    problems = make_problems(seed + TEACHER_SEED_OFFSET, min(count, TEACHER_PROBLEMS), "train")
    for n in range(count):
        p = problems[n % len(problems)]
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
            "id": f"{p.id}/{n // len(problems)}",
            "input_ids": prompt_ids + ids,
            "labels": [-100] * len(prompt_ids) + [-100 if skip else t for t, skip in zip(ids, no_loss, strict=True)],
        })  # fmt: skip
    return rows


def write_teacher_set(folder: Path, tokenizer_dir: str, count: int, seed: int, rate: float) -> Path:
    """The teacher set as a dataset folder the sft stage reads (parquet + manifest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from pipeline.records.manifest import write_manifest

    rows = checked_teacher_rows(AutoTokenizer.from_pretrained(tokenizer_dir), count, seed, rate)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    settings = {"tokenizer": tokenizer_dir, "count": count, "seed": seed, "error_rate": rate}
    write_manifest(folder, "toy-data", settings, [], {"rows": len(rows)})
    return folder


def corpus_lines(seed: int, count: int = 3000) -> list[str]:
    """Prompts and task v2 solutions, a quarter of their column lines wrong and repaired, for the tokenizer."""
    template, rng = load_prompt("math-r1-v1"), random.Random(seed)
    return [
        template.render(p.problem)
        + "\n"
        + checked_solution_with_errors(p.metadata["a"], p.metadata["b"], p.metadata["op"], rng, 0.25)[0]
        for p in make_problems(seed + 7, count, "train")
    ]


def main_toy_data(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    if args.teacher_set:
        write_teacher_set(out, args.teacher_set, args.teacher_examples, args.seed, args.error_rate)
        print(f"wrote {out}: {args.teacher_examples} checked worked solutions (error rate {args.error_rate})")
        return 0
    train = make_problems(args.seed, args.train, "train")
    heldout = make_problems(args.seed + 1, args.heldout, "heldout")
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", heldout)
    (out / "corpus.txt").write_text("\n".join(corpus_lines(args.seed)) + "\n")
    print(f"wrote {out}: {len(train)} train and {len(heldout)} held-out problems, a tokenizer corpus")
    return 0
