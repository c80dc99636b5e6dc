"""Calibrated probabilities and the abstain rule: the one implementation of each, for every stage.

Training fits the temperature and the threshold (``train.metrics``), conversion measures both models
with them, and the app applies them to each image; all three call these two functions, so "refer"
means the same thing in the metrics, the drift report and on screen.
"""

from __future__ import annotations

import math
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


# Fitting both, from validation data (training) or out-of-fold predictions (a site calibration): one home for each
# rule, in numpy only, so the edge environment's site calibration fits exactly as training does.
TEMPERATURE_BOUNDS = (0.05, 20.0)
THRESHOLD_FLOOR = 0.5


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities clipped at 1e-15, as scikit-learn's)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0))))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """Temperature T minimising the log-loss of softmax(logits / T) (Guo et al. 2017), by golden-section search on
    log T over ``TEMPERATURE_BOUNDS`` (to 1e-5 in log T)."""
    labels = np.asarray(labels)
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    ratio = (math.sqrt(5) - 1) / 2

    def nll(log_t: float) -> float:
        return log_loss(labels, softmax(logits, math.exp(log_t)))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    while high - low > 1e-5:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(math.exp((low + high) / 2))


def choose_abstain_threshold(
    labels: np.ndarray, probs: np.ndarray, target_accuracy: float = 0.99, floor: float = THRESHOLD_FLOOR
) -> float:
    """Lowest top-probability threshold at which the accepted images reach ``target_accuracy``.

    Never below ``floor``: a top probability under it means the model is torn between classes, whatever the
    fitting data say, so it always refers.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    for threshold in np.unique(np.concatenate([[floor], confidence[confidence >= floor]])):
        accepted = ~unsure(probs, threshold)
        if accepted.any() and correct[accepted].mean() >= target_accuracy:
            return float(threshold)
    return float(confidence.max()) if len(confidence) else floor


BENIGN_BAR_CAP = 0.995  # a fitted benign bar never asks more than this: above it nearly every benign answer is refused


def fit_benign_bar(
    labels: np.ndarray, probs: np.ndarray, malignant: Sequence[bool], floor: float = BENIGN_MIN_PROBABILITY
) -> float:
    """A benign bar fitted on held-out predictions: the lowest (never below ``floor``, at most ``BENIGN_BAR_CAP``) at
    which none of the malignant images is answered benign, i.e. just above the highest benign top probability among
    malignant images whose top class is benign. A site calibration uses it (edge_app/site_fit.py): with a few dozen
    images per class, the site's own misses say more about where its benign answers stop being safe than 0.90 does.
    """
    flags = np.asarray(malignant, dtype=bool)
    top = np.asarray(probs).argmax(axis=1)
    missed = flags[np.asarray(labels)] & ~flags[top]
    if not missed.any():
        return float(floor)
    highest = float(np.asarray(probs)[missed].max(axis=1).max())
    return float(min(max(floor, np.nextafter(highest, 1.0)), BENIGN_BAR_CAP))
