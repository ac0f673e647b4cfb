"""Training progress that reads well in a log file: one line per logging step instead of tqdm's bar.

    attach_progress(trainer, "sft")     # before trainer.train(); sft, kd and opd alike

On a terminal TRL's own tqdm bar stays. When stderr is not a terminal (`distill sft ... > train.log 2>&1`, `| tee`,
the demo's side-by-side runs), a bar is carriage-return spam, so the bar and the trainer's raw dict printer are
replaced by lines like

    12:03:41 INFO pipeline.train.progress: step 120/4000 (3%) loss 0.9226 lr 3.0e-03 2,480 tok/s ETA 6m12s
    12:03:41 INFO pipeline.train.metrics: {"loss": 0.9226, "grad_norm": 1.71, "learning_rate": 0.003, ...}

one pair each `trainer.logging_steps` (the second is the full dict, for the log: the demo's display hides it),
and a step/ETA line every `every_s` seconds between logging steps that are further apart. Only the main process
reports (under accelerate every process runs the callback).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from transformers import TrainerCallback

from pipeline.logs import duration

log = logging.getLogger(__name__)
metrics_log = logging.getLogger("pipeline.train.metrics")


def attach_progress(trainer: Any, stage: str, stream: IO[str] | None = None) -> None:
    """Swap the trainer's tqdm bar and dict printer for ProgressLines when `stream` (stderr) is not a terminal."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if (stream or sys.stderr).isatty():
        return
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressLines(stage))


class ProgressLines(TrainerCallback):
    """Logs `step N/TOTAL (P%) loss L lr R T tok/s ETA E` at each logging step (and every `every_s` seconds
    between them), plus the full metrics dict on its own logger."""

    def __init__(self, stage: str, every_s: float = 60.0) -> None:
        self.stage, self.every_s = stage, every_s
        self.started = self.last_line = time.monotonic()
        self.start_step = 0
        self.tokens: tuple[float, float] | None = None  # (time, cumulative tokens) at the last logging step

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = self.last_line = time.monotonic()
        self.start_step = state.global_step  # a resumed run's rate counts from where it resumed

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and time.monotonic() - self.last_line >= self.every_s:
            self._line(state, {})

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self._line(state, logs)
        metrics_log.info("%s", json.dumps({"step": state.global_step, **logs}, default=str))

    def _line(self, state: Any, logs: dict[str, Any]) -> None:
        now = time.monotonic()
        self.last_line = now
        log.info(
            "%s",
            progress_line(
                state.global_step, state.max_steps, logs, self._eta(state, now), self._rate(logs, now)
            ),
        )

    def _eta(self, state: Any, now: float) -> float | None:
        done = state.global_step - self.start_step
        if done <= 0 or not state.max_steps:
            return None
        return (now - self.started) / done * max(state.max_steps - state.global_step, 0)

    def _rate(self, logs: dict[str, Any], now: float) -> float | None:
        """Tokens per second since the previous logging step, from TRL's cumulative `num_tokens`."""
        tokens = number(logs.get("num_tokens"))
        if tokens is None:
            return None
        previous, self.tokens = self.tokens, (now, tokens)
        if previous is None or now <= previous[0]:
            return None
        return (tokens - previous[1]) / (now - previous[0])


def number(value: Any) -> float | None:
    """A logged figure as a float (some callbacks hand them on as formatted strings), else None."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def progress_line(
    step: int, total: int, logs: dict[str, Any], eta: float | None, tokens_per_s: float | None
) -> str:
    """`step 120/4000 (3%) loss 0.9226 lr 3.0e-03 2,480 tok/s ETA 6m12s`; what is unknown is left out. The
    closing line of a run (TRL's `train_loss`, `train_runtime`) reads `done: ...` instead."""
    if "train_runtime" in logs:
        mean = number(logs.get("train_loss"))
        return f"done: {step} steps in {duration(number(logs['train_runtime']) or 0)}" + (
            f", mean loss {mean:.4g}" if mean is not None else ""
        )
    parts = [f"step {step}/{total}" + (f" ({100 * step // total}%)" if total else "")]
    if (loss := number(logs.get("loss"))) is not None:
        parts.append(f"loss {loss:.4g}")
    if (lr := number(logs.get("learning_rate"))) is not None:
        parts.append(f"lr {lr:.1e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return " ".join(parts)
