"""Shortcut baselines and colour-robust metrics: does the model read the cells, or the photo session?

The ALL training set's classes were stained and photographed in their own sessions, so simple
whole-image numbers predict the class without looking at a cell. Every training run measures that
(``BASELINES``: one table, one routine) with a logistic regression fitted on the train split and
scored on the test split, and scores the model itself on the test (and val) split with each image's
colour standardised (``smearscope_core.colour``): a model that keeps its figures there did not need
the colour; and on the test split as other microscopes would have taken it (``train.microscopes``).
All of it goes into the model card's ``shortcuts`` section (docs/model-card.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smearscope_core.calibration import softmax
from smearscope_core.colour import colour_statistics, colour_target, standardise_colour
from train.metrics import classification_metrics
from train.microscopes import MICROSCOPES, simulate
from train.run_folder import RunSplit, read_run_splits, write_section

COLOUR_ROBUST_NOTE = (
    "colour-robust: the same test images with each image's own colour mean and spread replaced by the training "
    "set's average; a model that keeps its figures there reads the cells, not the photo session's colour"
)


def corner_features(images: np.ndarray) -> np.ndarray:
    """Mean and spread of R, G, B in each corner (an eighth of the side): scale-bar marks, borders, vignetting."""
    side = max(images.shape[1] // 8, 1)
    corners = [images[:, :side, :side], images[:, :side, -side:], images[:, -side:, :side], images[:, -side:, -side:]]
    return np.concatenate([colour_statistics(corner) for corner in corners], axis=1)


def file_features(paths: list[Path]) -> np.ndarray:
    """log file size, width, height and whether it is a JPEG: how each class's photos were saved."""
    rows = []
    for path in paths:
        with Image.open(path) as image:  # reads the header only
            rows.append([np.log(path.stat().st_size), image.width, image.height, float(image.format == "JPEG")])
    return np.asarray(rows, dtype=np.float64)


@dataclass(frozen=True)
class Baseline:
    features: str  # what the regression sees, in words
    images: Callable[[np.ndarray], np.ndarray] | None = None  # from model-sized uint8 images
    files: Callable[[list[Path]], np.ndarray] | None = None  # from the image files


BASELINES = {
    "colour": Baseline(
        "mean and standard deviation of R, G, B of the whole image (6 numbers)", images=colour_statistics
    ),
    "corners": Baseline("mean and standard deviation of R, G, B in each corner (24 numbers)", images=corner_features),
    "file": Baseline("file size, width, height and format (4 numbers)", files=file_features),
}


def baseline_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, malignant: list[bool]
) -> dict:
    """A logistic regression on the features, fitted on train and scored on test (all scores from scikit-learn)."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    predicted = classifier.fit(train_x, train_y).predict(test_x)
    flag = np.asarray(malignant)
    labels = sorted(set(train_y.tolist()) | set(test_y.tolist()))
    scores = {
        "accuracy": float(accuracy_score(test_y, predicted)),
        "macro_f1": float(f1_score(test_y, predicted, labels=labels, average="macro", zero_division=0)),
    }
    if flag.any() and not flag.all():
        scores["malignant_vs_benign_accuracy"] = float(accuracy_score(flag[test_y], flag[predicted]))
    return scores


def shortcut_baselines(train: RunSplit, test: RunSplit, malignant: list[bool]) -> dict:
    """Every baseline of ``BASELINES`` on the test split, with the majority class's accuracy for scale."""
    results = {}
    for name, baseline in BASELINES.items():
        if baseline.images is not None:
            train_x, test_x = baseline.images(train.images), baseline.images(test.images)
        else:
            train_x, test_x = baseline.files(train.paths), baseline.files(test.paths)
        results[name] = {"features": baseline.features, **baseline_scores(train_x, train.labels, test_x, test.labels,
                                                                           malignant)}  # fmt: skip
    majority = np.bincount(train.labels).argmax()
    results["majority_class"] = {
        "features": "none: always the most frequent training class",
        "accuracy": float(np.mean(test.labels == majority)),
    }
    return results


def summary(metrics: dict) -> dict:
    """The four figures a reader compares: accuracy, macro-F1, malignant sensitivity and specificity."""
    screening = metrics.get("screening") or {}
    return {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro"]["f1"],
        "sensitivity": screening.get("sensitivity"),
        "specificity": screening.get("specificity"),
    }


def colour_robust(
    logits_of: Callable[[np.ndarray], np.ndarray],
    split: RunSplit,
    target: dict,
    temperature: float,
    class_names: list[str],
    malignant: list[bool],
) -> dict:
    """The model's figures on the split with every image's colour standardised to ``target``."""
    probs = softmax(logits_of(standardise_colour(split.images, target)), temperature)
    return summary(classification_metrics(split.labels, probs, class_names, malignant))


def shortcuts_section(
    logits_of: Callable[[np.ndarray], np.ndarray],
    splits: dict[str, RunSplit],
    temperature: float,
    class_names: list[str],
    malignant: list[bool],
    baselines: bool = True,
) -> dict:
    """The model card's ``shortcuts`` section: the colour target, the baselines, the colour-robust figures.

    ``baselines=False`` leaves the baselines out (they need the image files; a refresh without them keeps
    the ones already in the card).
    """
    target = colour_target(splits["train"].images)
    return {
        "colour_target": target,
        "baselines": shortcut_baselines(splits["train"], splits["test"], malignant) if baselines else {},
        "colour_robust": {
            split: colour_robust(logits_of, splits[split], target, temperature, class_names, malignant)
            for split in ("val", "test")
        },
        "simulated_microscopes": simulated_microscopes(logits_of, splits["test"], class_names, malignant),
        "note": COLOUR_ROBUST_NOTE,
    }


def simulated_microscopes(
    logits_of: Callable[[np.ndarray], np.ndarray],
    test: RunSplit,
    class_names: list[str],
    malignant: list[bool],
    predictions: dict[str, np.ndarray] | None = None,
) -> dict:
    """The raw model (argmax, no refer check) on the test split as each of ``MICROSCOPES`` would show it; each
    microscope's predicted classes also go into ``predictions`` when given (for paired comparisons)."""
    results = {}
    for name, microscope in MICROSCOPES.items():
        probs = softmax(logits_of(simulate(test.images, microscope)))
        metrics = classification_metrics(test.labels, probs, class_names, malignant)
        results[name] = {"description": microscope.description, **summary(metrics)}
        if predictions is not None:
            predictions[name] = probs.argmax(1)
    return results


def refresh_run(run: Path, data: Path) -> dict:
    """Add (or refresh) the ``shortcuts`` section of an existing run folder's card and ``metrics.json``.

    For runs trained before the section existed (``python -m train --out RUN --shortcuts-only``); the same
    code as a training run, on the run's own manifest, model and temperature.
    """
    from functools import partial

    from train.model import load_float_model, predict_logits

    card, splits = read_run_splits(run, data)
    section = shortcuts_section(
        partial(predict_logits, load_float_model(run / "model.keras")),
        splits,
        float(card["calibration"]["temperature"]),
        [c["name"] for c in card["classes"]],
        [bool(c["malignant"]) for c in card["classes"]],
    )
    write_section(run, card, "shortcuts", section, section)
    return section
