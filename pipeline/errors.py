"""The error users can fix: bad input or an unmet precondition, told in one line instead of a traceback.

    raise UserError("not valid UTF-8 (byte 0xff at column 3)", file="problems.jsonl", line=4,
                    hint="save the file as UTF-8")

renders as `problems.jsonl:4: not valid UTF-8 (byte 0xff at column 3); save the file as UTF-8`, and with
`field=` as `FILE[:LINE]: field 'X': what is wrong; what to do`. `distill` (pipeline.cli.main) prints any
UserError as `error: <that line>` and exits 2, before anything is published. Any other exception is a bug and
keeps its traceback. ConfigError (recipes) and RecordError (records) are UserErrors.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Something the user can fix; the message says where (file, line, field), what is wrong and what to do."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message, self.file, self.line, self.field, self.hint = message, file, line, field, hint
        super().__init__(render(message, file, line, field, hint))


def render(
    message: str, file: str | Path | None, line: int | None, field: str | None, hint: str | None
) -> str:
    """`FILE[:LINE]: field 'X': message; hint`, each part only when known."""
    where = f"{file}:{line}" if file is not None and line is not None else (str(file) if file else "")
    parts = [p for p in (where, f"field '{field}'" if field else "") if p]
    text = ": ".join([*parts, message])
    return f"{text}; {hint}" if hint else text
