"""Configuration of the filter stage (`distill filter --config recipes/filter/<name>.yaml`).

`steps` is an ordered list; each entry names a step and sets its options, checked against that step's
`Options` dataclass with the same strictness as the rest of the recipe (unknown option, wrong type: an error
naming the file and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.config import ConfigError, Source, from_dict
from pipeline.filter.dedup import Decontaminate, Dedup
from pipeline.filter.selection import Select
from pipeline.filter.steps import Finished, Format, Language, Length, Parse, Repetition, Step
from pipeline.filter.verification import Code, Math

STEPS: dict[str, type[Step]] = {
    s.name: s
    for s in (Parse, Finished, Math, Code, Language, Format, Repetition, Length, Dedup, Decontaminate, Select)
}


@dataclass(frozen=True)
class FilterConfig:
    input: str
    """Sample files: a generate output folder (shard folders included) or a .jsonl file."""
    output: str = "runs/filter"
    steps: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "parse"},
            {"name": "finished"},
            {"name": "math"},
            {"name": "language"},
            {"name": "format"},
            {"name": "repetition"},
            {"name": "dedup"},
        ]
    )
    tokenizer: str | None = None
    """Counts reasoning/answer tokens (length step, report); default: the samples' teacher."""
    count_tokens: bool = True
    """False: no tokenizer is loaded (the report then uses the samples' completion token counts only)."""

    workers: int | None = None
    """Processes for verification (default: one per core)."""
    rows_per_shard: int = 50_000
    """Rows per parquet file of the output dataset."""
    batch_size: int = 1000
    """Samples held in memory at once as they stream through the steps (R1-size traces: ~30 MB a 1,000)."""
    logprobs: bool = True
    """Copy the teacher's top-k logprobs into the dataset when the input has a sidecar (for kd)."""

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("'steps' needs at least one step")
        if self.batch_size < 1 or self.rows_per_shard < 1:
            raise ValueError("'batch_size' and 'rows_per_shard' must be >= 1")
        if not self.count_tokens and any(s.get("name") == "length" for s in self.steps):
            raise ValueError("the length step needs token counts: set count_tokens: true")

    def check(self, source: Source) -> None:
        self.build_steps(source)

    def build_steps(self, source: Source | str = "the recipe") -> list[Step]:
        """One configured step object per entry; unknown names and options are errors naming the line."""
        steps = []
        for i, spec in enumerate(self.steps):
            where = source.where(f"steps[{i}]") if isinstance(source, Source) else source
            name = spec.get("name")
            if name not in STEPS:
                raise ConfigError(
                    f"{where}: 'steps[{i}].name' must be one of {', '.join(STEPS)}, got {name!r}"
                )
            options = {k: v for k, v in spec.items() if k != "name"}
            steps.append(STEPS[name](from_dict(STEPS[name].Options, options, source, f"steps[{i}].")))
            if isinstance(steps[-1], Select) and steps[-1].needs_grading():
                block = source.where_block(f"steps[{i}].") if isinstance(source, Source) else source
                require_grading_before(steps[:-1], i, block)
        return steps


def require_grading_before(earlier: list[Step], i: int, where: str) -> None:
    """A pass-rate window over problems nobody graded would silently keep everything."""
    if not any(isinstance(s, Math | Code) for s in earlier):
        raise ConfigError(
            f"{where}: field 'steps[{i}]': select's min_pass_rate / max_pass_rate need a grading step (math or "
            "code) before it, or every problem passes unchecked; add one earlier in 'steps', or drop the window",
            key=f"steps[{i}]",
        )
