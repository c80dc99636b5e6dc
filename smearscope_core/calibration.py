"""Calibrated probabilities and the abstain rule: the one implementation of each, for every stage.

Training fits the temperature and the threshold (``train.metrics``), conversion measures both models
with them, and the app applies them to each image; all three call these two functions, so "refer"
means the same thing in the metrics, the drift report and on screen.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) over the last axis, in float64 (one image [C] or a batch [N, C])."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def unsure(probs: np.ndarray, threshold: float) -> np.ndarray | bool:
    """The abstain rule: refer when the top calibrated probability is below the card's threshold.

    For one image [C] a bool, for a batch [N, C] a bool mask.
    """
    below = np.asarray(probs).max(axis=-1) < threshold
    return bool(below) if np.ndim(below) == 0 else below
