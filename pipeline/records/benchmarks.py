"""Benchmarks by name, with their field mappings built in: for decontamination (filter) and scoring (eval).

    problems = load_benchmark("math500")                          # from the Hub
    problems = load_benchmark("math500", "data/math500.jsonl")   # from a local copy (tests, offline machines)

Each benchmark becomes a list of Problems: `problem` (the text a model is shown), `answer` (the gold, for math
and multiple choice) or `tests` (normalised code tests, see pipeline/filter/code_grader.py), `source` = name.
Local files are read with the same mapping as the Hub rows, so a local copy of the Hub dataset (or of the
benchmark's original release, which uses the same fields) works either way.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.records.code_tests import normalize_tests
from pipeline.records.read import read_rows
from pipeline.records.schema import DataSource, Problem, RecordError

Kind = Literal["math", "code", "choice"]


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub: str | None
    """None: a benchmark of this project's own, read from `local` (the toy task's held-out split)."""
    config: str | None
    split: str
    kind: Kind
    convert: Callable[[dict[str, Any], int], Problem]
    gated: bool = False
    local: str | None = None


def _text(row: dict[str, Any], *names: str) -> str:
    for name in names:
        if isinstance(row.get(name), str) and row[name].strip():
            return row[name]
    raise KeyError(f"none of the fields {', '.join(names)}")


def _answer(value: Any) -> str:
    """Golds as strings; AMC's 27.0 is the integer 27."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _math(name: str, id_field: str | None = None) -> Callable[[dict[str, Any], int], Problem]:
    def convert(row: dict[str, Any], i: int) -> Problem:
        pid = f"{name}/{row[id_field]}" if id_field and row.get(id_field) is not None else f"{name}/{i}"
        return Problem(pid, _text(row, "problem", "question", "Question"), _answer(row["answer"]), name)

    return convert


def _gsm8k(row: dict[str, Any], i: int) -> Problem:
    gold = row["answer"].split("####")[-1].strip().replace(",", "")  # the worked solution ends "#### 18"
    return Problem(f"gsm8k/{i}", row["question"], gold, "gsm8k")


def _gpqa(row: dict[str, Any], i: int) -> Problem:
    """Four options in a fixed shuffled order per question (seeded by its text); the gold is the letter."""
    options = [
        row["Correct Answer"],
        row["Incorrect Answer 1"],
        row["Incorrect Answer 2"],
        row["Incorrect Answer 3"],
    ]
    order = list(range(4))
    random.Random(row["Question"]).shuffle(order)
    letters = "ABCD"
    body = "\n".join(f"{letters[k]}) {options[j].strip()}" for k, j in enumerate(order))
    gold = letters[order.index(0)]
    text = f"{row['Question'].strip()}\n\n{body}\n\nAnswer with the letter of the correct option."
    return Problem(f"gpqa-diamond/{i}", text, gold, "gpqa-diamond")


def _toy(row: dict[str, Any], i: int) -> Problem:
    """The toy task's held-out split (pipeline/toy), as written by `distill toy-data`."""
    return Problem(
        row["id"],
        row["problem"],
        _answer(row["answer"]),
        row.get("source") or "toy",
        metadata=row.get("metadata") or {},
    )


def _humaneval(row: dict[str, Any], i: int) -> Problem:

    text = f"Complete the following Python function.\n\n```python\n{row['prompt']}```"
    return Problem(row["task_id"], text, None, "humaneval", normalize_tests(row))


def _mbpp(row: dict[str, Any], i: int) -> Problem:
    tests = "\n".join(row["test_list"])
    text = f"{row['text']}\nYour code should pass these tests:\n\n```python\n{tests}\n```"
    return Problem(f"mbpp/{row['task_id']}", text, None, "mbpp", normalize_tests(row))


def _livecodebench(row: dict[str, Any], i: int) -> Problem:
    """Problems with stdin/stdout tests (public cases); call-based (LeetCode) ones keep no tests."""
    cases = json.loads(row["public_test_cases"]) if isinstance(row.get("public_test_cases"), str) else []
    stdio = [{"input": c["input"], "output": c["output"]} for c in cases if c.get("testtype") == "stdin"]
    tests = {"kind": "stdio", "cases": stdio} if stdio and len(stdio) == len(cases) else None
    return Problem(
        f"livecodebench/{row.get('question_id', i)}", row["question_content"], None, "livecodebench", tests
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("math500", "HuggingFaceH4/MATH-500", None, "test", "math", _math("math500", "unique_id")),
        Benchmark("aime24", "HuggingFaceH4/aime_2024", None, "train", "math", _math("aime24", "id")),
        Benchmark("aime25", "yentinglin/aime_2025", None, "train", "math", _math("aime25", "id")),
        Benchmark("amc23", "math-ai/amc23", None, "test", "math", _math("amc23", "id")),
        Benchmark("gsm8k", "openai/gsm8k", "main", "test", "math", _gsm8k),
        Benchmark("gpqa-diamond", "Idavidrein/gpqa", "gpqa_diamond", "train", "choice", _gpqa, gated=True),
        Benchmark("humaneval", "openai/openai_humaneval", None, "test", "code", _humaneval),
        Benchmark("mbpp", "google-research-datasets/mbpp", "full", "test", "code", _mbpp),
        Benchmark(
            "livecodebench",
            "livecodebench/code_generation_lite",
            "release_v5",
            "test",
            "code",
            _livecodebench,
        ),
        Benchmark(
            "toy",
            None,
            None,
            "heldout",
            "math",
            _toy,
            local=str(Path(__file__).resolve().parents[2] / "data" / "toy" / "heldout.jsonl"),
        ),
    ]
}


def load_benchmark(
    name: str, path: str | None = None, fields: dict[str, str] | None = None, limit: int | None = None
) -> list[Problem]:
    """A benchmark's problems, from the Hub or from `path` (a local .jsonl / .parquet copy); `fields` renames a
    copy's columns to the benchmark's own, `limit` reads only the first problems (the Hub's streamed)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark '{name}'; known: {', '.join(BENCHMARKS)}")
    b = BENCHMARKS[name]
    path = path or b.local
    where = {"path": path} if path else {"hub": b.hub, "config": b.config, "split": b.split}
    source = DataSource(**where, fields=fields or {}, limit=limit)
    gated = not path and b.gated
    source_note = " (gated on the Hub: accept its terms and log in, or pass a local file)" if gated else ""

    problems = []
    try:
        for i, (where, row) in enumerate(read_rows(source)):
            try:
                problems.append(b.convert(row, i))
            except (KeyError, TypeError, ValueError) as e:
                raise RecordError(f"{where}: not a {name} record: {e}") from None
    except (OSError, ConnectionError) as e:
        raise RecordError(
            f"cannot load benchmark {name} from {source.describe()}{source_note}: {e}"
        ) from None
    return problems


_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens, the unit of n-gram overlap (open-r1's decontamination uses the same)."""
    return _WORD.findall(text.lower())


def local_path(name: str, folder: str | Path) -> str | None:
    """`folder/<name>.jsonl` (or gsm8k_test.jsonl-style variants), if present."""
    folder = Path(folder)
    for candidate in (f"{name}.jsonl", f"{name}_test.jsonl", f"{name}.parquet"):
        if (folder / candidate).is_file():
            return str(folder / candidate)
    return None
