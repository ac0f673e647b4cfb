"""The `tests` field of a code Problem / Sample, normalised: HumanEval, MBPP, APPS-style stdio or a list of cases
become one of three kinds (`humaneval`, `asserts`, `stdio`) that the code grader runs. Benchmarks, the filter,
`distill verify` and eval all read tests through `normalize_tests`.
"""

from __future__ import annotations

import json
from typing import Any


def normalize_tests(record: dict[str, Any] | list[dict[str, str]]) -> dict[str, Any]:
    """The normalised `tests` of a raw record: HumanEval (`test`, `entry_point`, `prompt`), MBPP (`test_list`,
    `test_setup_code`), APPS-style stdio (`input_output`: JSON of `inputs` and `outputs`), a list of
    {"input", "output"} cases, or a record already normalised (`kind`)."""
    if isinstance(record, list):
        return check_tests({"kind": "stdio", "cases": record})
    if "kind" in record:
        return check_tests(record)
    if "entry_point" in record and "test" in record:
        tests = {
            "test": record["test"],
            "entry_point": record["entry_point"],
            "prelude": record.get("prompt", ""),
        }
        return check_tests({"kind": "humaneval", **tests})
    if "test_list" in record:
        setup = record.get("test_setup_code") or ""
        return check_tests({"kind": "asserts", "asserts": list(record["test_list"]), "setup": setup})
    if "input_output" in record:
        io = record["input_output"]
        io = json.loads(io) if isinstance(io, str) else io
        if io.get("fn_name"):
            raise ValueError("call-based tests (`fn_name`) are not supported; only stdin/stdout cases")
        cases = [
            {"input": _text(i), "output": _text(o)} for i, o in zip(io["inputs"], io["outputs"], strict=True)
        ]
        return check_tests({"kind": "stdio", "cases": cases})
    raise ValueError(f"unrecognised tests record with keys {sorted(record)}")


def _text(value: Any) -> str:
    """APPS stores some inputs and outputs as lists of lines."""
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


_FIELDS = {
    "humaneval": {"test": str, "entry_point": str},
    "asserts": {"asserts": list},
    "stdio": {"cases": list},
}


def check_tests(tests: dict[str, Any]) -> dict[str, Any]:
    """`tests` itself when it is a well-formed normalised record, else ValueError naming the field."""
    kind = tests.get("kind")
    if kind not in _FIELDS:
        raise ValueError(f"tests: field 'kind' must be one of {sorted(_FIELDS)}, got {kind!r}")
    optional = {"prelude": "", "setup": ""}
    for name, expected in {**_FIELDS[kind], "prelude": str, "setup": str}.items():
        if not isinstance(tests.get(name, optional.get(name)), expected):
            raise ValueError(f"tests ({kind}): field '{name}' must be a {expected.__name__}")
    if kind == "asserts" and not all(isinstance(line, str) for line in tests["asserts"]):
        raise ValueError("tests (asserts): field 'asserts' must be a list of strings")
    if kind == "stdio" and not all(_is_case(case) for case in tests["cases"]):
        raise ValueError('tests (stdio): each of field \'cases\' must be {"input": str, "output": str}')
    return tests


def _is_case(case: Any) -> bool:
    return (
        isinstance(case, dict) and isinstance(case.get("input"), str) and isinstance(case.get("output"), str)
    )
