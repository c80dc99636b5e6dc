"""Float (Keras) vs int8 (LiteRT, the app's runtime) on exactly the manifest's test split.

Every metric comes from ``train.metrics`` (scikit-learn); top-1 agreement is scikit-learn's
``accuracy_score`` of the int8 predictions against the float ones. Probabilities are the calibrated
ones the app shows: softmax(logits / T) with the card's temperature.

When the run's card has a colour target (``shortcuts.colour_target``, written by training), both models are
also scored on the test images with each image's colour standardised to it (``colour_robust_drift``), with
training's own routine (``train.shortcuts.colour_robust``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score

from convert.inputs import RunFolder
from convert.quiet import quiet_native_stderr
from edge_app.runtime import TFLiteModel
from smearscope_core.calibration import softmax, unsure
from smearscope_core.console import progress
from train.metrics import classification_metrics, selective
from train.run_folder import RunSplit
from train.shortcuts import COLOUR_ROBUST_NOTE, colour_robust, summary


@dataclass
class ModelOutputs:
    """Dequantized logits of one model on the test images, and their calibrated probabilities."""

    logits: np.ndarray  # float64 [N, C]
    probs: np.ndarray  # float64 [N, C]


def keras_logits(model: object, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The float reference: the training stage's own model, in inference mode."""
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0), dtype=np.float64)


def tflite_logits(content: bytes, images: np.ndarray, num_threads: int = 1, description: str = "LiteRT") -> np.ndarray:
    """Run a .tflite model image by image through the app's own runtime wrapper (edge_app.runtime).

    A progress bar named ``description`` shows on a terminal (smearscope_core.console.progress).
    """
    with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        model = TFLiteModel(content=content, num_threads=num_threads)
    return np.stack([model.run(image) for image in progress(images, description, total=len(images))])


def tflite_embeddings(content: bytes, images: np.ndarray, num_threads: int = 1, description: str = "") -> np.ndarray:
    """The model's ``embedding`` output (read by name) for each image, through the app's runtime wrapper."""
    with quiet_native_stderr():
        model = TFLiteModel(content=content, num_threads=num_threads)
    if not model.has_embedding:
        raise ValueError("The model has no output named 'embedding'.")
    return np.stack([model.run_all(image)["embedding"] for image in progress(images, description, total=len(images))])


def outputs(logits: np.ndarray, temperature: float) -> ModelOutputs:
    return ModelOutputs(np.asarray(logits, dtype=np.float64), softmax(logits, temperature))


