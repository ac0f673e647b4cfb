"""The demo's picture: each student's held-out accuracy over its training steps, with the teacher for scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curve(curve: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for stage, color in (("sft", "tab:blue"), ("kd", "tab:orange")):
        points = sorted(
            (int(m["label"].rsplit("-", 1)[1]), m["metrics"]["toy"]["pass@1"])
            for m in curve["models"]
            if m["label"].startswith(f"{stage}-step-")
        )
        if points:
            ax.plot(
                [0] + [p[0] for p in points],
                [summary["student_base_accuracy"]] + [p[1] for p in points],
                marker="o",
                color=color,
                label=f"student, {stage.upper()}",
            )
    ax.axhline(summary["teacher_accuracy"], color="gray", linestyle="--", label="teacher")
    ax.set(
        xlabel="training step",
        ylabel="held-out accuracy (pass@1)",
        ylim=(0, 1.02),
        title="Distilling the toy teacher into a smaller student",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
