"""The filter report: what was kept and dropped, by which step and why, as JSON and as one picture.

report.json holds counts per step and reason, verdict counts, pass rates (per problem, per source, and their
distribution) and token-length statistics of kept and dropped samples, from a `Tally` the stage fills as the
samples stream by (counters and token counts, 8 bytes a sample); report.png shows the reasoning-length
histograms (kept vs dropped), the drops by reason, and the pass-rate distribution.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.filter.steps import Context, Item


class Lengths:
    """Token counts of a group of samples (kept or dropped), as compact arrays: 8 bytes a count."""

    def __init__(self) -> None:
        self.reasoning, self.answer, self.completion = array("q"), array("q"), array("q")

    def add(self, item: Item) -> None:
        if item.reasoning_tokens is not None:
            self.reasoning.append(item.reasoning_tokens)
        if item.answer_tokens is not None:
            self.answer.append(item.answer_tokens)
        self.completion.append(item.sample.num_completion_tokens)

    def stats(self) -> dict[str, Any]:
        return {name: length_stats(getattr(self, name)) for name in ("reasoning", "answer", "completion")}


class Tally:
    """What the report needs of every sample, gathered as the samples stream by (never the samples)."""

    def __init__(self) -> None:
        self.input = 0
        self.kept, self.dropped = Lengths(), Lengths()
        self.sources: Counter = Counter()
        """Kept samples per source, in order of first appearance."""
        self.source_of: dict[str, str] = {}
        """Per problem, its source (for pass rates per source)."""

    def read(self, item: Item) -> None:
        self.input += 1
        source = item.sample.source or "unknown"
        self.source_of[item.sample.problem_id] = sys.intern(source)  # one string per source, not per problem

    def settle(self, item: Item, kept: bool) -> None:
        (self.kept if kept else self.dropped).add(item)
        if kept:
            self.sources[item.sample.source or "unknown"] += 1


def length_stats(values: Sequence[int]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values)
    return {
        "count": int(a.size),
        "mean": round(float(a.mean()), 1),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "max": int(a.max()),
        "min": int(a.min()),
    }


def pass_rates(context: Context, source_of: dict[str, str]) -> dict[str, Any]:
    graded = {pid: context.graded(pid) for pid in context.problems()}
    per_problem = {pid: round(c / n, 4) for pid, (c, n) in graded.items() if n}
    if not per_problem:
        return {"graded_problems": 0}
    by_source: dict[str, list[float]] = defaultdict(list)
    for pid, rate in per_problem.items():
        by_source[source_of.get(pid, "unknown")].append(rate)
    rates = np.asarray(list(per_problem.values()))
    return {
        "graded_problems": len(per_problem),
        "mean": round(float(rates.mean()), 4),
        "solved_by_none": int((rates == 0).sum()),
        "solved_by_all": int((rates == 1).sum()),
        "per_source": {s: round(float(np.mean(r)), 4) for s, r in sorted(by_source.items())},
        "histogram": np.histogram(rates, bins=10, range=(0, 1))[0].tolist(),
        "per_problem": per_problem,
    }


def build_report(tally: Tally, step_log: list[dict[str, Any]], context: Context) -> dict[str, Any]:
    verdicts: Counter = Counter()
    for counts in context.verdicts.values():
        verdicts.update(counts)
    # per step, reasons in order of first drop: the order a Counter over every drop, step after step, has
    by_reason = Counter({f"{s['step']}/{reason}": n for s in step_log for reason, n in s["reasons"].items()})
    kept = len(tally.kept.completion)
    return {
        "input": tally.input,
        "kept": kept,
        "rejected": tally.input - kept,
        "steps": step_log,
        "rejected_by_reason": dict(by_reason.most_common()),
        "verdicts": dict(verdicts),
        "pass_rate": pass_rates(context, tally.source_of),
        "tokens": {"kept": tally.kept.stats(), "dropped": tally.dropped.stats()},
        "sources": dict(tally.sources),
    }


def plot_report(report: dict[str, Any], tally: Tally, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.5))
    _plot_lengths(a, tally)
    _plot_drops(b, report)
    _plot_pass_rates(c, report["pass_rate"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_lengths(ax: Any, tally: Tally) -> None:
    """Stacked histogram of trace lengths, kept vs dropped."""
    # Reasoning tokens when a tokenizer counted them, else the completion tokens generate recorded
    counted = bool(tally.kept.reasoning or tally.dropped.reasoning)
    what = "reasoning tokens" if counted else "completion tokens"
    kept = (tally.kept.reasoning if counted else tally.kept.completion).tolist()
    dropped = (tally.dropped.reasoning if counted else tally.dropped.completion).tolist()
    bins = np.histogram_bin_edges(kept + dropped or [0], bins=30)

    ax.hist(
        [kept, dropped],
        bins=bins,
        label=[f"kept ({len(kept)})", f"dropped ({len(dropped)})"],
        color=["tab:green", "tab:red"],
        stacked=True,
    )
    ax.set(title="Trace length, kept vs dropped", xlabel=what, ylabel="samples")
    ax.legend()


def _plot_drops(ax: Any, report: dict[str, Any]) -> None:
    """Horizontal bars of the drops per step/reason."""
    reasons = report["rejected_by_reason"]
    ax.barh(list(reasons)[::-1] or ["(none)"], list(reasons.values())[::-1] or [0], color="tab:red")
    ax.set(title=f"Dropped: {report['rejected']} of {report['input']}", xlabel="samples")


def _plot_pass_rates(ax: Any, rates: dict[str, Any]) -> None:
    """The teacher's per-problem pass-rate distribution, or a note that nothing was verified."""
    if rates.get("graded_problems"):
        ax.bar(np.arange(10) / 10 + 0.05, rates["histogram"], width=0.09, color="tab:blue")
        ax.set(
            title=f"Teacher pass rate per problem (mean {rates['mean']:.2f})",
            xlabel="pass rate",
            ylabel="problems",
            xlim=(0, 1),
        )
    else:
        ax.text(0.5, 0.5, "no verification step", ha="center", va="center")
        ax.set(title="Teacher pass rate per problem")
