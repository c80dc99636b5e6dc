"""Per-image colour standardisation: the test that shows whether a model learnt the cells or the photo session.

Each class of the training set was stained and photographed in its own sessions, so global colour alone
predicts the class (train/shortcuts.py measures how well). A model that leans on that fails in another lab.
``standardise_colour`` maps each image's own per-channel mean and standard deviation onto one target (the
training set's average), which removes the session's colour but keeps the cells: a model's metrics on the
standardised test split are its "colour-robust" figures, reported by training, conversion and the benchmark
with this one function and the target stored in the model card (``shortcuts.colour_target``).
"""

from __future__ import annotations

import numpy as np

_EPSILON = 1e-6


def colour_statistics(images: np.ndarray) -> np.ndarray:
    """Per image: mean and standard deviation of R, G, B, float64 [N, 6] (uint8 [N, H, W, 3] in)."""
    pixels = np.asarray(images, dtype=np.float64).reshape(len(images), -1, 3)
    return np.concatenate([pixels.mean(axis=1), pixels.std(axis=1)], axis=1)


def colour_target(images: np.ndarray) -> dict[str, list[float]]:
    """The average per-image channel mean and standard deviation of ``images`` (the training split)."""
    stats = colour_statistics(images)
    return {"mean": stats[:, :3].mean(axis=0).round(4).tolist(), "std": stats[:, 3:].mean(axis=0).round(4).tolist()}


def standardise_colour(images: np.ndarray, target: dict[str, list[float]]) -> np.ndarray:
    """Each image with its own channel means and spreads replaced by the target's, uint8 like the input."""
    pixels = np.asarray(images, dtype=np.float64)
    mean = pixels.mean(axis=(1, 2), keepdims=True)
    std = pixels.std(axis=(1, 2), keepdims=True)
    out = (pixels - mean) / (std + _EPSILON) * np.asarray(target["std"]) + np.asarray(target["mean"])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
