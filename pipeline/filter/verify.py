"""`distill verify`: grade every record of a JSONL file and write each one back with its verdict.

    distill verify samples.jsonl -o graded.jsonl [--kind math] [--completion-field completion]
                   [--answer-field answer] [--workers N] [--timeout 5]
    python -m pipeline.filter.verify samples.jsonl -o graded.jsonl        # the same, without the console script

Each output line is the input record with every field kept, plus `correct` (true / false / null = cannot
tell), `extracted_answer` and `verdict_reason`, in input order. What is graded is the text after `</think>`,
the whole completion when there is no think block (plain chain-of-thought), and nothing when the think block
never closes (wrong: no final answer). Bad input (a line that is not a JSON object, a missing or mistyped
field) is an error naming file, line and field, exit code 2, and no output file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.filter.verdict import Verdict
from pipeline.records.read import read_jsonl
from pipeline.records.schema import RecordError
from pipeline.records.write import write_jsonl
from pipeline.sandbox.box import SandboxUnavailable
from pipeline.sandbox.modes import MODES

HELP = (
    "grade each record's final answer against its gold (math) or its tests (code) and write the records "
    "back with verdicts"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="JSONL file, one record per line (e.g. the samples of `generate`)")
    parser.add_argument("-o", "--output", required=True, help="JSONL file to write, replaced atomically")
    parser.add_argument("--kind", choices=sorted(GRADERS), default="math", help="what the answers are")
    parser.add_argument("--completion-field", default="completion", help="field holding the model's text")
    parser.add_argument("--answer-field", default="answer", help="field holding the gold answer (null: none)")
    parser.add_argument("--workers", type=_positive(int), help="grading processes (default: one per core)")
    parser.add_argument("--timeout", type=_positive(float), default=5.0, help="seconds to grade one record")
    parser.add_argument(
        "--sandbox-mode",
        choices=["auto", *MODES],
        default="auto",
        help="code: how programs are confined (default: the strongest this machine allows)",
    )


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def main_verify(args: argparse.Namespace) -> int:
    """Grade `args.input` into `args.output`; 0 on success, 2 on bad input (reported on stderr)."""
    try:
        records = read_records(Path(args.input), args.completion_field)
        verdicts = GRADERS[args.kind](records, args)  # checks its own fields before grading anything
    except (
        RecordError,
        SandboxUnavailable,
    ) as e:  # a sandbox failing mid-run (SandboxError) is no user's mistake
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = (with_verdict(r.row, verdict, args.kind) for r, verdict in zip(records, verdicts, strict=True))
    write_jsonl(args.output, rows)
    counts = Counter({True: "correct", False: "wrong", None: "cannot tell"}[v.correct] for v in verdicts)
    print(
        f"verify: {len(records)} records: {counts['correct']} correct, {counts['wrong']} wrong, "
        f"{counts['cannot tell']} cannot tell -> {args.output}",
        file=sys.stderr,
    )
    return 0


@dataclass(frozen=True)
class Record:
    where: str
    """`file:line`, for error messages."""
    row: dict[str, Any]
    completion: str


def read_records(path: Path, completion_field: str) -> list[Record]:
    """Every record of the file with its completion; a bad line or field is an error before anything is graded."""
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    records = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        records.append(Record(where, row, _string_field(row, completion_field, where, nullable=False)))
    return records


def _string_field(row: dict[str, Any], name: str, where: str, nullable: bool) -> str | None:
    if name not in row:
        raise RecordError(f"{where}: field '{name}' is missing")
    value = row[name]
    if value is None and nullable:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and nullable:
        return str(value)  # golds such as AMC's 27.0 come as JSON numbers
    if not isinstance(value, str):
        raise RecordError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _grade_math(records: list[Record], args: argparse.Namespace) -> list[Any]:
    from pipeline.filter.math_pool import grade_many
    from pipeline.filter.parse import gradable_text

    golds = [_string_field(r.row, args.answer_field, r.where, nullable=True) for r in records]
    items = [(gradable_text(r.completion), gold) for r, gold in zip(records, golds, strict=True)]
    return grade_many(items, workers=args.workers, timeout=args.timeout)


def _grade_code(records: list[Record], args: argparse.Namespace) -> list[Any]:
    """Each record's code answer against its own `tests` (raw HumanEval / MBPP / stdio records accepted)."""
    from pipeline.filter.code_grader import grade_code_many
    from pipeline.filter.parse import gradable_text
    from pipeline.records.code_tests import normalize_tests
    from pipeline.sandbox.box import Sandbox

    sandbox = Sandbox(mode=args.sandbox_mode)
    sandbox.resolved_mode()  # before any grading: no sandbox, one clear error
    tests = []
    for r in records:
        raw = r.row.get("tests", r.row)
        try:
            tests.append(normalize_tests(raw) if raw is not None else None)
        except (ValueError, TypeError, KeyError) as e:
            raise RecordError(f"{r.where}: field 'tests': {e}") from None
    items = [(gradable_text(r.completion), t) for r, t in zip(records, tests, strict=True)]
    return grade_code_many(items, timeout=args.timeout, workers=args.workers, sandbox=sandbox)


def with_verdict(row: dict[str, Any], verdict: Verdict, kind: str) -> dict[str, Any]:
    """The row with its verdict; code verdicts also name the sandbox mode the code ran in."""
    graded = {"correct": verdict.correct, "extracted_answer": verdict.extracted_answer}
    graded["verdict_reason"] = verdict.reason
    if kind == "code":
        graded["sandbox"] = verdict.sandbox
    return {**row, **graded}


# --kind -> grader: (records, args) -> one verdict (correct, extracted_answer, reason) per record, in order.
GRADERS = {"math": _grade_math, "code": _grade_code}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distill verify", description=HELP)
    add_arguments(parser)
    return main_verify(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
