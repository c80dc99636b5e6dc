"""Calibrated probabilities and the abstain rule: the one implementation of each, for every stage.

Training fits the temperature and the threshold (``train.metrics``), conversion measures both models
with them, and the app applies them to each image; all three call these two functions, so "refer"
means the same thing in the metrics, the drift report and on screen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) over the last axis, in float64 (one image [C] or a batch [N, C])."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


# A benign answer needs at least this calibrated probability of its class, or the image is referred: a missed
# leukemia costs more than a review. Measured on the default model (docs/out-of-lab.md): at 0.90 it refers
# 0.4 points more of the real test split and removes nearly every ALL smear answered "benign" under zoom and
# simulated other microscopes. The card's ``calibration.benign_min_probability`` records the value a model uses.
BENIGN_MIN_PROBABILITY = 0.90


def unsure(
    probs: np.ndarray, threshold: float, malignant: Sequence[bool] | None = None, benign_min: float = 0.0
) -> np.ndarray | bool:
    """The abstain rule: refer when the top calibrated probability is below the card's threshold, or (given the
    classes' ``malignant`` flags) when the top class is benign and its probability is below ``benign_min``.

    For one image [C] a bool, for a batch [N, C] a bool mask.
    """
    probs = np.asarray(probs)
    top = probs.max(axis=-1)
    below = top < threshold
    if malignant is not None and benign_min > 0:
        benign_top = ~np.asarray(malignant, dtype=bool)[probs.argmax(axis=-1)]
        below = below | (benign_top & (top < benign_min))
    return bool(below) if np.ndim(below) == 0 else below


def unsure_benign(probs: np.ndarray, threshold: float, malignant: Sequence[bool], benign_min: float) -> bool:
    """Whether one image is referred by the benign rule alone (for the reason shown to the technician)."""
    return bool(unsure(probs, threshold, malignant, benign_min)) and not bool(unsure(probs, threshold))
