"""The demo's picture: each student's held-out accuracy against training steps, teacher tokens and wall-clock,
with the teacher for scale. OPD starts from an SFT checkpoint, so its curve continues SFT's from that point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"sft": "tab:blue", "kd": "tab:orange", "opd": "tab:green"}
AXES = (
    ("step", "training step"),
    ("tokens", "teacher tokens (SFT/KD: generated, OPD: scored)"),
    ("seconds", "training seconds"),
)


def curve_points(curve: dict[str, Any], summary: dict[str, Any], stage: str) -> list[dict[str, float]]:
    """(step, tokens, seconds, accuracy) of each checkpoint of `stage`, from the start of its training."""
    costs, start = summary["costs"], summary.get("opd_start_step", 0)
    steps = sorted(
        (int(m["label"].rsplit("-", 1)[1]), m["metrics"]["toy"]["pass@1"])
        for m in curve["models"]
        if m["label"].startswith(f"{stage}-step-")
    )
    own = costs["sft"] if stage == "opd" else costs[stage]
    cap = own.get("tokens_cap") or float("inf")  # SFT / KD: later epochs re-read traces already generated
    base = (
        (start, min(start * own["tokens_per_step"], cap), start * own["seconds_per_step"])
        if stage == "opd"
        else (0, 0, 0)
    )
    first = {"step": base[0], "tokens": base[1], "seconds": base[2]}
    first["accuracy"] = (
        summary["accuracy_over_training"].get(f"sft-step-{start}", summary["student_base_accuracy"])
        if stage == "opd"
        else summary["student_base_accuracy"]
    )
    rate = costs[stage]
    points = [first]
    for step, acc in steps:
        done = step - base[0]
        points.append(
            {
                "step": step,
                "tokens": base[1] + done * rate["tokens_per_step"]
                if stage == "opd"
                else min(done * rate["tokens_per_step"], cap),
                "seconds": base[2] + done * rate["seconds_per_step"],
                "accuracy": acc,
            }
        )
    return points


def recovery_bars(ax: Any, recovery: dict[str, dict[str, float | None]]) -> None:
    """Per model: recovery R (an error forced into its working, fixed) beside its first-pass column error rate."""
    labels = [label for label in recovery if recovery[label].get("recovery_rate") is not None]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], [recovery[k]["recovery_rate"] for k in labels], 0.4, label="recovery R")
    errors = [recovery[k].get("first_pass_error_rate") or 0.0 for k in labels]
    ax.bar([x + 0.2 for x in xs], errors, 0.4, color="tab:red", label="first-pass column errors")
    ax.set_xticks(list(xs), [k.replace("student-", "") for k in labels], rotation=30)
    ax.set(xlabel="model (final)", ylim=(0, 1.02))
    ax.legend(loc="upper right")


def plot_curve(curve: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4), sharey=True)
    for ax, (key, label) in zip(axes, AXES, strict=False):
        for stage, color in COLORS.items():
            if stage not in summary.get("costs", {}):
                continue
            points = curve_points(curve, summary, stage)
            if len(points) > 1:
                xs, ys = [p[key] for p in points], [p["accuracy"] for p in points]
                ax.plot(xs, ys, marker="o", color=color, label=f"student, {stage.upper()}")
        ax.axhline(summary["teacher_accuracy"], color="gray", linestyle="--", label="teacher")
        ax.set(xlabel=label, ylim=(0, 1.02))
    axes[0].set_ylabel("held-out accuracy (pass@1)")
    axes[0].legend(loc="lower right")
    recovery_bars(axes[3], summary.get("recovery") or {})
    fig.suptitle("Distilling the toy teacher into a smaller student: SFT, KD and on-policy distillation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
