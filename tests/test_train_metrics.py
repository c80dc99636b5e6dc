"""Metrics agree with scikit-learn and with hand-counted values; calibration and abstention behave."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from smearscope_core.calibration import choose_abstain_threshold, fit_temperature, log_loss, softmax
from train.metrics import classification_metrics, expected_calibration_error, selective

NAMES = ["Benign", "Early", "Pre", "Pro"]
MALIGNANT = [False, True, True, True]


def _known_case():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 3, 2, 3, 0])
    probs = np.full((len(y_true), 4), 0.1)
    probs[np.arange(len(y_true)), y_pred] = 0.7
    return y_true, y_pred, probs


def test_known_case_matches_sklearn_and_hand_counts() -> None:
    y_true, y_pred, probs = _known_case()
    result = classification_metrics(y_true, probs, NAMES, MALIGNANT)
    assert result["accuracy"] == pytest.approx(0.7)  # 7 of 10 counted by hand
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert result["macro"]["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert result["macro"]["precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert result["per_class"]["Early"]["precision"] == pytest.approx(2 / 3)  # 2 right of 3 called Early
    assert result["per_class"]["Benign"]["recall"] == pytest.approx(recall_score(y_true, y_pred, average=None)[0])
    assert result["confusion_matrix"]["matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert result["per_class"]["Pre"]["support"] == 3
    # screening: benign called malignant once (0->1), malignant called benign once (3->0)
    screening = result["screening"]
    assert (screening["tp"], screening["fn"], screening["tn"], screening["fp"]) == (6, 1, 2, 1)
    assert screening["sensitivity"] == pytest.approx(6 / 7)
    assert screening["specificity"] == pytest.approx(2 / 3)


def test_roc_auc_is_one_for_perfect_ranking() -> None:
    y_true = np.array([0, 1, 2, 3] * 5)
    probs = np.eye(4)[y_true] * 0.9 + 0.025
    result = classification_metrics(y_true, probs, NAMES, MALIGNANT)
    assert result["roc_auc_ovr_macro"] == pytest.approx(1.0)
    assert all(c["roc_auc_ovr"] == pytest.approx(1.0) for c in result["per_class"].values())


def test_screening_is_skipped_without_both_kinds_of_class() -> None:
    y_true, _, probs = _known_case()
    assert classification_metrics(y_true, probs, NAMES, [False] * 4)["screening"] is None


def test_ece_of_a_known_case() -> None:
    # all predictions at confidence 0.8, of which 3 of 4 correct -> |0.75 - 0.8| = 0.05
    probs = np.array([[0.8, 0.2]] * 4)
    assert expected_calibration_error(np.array([0, 0, 0, 1]), probs) == pytest.approx(0.05)
    assert expected_calibration_error(np.array([0, 0, 0, 0]), np.array([[1.0, 0.0]] * 4)) == pytest.approx(0.0)


def test_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # a model 3x too sure of itself
    temperature = fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(labels, softmax(overconfident))
    after = expected_calibration_error(labels, softmax(overconfident, temperature))
    assert after < before / 2


def test_abstain_threshold_reaches_target_on_accepted_cases() -> None:
    y_true = np.array([0] * 10)
    confidence = np.linspace(0.55, 0.99, 10)
    probs = np.stack([confidence, 1 - confidence], axis=1)
    probs[:3] = probs[:3, ::-1]  # the three least confident are wrong
    threshold = choose_abstain_threshold(y_true, probs, target_accuracy=0.99)
    result = selective(y_true, probs, threshold)
    assert result["accuracy_on_accepted"] == 1.0
    assert result["referred"] == 3
    # a perfect model is never asked to refer above the floor
    assert choose_abstain_threshold(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 0.5


def test_two_class_dataset_gets_a_roc_auc() -> None:
    """A binary dataset (any folder-per-class set with two folders) must not crash the metrics."""
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    result = classification_metrics(y_true, probs, ["benign", "blast"], [False, True])
    assert result["roc_auc_ovr_macro"] == 1.0 and result["accuracy"] == 1.0


def test_fit_temperature_finds_the_log_loss_minimum_scipy_finds():
    """The numpy golden-section search (which the edge environment's site calibration also uses) agrees with scipy's
    bounded minimiser on the same interval."""
    from scipy.optimize import minimize_scalar
    from sklearn.metrics import log_loss as sklearn_log_loss

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) * 3 + np.eye(4)[labels] * 4
    ours = fit_temperature(labels, logits)
    theirs = minimize_scalar(lambda t: sklearn_log_loss(labels, softmax(logits, float(np.exp(t))), labels=range(4)),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded").x  # fmt: skip
    assert abs(np.log(ours) - theirs) < 1e-3
    assert abs(log_loss(labels, softmax(logits, ours)) - sklearn_log_loss(labels, softmax(logits, ours))) < 1e-9


def test_fit_benign_bar_sits_just_above_the_most_confident_missed_malignant_image():
    from smearscope_core.calibration import BENIGN_BAR_CAP, fit_benign_bar

    malignant = [False, True, True]
    labels = np.array([0, 1, 2, 1])
    probs = np.array([[0.99, 0.005, 0.005], [0.93, 0.05, 0.02], [0.1, 0.2, 0.7], [0.2, 0.8, 0.0]])
    bar = fit_benign_bar(labels, probs, malignant)
    assert 0.93 < bar < 0.9300001  # the malignant image answered benign at 0.93 is now referred
    assert fit_benign_bar(labels[2:], probs[2:], malignant) == 0.90  # no miss: the floor
    probs[1] = [0.9999, 0.0001, 0.0]
    assert fit_benign_bar(labels, probs, malignant) == BENIGN_BAR_CAP  # never above the cap
