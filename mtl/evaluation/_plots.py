"""PNG plots of a run: learning curves, loss weights, and per-task evaluation on the test split."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mtl.data import SplitData  # noqa: E402
from mtl.tasks import Task  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    for ax in fig.axes:  # every plot here is by epoch: whole-number ticks
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def learning_curves(history: pd.DataFrame, tasks: dict[str, Task], out: Path, best_epoch: int | None = None) -> Path:
    """Per task: training and validation loss, and the first configured metric, by epoch; ``best_epoch`` (1-based),
    the epoch whose weights early stopping restored, is marked by a vertical line."""
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.2 * len(tasks)), squeeze=False)
    epochs = history["epoch"] + 1
    for row, (name, task) in enumerate(tasks.items()):
        logged = task.logged_metrics()
        keys = [f"{name}_loss"] + ([f"{name}_{logged[0]}"] if logged else [])
        for col, key in enumerate(keys):
            ax = axes[row][col]
            for prefix, style in (("", "-"), ("val_", "--")):
                if prefix + key in history:
                    ax.plot(epochs, history[prefix + key], style, label=f"{'val' if prefix else 'train'}")
            if best_epoch is not None:
                ax.axvline(best_epoch, color="grey", linestyle=":", label=f"restored (epoch {best_epoch})")
            ax.set_title(key)
            ax.set_xlabel("epoch")
            ax.legend()
    return _save(fig, out / "learning_curves.png")


def loss_weights(history: pd.DataFrame, tasks: dict[str, Task], out: Path) -> Path:
    """The loss weight each task had in each epoch, the learning rate, and (gradient-level weighting
    strategies) each task's gradient norm on the shared parameters."""
    norms = [name for name in tasks if f"{name}_grad_norm" in history]
    fig, axes = plt.subplots(1, 3 if norms else 2, figsize=(15 if norms else 10, 3.2))
    ax, lr = axes[0], axes[1]
    epochs = history["epoch"] + 1
    for name in tasks:
        if f"{name}_weight" in history:
            ax.plot(epochs, history[f"{name}_weight"], marker="o", label=name)
    ax.set_title("loss weight")
    ax.set_xlabel("epoch")
    ax.legend()
    if "learning_rate" in history:
        lr.plot(epochs, history["learning_rate"], marker="o")
    lr.set_title("learning rate")
    lr.set_xlabel("epoch")
    if norms:
        for name in norms:
            axes[2].plot(epochs, history[f"{name}_grad_norm"], marker="o", label=name)
        axes[2].set_title("task gradient norm (shared parameters)")
        axes[2].set_xlabel("epoch")
        axes[2].legend()
    return _save(fig, out / "loss_weights.png")


def task_plots(tasks: dict[str, Task], split: SplitData, predictions: dict[str, np.ndarray], out: Path) -> list[Path]:
    """Each task type's plot of the labelled rows of ``split`` (ROC, predicted vs true, confusion matrix, ...)."""
    paths = []
    for name, task in tasks.items():
        rows = split.labelled(name)
        if rows.any():
            path = task.plot(split.labels[name][rows], np.asarray(predictions[name])[rows], out)
            if path is not None:
                paths.append(path)
    return paths