def _points(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else (new - old) * 100.0


def _screening_pair(metrics: dict) -> dict | None:
    screening = metrics.get("screening")
    if not screening:
        return None
    return {"sensitivity": screening["sensitivity"], "specificity": screening["specificity"]}


def compare(
    labels: np.ndarray,
    reference: ModelOutputs,
    candidate: ModelOutputs,
    class_names: list[str],
    malignant: list[bool],
    paths: list[str],
    abstain_threshold: float | None = None,
    benign_min: float = 0.0,
) -> dict:
    """All drift figures: both models' metrics, their deltas (points), agreement, probability gaps, disagreements.

    With ``abstain_threshold`` (the card's), also how often each model would refer an image, and on how
    many images the two refer differently: the app's decision, not only its top class.
    """
    float_metrics = classification_metrics(labels, reference.probs, class_names, malignant)
    int8_metrics = classification_metrics(labels, candidate.probs, class_names, malignant)
    float_pred, int8_pred = reference.probs.argmax(1), candidate.probs.argmax(1)
    agreement = float(accuracy_score(float_pred, int8_pred))
    prob_gap = np.abs(reference.probs - candidate.probs)
    logit_gap = np.abs(reference.logits - candidate.logits)
    worst = int(prob_gap.max(axis=1).argmax()) if len(labels) else 0
    disagreements = [
        {
            "path": paths[i],
            "true": class_names[int(labels[i])],
            "float": class_names[int(float_pred[i])],
            "int8": class_names[int(int8_pred[i])],
            "float_probability": float(reference.probs[i, float_pred[i]]),
            "int8_probability": float(candidate.probs[i, int8_pred[i]]),
        }
        for i in np.nonzero(float_pred != int8_pred)[0]
    ]
    screening = {"float": _screening_pair(float_metrics), "int8": _screening_pair(int8_metrics)}
    if screening["float"] and screening["int8"]:
        screening["delta_points"] = {
            key: _points(screening["int8"][key], screening["float"][key]) for key in ("sensitivity", "specificity")
        }
    abstain = None
    if abstain_threshold is not None:
        refer_float = unsure(reference.probs, abstain_threshold, malignant, benign_min)
        refer_int8 = unsure(candidate.probs, abstain_threshold, malignant, benign_min)
        abstain = {
            "threshold": abstain_threshold,
            "benign_min_probability": benign_min,
            "float": selective(labels, reference.probs, abstain_threshold, malignant, benign_min),
            "int8": selective(labels, candidate.probs, abstain_threshold, malignant, benign_min),
            "decisions_differ": int((refer_float != refer_int8).sum()),
        }
    return {
        "split": "test",
        "n": len(labels),
        "agreement": agreement,
        "disagreement_count": len(disagreements),
        "accuracy": {
            "float": float_metrics["accuracy"],
            "int8": int8_metrics["accuracy"],
            "delta_points": _points(int8_metrics["accuracy"], float_metrics["accuracy"]),
        },
        "macro_f1": {
            "float": float_metrics["macro"]["f1"],
            "int8": int8_metrics["macro"]["f1"],
            "delta_points": _points(int8_metrics["macro"]["f1"], float_metrics["macro"]["f1"]),
        },
        "per_class_recall": {
            name: {
                "float": float_metrics["per_class"][name]["recall"],
                "int8": int8_metrics["per_class"][name]["recall"],
                "delta_points": _points(
                    int8_metrics["per_class"][name]["recall"], float_metrics["per_class"][name]["recall"]
                ),
                "support": float_metrics["per_class"][name]["support"],
            }
            for name in class_names
        },
        "screening": screening,
        "abstain": abstain,
        "probability_difference": {
            "mean_abs": float(prob_gap.mean()) if prob_gap.size else 0.0,
            "max_abs": float(prob_gap.max()) if prob_gap.size else 0.0,
            "max_abs_image": paths[worst] if len(labels) else None,
            "calibrated_with_temperature": True,
        },
        "logit_difference": {
            "mean_abs": float(logit_gap.mean()) if logit_gap.size else 0.0,
            "max_abs": float(logit_gap.max()) if logit_gap.size else 0.0,
        },
        "disagreements": disagreements,
        "float_metrics": float_metrics,
        "int8_metrics": int8_metrics,
    }


def per_image(
    labels: np.ndarray, reference: ModelOutputs, candidate: ModelOutputs, class_names: list[str], paths: list[str]
) -> list[dict]:
    """Per test image: both models' calibrated probabilities (for the report's JSON and scatter)."""
    return [
        {
            "path": paths[i],
            "true": class_names[int(labels[i])],
            "float_probabilities": [round(float(p), 6) for p in reference.probs[i]],
            "int8_probabilities": [round(float(p), 6) for p in candidate.probs[i]],
        }
        for i in range(len(labels))
    ]


def colour_target(card: dict) -> dict | None:
    """The card's ``shortcuts.colour_target``, or None for a run trained before training wrote one."""
    return (card.get("shortcuts") or {}).get("colour_target")


def colour_robust_drift(
    run: RunFolder,
    images: np.ndarray,
    labels: np.ndarray,
    logits_of: dict[str, Callable[[np.ndarray], np.ndarray]],
    drift: dict,
) -> dict:
    """Each model of ``logits_of`` ("float", "int8") on the test images with their colour standardised to the run
    card's target, beside its as-is figures from ``drift`` (``compare``'s result); the card must have a target.

    The same routine, target and temperature as training's ``shortcuts.colour_robust`` (train/shortcuts.py), so the
    float figures here reproduce the card's ``shortcuts.colour_robust.test``.
    """
    target = colour_target(run.card)
    split = RunSplit(images, labels, paths=[])  # no file paths: only the shortcut baselines read files
    return {
        "split": "test",
        "colour_target": target,
        "as_is": {name: summary(drift[f"{name}_metrics"]) for name in logits_of},
        **{
            name: colour_robust(logits, split, target, run.temperature, run.class_names, run.malignant)
            for name, logits in logits_of.items()
        },
        "note": COLOUR_ROBUST_NOTE,
    }
