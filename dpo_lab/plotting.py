"""Plots used by more than one notebook."""

from __future__ import annotations

import matplotlib.pyplot as plt

# (panel title, y-axis label with its unit, the history's columns drawn in it)
CURVES = [
    ("loss", "loss (nats a pair)", ["loss"]),
    ("implicit rewards", "β log π/π_ref (nats)", ["rewards/chosen", "rewards/rejected"]),
    ("reward margin", "chosen − rejected (nats)", ["rewards/margins"]),
    ("reward accuracy", "share of pairs", ["rewards/accuracies"]),
    ("policy log-probs", "log π(y | x) (nats)", ["logps/chosen", "logps/rejected"]),
]


def smooth(values, window: int):
    """Trailing moving average (window 1 returns the values unchanged)."""
    import pandas as pd

    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def plot_training_curves(metrics, title: str = "", window: int = 5, axes=None):
    """The five panels the field watches during DPO, from a ``train_dpo`` DataFrame.

    Curves are smoothed with a trailing moving average of ``window`` steps; the raw
    values are drawn faintly behind.
    """
    panels = [(name, ylabel, [c for c in cols if c in metrics]) for name, ylabel, cols in CURVES]
    panels = [(name, ylabel, cols) for name, ylabel, cols in panels if cols]
    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), dpi=80)
    else:
        fig = axes[0].figure
    steps = metrics["step"] if "step" in metrics else range(len(metrics))
    for ax, (name, ylabel, cols) in zip(axes, panels):
        for col in cols:
            line, = ax.plot(steps, smooth(metrics[col], window), label=col.split("/")[-1])
            ax.plot(steps, metrics[col], color=line.get_color(), alpha=0.2, linewidth=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel, fontsize=8)
        if len(cols) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
