"""Loss curves of one or several runs as a PNG (matplotlib is an optional extra, imported here only)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tinygpt.config import SettingText
from tinygpt.files import atomic_path
from tinygpt.training.run import read_metrics

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased like TensorBoard's: smooth([1, 3], 0.5) == [1.0, 2.333...]."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i) if weight > 0 else v)
    return out


def plot_runs(runs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
              title: str | None = None, smoothing: float = 0.9) -> Path:
    """Train loss (smoothed line) and validation loss (line with markers) of each run against the step."""
    out = Path(out)
    if out.is_dir():  # checked before any work
        raise IsADirectoryError(21, "is a directory, not a file", str(out))
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(SettingText(f"`out` {out}: give an image file name ending in {', '.join(IMAGE_SUFFIXES)}",
                                     "out"))
    try:  # the plot extra, imported where it is used
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'tinygpt[plot]'") from None
    labels = list(labels) if labels else [Path(r).name for r in runs]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(runs, labels)):
        lines = read_metrics(run)
        color = colors[i % len(colors)]
        steps = [ln for ln in lines if ln["step"] > 0 and "train_loss" in ln]
        if steps:
            ax.plot([ln["step"] for ln in steps], smooth([ln["train_loss"] for ln in steps], smoothing),
                    color=color, alpha=0.45, linewidth=1.2, label=f"{label} train (smoothed)")
        evals = [ln for ln in lines if "val_loss" in ln]
        if evals:
            ax.plot([ln["step"] for ln in evals], [ln["val_loss"] for ln in evals], "o-", color=color,
                    markersize=3.5, linewidth=1.8, label=f"{label} val (best {min(e['val_loss'] for e in evals):.3f})")
    ax.set_xlabel("step (optimizer updates)")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(title or "Training and validation loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out
