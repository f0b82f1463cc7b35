"""Training curves and the confusion matrix, as PNG files (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .files import atomic_output  # noqa: E402


def save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def curves(history: dict, path: Path, title: str = "") -> None:
    """The classic pair: training loss and validation accuracy against iterations."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    train = history["train"]
    ax_loss.plot([p["iteration"] for p in train], [p["loss"] for p in train], lw=1)
    ax_loss.set(xlabel="iteration", ylabel="training loss", yscale="log", title="Training loss")
    evals = history["eval"]
    its = [p["iteration"] for p in evals]
    ax_acc.plot(its, [100 * p["val_accuracy"] for p in evals], marker=".", label="validation")
    if evals and "test_accuracy" in evals[0]:
        ax_acc.plot(its, [100 * p["test_accuracy"] for p in evals], marker=".", label="test (reporting only)")
    ax_acc.set(xlabel="iteration", ylabel="accuracy (%)", title="Accuracy")
    top = max([100 * p["val_accuracy"] for p in evals] + [0])
    ax_acc.set_ylim(max(90, top - 4), 100)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    save(fig, path)


def confusion(labels: np.ndarray, preds: np.ndarray, classes: list[str], path: Path) -> None:
    k = len(classes)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (labels, preds), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    # Log colour scale: the diagonal would otherwise hide every error.
    im = ax.imshow(matrix + 1, cmap="Blues", norm=matplotlib.colors.LogNorm())
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")
    ax.set_xticks(range(k), classes, rotation=45 if len(classes[0]) > 2 else 0)
    ax.set_yticks(range(k), classes)
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set(xlabel="predicted", ylabel="true", title=f"Test confusion matrix (accuracy {100 * acc:.2f}%)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, path)
