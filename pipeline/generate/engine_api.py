"""What every engine takes and returns: Requests in, Completions out as they finish (in any order)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.errors import UserError
from pipeline.generate.config import GenerateConfig
from pipeline.records.logprobs import TopK


@dataclass
class Request:
    """One sample to generate (or, in score mode, to score)."""

    sample_id: str
    messages: list[dict[str, str]]
    seed: int
    max_tokens: int
    prompt_ids: list[int] = field(default_factory=list)
    """The templated prompt, forced prefix included (vllm / transformers)."""
    prefix: str = ""
    """Forced start of the assistant turn (`<think>\\n`), counted as part of the completion."""
    prefix_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    """Score mode: the completion to score, appended to `prompt_ids`."""
    work: Any = field(default=None, repr=False, compare=False)
    """What the caller made the request from (generate: its planned sample), handed back with the completion."""


@dataclass
class Completion:
    request: Request
    text: str
    """The whole assistant text: forced prefix + generated text (EOS token text removed)."""
    finish_reason: str
    num_prompt_tokens: int
    num_completion_tokens: int
    topk: TopK | None = None


class Engine(Protocol):
    def run(self, cfg: GenerateConfig, requests: Iterable[Request]) -> Iterator[Completion]:
        """Completions in the order they finish; sampling and logprobs settings come from `cfg`."""
        ...

    def close(self) -> None: ...


def engine_died(what: str, cause: BaseException) -> UserError:
    """The one line for an engine that died mid-run (killed, out of memory): what is kept and how to go on."""
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    return UserError(
        f"{what} died mid-run ({type(cause).__name__}: {reason}); every sample committed so far is kept",
        hint="rerun the same command to resume (the log above says why it died, e.g. out of memory)",
    )
