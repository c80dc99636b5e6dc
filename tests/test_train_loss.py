"""The training loss (train/loss.py): plain cross-entropy at weight 0, the screening term by hand, and its effect."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from smearscope_core.calibration import softmax
from train.loss import ScreeningCrossEntropy

MALIGNANT = [False, True, True, True]


def _per_image(loss: ScreeningCrossEntropy, labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(loss.call(labels, logits))


def test_weight_zero_is_keras_sparse_cross_entropy() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(16, 4)).astype("float32") * 3, rng.integers(0, 4, 16)
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert np.allclose(_per_image(ScreeningCrossEntropy(MALIGNANT), labels, logits), expected, atol=1e-6)


def test_screening_term_by_hand() -> None:
    """Three images worked out with numpy: a malignant one leaning benign, a benign one, a malignant one at 5 logits
    of benign; the term is added to malignant images only, scaled by the weight."""
    logits = np.array([[3, 0, 0, 1], [0, 2, 0, 0], [5, 0, 0, 0]], "float32")
    labels = np.array([1, 0, 3])
    probs = softmax(logits)
    cross_entropy = -np.log(probs[np.arange(3), labels])
    term = np.array([1, 0, 1]) * -np.log(probs[:, 1:].sum(1))
    got = _per_image(ScreeningCrossEntropy(MALIGNANT, 2.0), labels, logits)
    assert np.allclose(got, cross_entropy + 2.0 * term, atol=1e-5)
    assert got[1] == pytest.approx(cross_entropy[1], abs=1e-6)  # a benign image pays plain cross-entropy


def test_confident_logits_stay_finite() -> None:
    logits = np.array([[200.0, -200.0, -200.0, -200.0]], "float32")
    got = _per_image(ScreeningCrossEntropy(MALIGNANT, 3.0), np.array([2]), logits)
    assert np.isfinite(got).all() and got[0] > 1000


def test_refuses_a_weight_it_cannot_use() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        ScreeningCrossEntropy(MALIGNANT, -1.0)
    with pytest.raises(ValueError, match="malignant and one benign"):
        ScreeningCrossEntropy([True, True], 1.0)


def test_the_weight_moves_doubt_on_malignant_images_away_from_benign() -> None:
    """Overlapping classes, one linear layer trained with each weight: the malignant images' mean P(benign) falls
    and the benign images called malignant rise; the screening error is priced, not removed by magic."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    features = (labels > 0).astype("float32")[:, None] + rng.normal(scale=1.0, size=(400, 2)).astype("float32")

    def fit(weight: float) -> np.ndarray:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=ScreeningCrossEntropy(MALIGNANT, weight))
        model.fit(features, labels, batch_size=50, epochs=30, verbose=0)
        return softmax(model.predict(features, verbose=0))

    plain, weighted = fit(0.0), fit(3.0)
    malignant, benign = labels > 0, labels == 0
    assert weighted[malignant, 0].mean() < plain[malignant, 0].mean() / 2  # measured: 0.054 against 0.158
    assert (weighted[benign].argmax(1) > 0).mean() > (plain[benign].argmax(1) > 0).mean() + 0.1  # 0.71 against 0.36
