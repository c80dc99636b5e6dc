"""Clinical metrics (all counts and scores from scikit-learn) and fitting the calibration.

Applying the calibration (softmax with temperature, the abstain rule) and fitting it (temperature, threshold)
live in ``smearscope_core.calibration``: training and a site calibration (edge_app/site_fit.py) fit the same way.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from smearscope_core.calibration import unsure

ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: mean |accuracy - confidence| over equal-width confidence bins, weighted."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = bin_of == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def selective(
    y_true: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    malignant: list[bool] | None = None,
    benign_min: float = 0.0,
) -> dict:
    """Coverage and accuracy of the accepted cases under the abstain rule (with the benign rule where given)."""
    accepted = ~unsure(probs, threshold, malignant, benign_min)
    return {
        "threshold": threshold,
        "coverage": float(accepted.mean()),
        "accuracy_on_accepted": float(accuracy_score(y_true[accepted], probs[accepted].argmax(1)))
        if accepted.any()
        else None,
        "referred": int((~accepted).sum()),
    }


def has_screening_question(malignant: list[bool]) -> bool:
    """Whether the classes pose the malignant-vs-benign question: at least one class of each kind."""
    return any(malignant) and not all(malignant)


def screening(y_true: np.ndarray, y_pred: np.ndarray, malignant: list[bool]) -> dict | None:
    """Malignant-vs-benign: sensitivity (malignant caught) and specificity (benign cleared)."""
    if not has_screening_question(malignant):
        return None
    flag = np.asarray(malignant)
    tn, fp, fn, tp = confusion_matrix(flag[y_true], flag[y_pred], labels=[False, True]).ravel()
    return {
        "positive": "malignant",
        "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "tp": int(tp),
        "fn": int(fn),
        "tn": int(tn),
        "fp": int(fp),
    }


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str], malignant: list[bool]
) -> dict:
    """Accuracy, per-class and macro P/R/F1, confusion matrix, one-vs-rest ROC-AUC, screening."""
    labels = list(range(len(class_names)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    present = np.unique(y_true)
    per_class_auc: dict[str, float | None] = {}
    for index, name in enumerate(class_names):
        binary = (y_true == index).astype(int)
        per_class_auc[name] = float(roc_auc_score(binary, probs[:, index])) if 0 < binary.sum() < len(binary) else None
    if len(present) != len(labels):
        macro_auc = None
    elif len(labels) == 2:  # scikit-learn takes the positive class's scores for a binary problem
        macro_auc = float(roc_auc_score(y_true, probs[:, 1]))
    else:
        macro_auc = float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels))
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro": {"precision": float(macro_p), "recall": float(macro_r), "f1": float(macro_f1)},
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "roc_auc_ovr": per_class_auc[name],
            }
            for i, name in enumerate(class_names)
        },
        "roc_auc_ovr_macro": macro_auc,
        "confusion_matrix": {
            "labels": class_names,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        },
        "screening": screening(y_true, y_pred, malignant),
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0))
