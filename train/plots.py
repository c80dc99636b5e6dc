"""PNG figures for a run: confusion matrix and training curves (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 4.8), dpi=120)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(
        ax=axis, cmap="Blues", colorbar=False, values_format="d"
    )
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss (train/val) and accuracy / val macro-F1 per epoch, the best epoch marked."""
    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    left.plot(epochs, [h["loss"] for h in history], label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    left.set_xlabel("epoch")
    left.set_title("Loss")
    left.legend()
    right.plot(epochs, [h["accuracy"] for h in history], label="train accuracy (augmented)")
    right.plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy")
    right.plot(epochs, [h["val_macro_f1"] for h in history], label="val macro-F1")
    best = max(history, key=lambda h: h["val_macro_f1"])
    right.axvline(best["epoch"], color="grey", linestyle=":", label=f"best epoch {best['epoch']}")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.01)
    right.set_title("Accuracy and macro-F1")
    right.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
