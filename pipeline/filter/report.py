"""The filter report: what was kept and dropped, by which step and why, as JSON and as one picture.

report.json holds counts per step and reason, verdict counts, pass rates (per problem, per source, and their
distribution) and token-length statistics of kept and dropped samples; report.png shows the reasoning-length
histograms (kept vs dropped), the drops by reason, and the pass-rate distribution.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.filter.steps import Context, Item


def length_stats(values: list[int]) -> dict[str, float] | None:
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


def pass_rates(context: Context, items: list[Item]) -> dict[str, Any]:
    graded = {pid: context.graded(pid) for pid in context.problems()}
    per_problem = {pid: round(c / n, 4) for pid, (c, n) in graded.items() if n}
    if not per_problem:
        return {"graded_problems": 0}
    source_of = {it.sample.problem_id: it.sample.source or "unknown" for it in items}
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


def build_report(
    items: list[Item], fate: dict[int, tuple[str, Any]], step_log: list[dict[str, Any]], context: Context
) -> dict[str, Any]:
    kept = [it for i, it in enumerate(items) if i not in fate]
    dropped = [it for i, it in enumerate(items) if i in fate]
    verdicts: Counter = Counter()
    for counts in context.verdicts.values():
        verdicts.update(counts)

    def tokens(group: list[Item]) -> dict[str, Any]:
        return {
            "reasoning": length_stats(
                [it.reasoning_tokens for it in group if it.reasoning_tokens is not None]
            ),
            "answer": length_stats([it.answer_tokens for it in group if it.answer_tokens is not None]),
            "completion": length_stats([it.sample.num_completion_tokens for it in group]),
        }

    return {
        "input": len(items),
        "kept": len(kept),
        "rejected": len(dropped),
        "steps": step_log,
        "rejected_by_reason": dict(
            Counter(f"{step}/{drop.reason}" for step, drop in fate.values()).most_common()
        ),
        "verdicts": dict(verdicts),
        "pass_rate": pass_rates(context, items),
        "tokens": {"kept": tokens(kept), "dropped": tokens(dropped)},
        "sources": dict(Counter(it.sample.source or "unknown" for it in kept)),
    }


def plot_report(report: dict[str, Any], items: list[Item], fate: dict[int, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.5))
    _plot_lengths(a, items, fate)
    _plot_drops(b, report)
    _plot_pass_rates(c, report["pass_rate"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_lengths(ax: Any, items: list[Item], fate: dict[int, Any]) -> None:
    """Stacked histogram of trace lengths, kept vs dropped."""
    # Reasoning tokens when a tokenizer counted them, else the completion tokens generate recorded
    counted = any(it.reasoning_tokens is not None for it in items)
    what = "reasoning tokens" if counted else "completion tokens"

    def length(it: Item) -> int | None:
        return it.reasoning_tokens if counted else it.sample.num_completion_tokens

    kept = [length(it) for i, it in enumerate(items) if i not in fate and length(it) is not None]
    dropped = [length(it) for i, it in enumerate(items) if i in fate and length(it) is not None]
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
