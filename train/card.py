"""What a training run reports: the model card (``model_card.json``) and ``metrics.json``, as dicts.

``build_card`` fills every section a run knows (classes, input, preprocessing, training settings and
environment, float-model metrics, calibration, the unfamiliar-image check, the training images' colour
reference for site colour mapping); the schema is
``schemas/model_card.schema.json`` (docs/model-card.md). Conversion adds its own sections later.
Writing the files is ``train.run``'s job.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import tensorflow as tf

from smearscope_core.calibration import BENIGN_MIN_PROBABILITY
from smearscope_core.files import MANIFEST_FILE
from smearscope_core.imaging import RESIZE_POLICY
from smearscope_core.manifest import load_images
from smearscope_core.model_card import SCHEMA_VERSION
from smearscope_core.stain import colour_reference
from train.acquisition import acquisition_section
from train.config import TrainConfig
from train.dataset import PreparedData, classes_as_dicts
from train.model import architecture_name
from train.ood_calibration import ood_summary, red_cell_diameter

INTENDED_USE = (
    "Research screening aid for peripheral blood smear images; not a diagnostic device. The malignant-vs-benign "
    "call is the screening result; the B-ALL subtype (Early Pre-B, Pre-B, Pro-B) is an immunophenotypic category "
    "and only a research suggestion, to be confirmed by flow cytometry."
)
NORMALIZATION = {
    False: "inside the model: x / 127.5 - 1",
    True: "inside the model: each image's per-channel mean and spread standardised "
    "((x - mean) / sqrt(var + 1) * 42.5 + 127.5), then x / 127.5 - 1",
}


@dataclass
class FitResult:
    """How fitting went: the per-epoch history, the epoch whose weights were kept, the seconds it took."""

    history: list[dict]
    best_epoch: int
    seconds: float
    finetuned_from: dict | None = None  # a fine-tune's base run (train.run.BaseRun.record); None: from scratch


@dataclass
class Evaluation:
    """The float model on the held-out splits, with its calibration and the unfamiliar-image check."""

    results: dict  # "val"/"test" -> metrics
    temperature: float
    threshold: float
    ood: dict
    shortcuts: dict  # shortcut baselines and colour-robust figures (train.shortcuts)


def environment() -> dict:
    """Library versions and the machine the run trained on."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def build_metrics(evaluation: Evaluation) -> dict:
    """``metrics.json``: every test and val figure, the calibration and the unfamiliar-image check's rates."""
    return {
        "test": evaluation.results["test"],
        "val": evaluation.results["val"],
        "temperature": evaluation.temperature,
        "abstain_threshold": evaluation.threshold,
        "ood": ood_summary(evaluation.ood),
        "shortcuts": evaluation.shortcuts,
    }


def model_name(config: TrainConfig) -> str:
    """``--name``, or ``<dataset folder>-mobilenetv3<arch>-<size>px``."""
    return config.name or f"{Path(config.data).name}-mobilenetv3{config.architecture}-{config.image_size}px"


def _training_section(config: TrainConfig, data: PreparedData, fit: FitResult, total_seconds: float) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return {
        "architecture": architecture_name(config.architecture),
        "image_size": config.image_size,
        "epochs_max": config.epochs,
        "epochs_run": len(fit.history),
        "best_epoch": fit.best_epoch,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "optimizer": f"AdamW lr {config.learning_rate} cosine decay, {config.warmup_epochs} warm-up epochs, "
        f"weight decay {config.weight_decay}"
        + (f", weight average (EMA) momentum {config.ema_momentum}" if config.ema_momentum else ""),
        "class_weights": "balanced",
        "loss": "sparse cross-entropy"
        + (f" + {config.screening_weight} x -log P(malignant) on malignant images" if config.screening_weight else ""),
        "augmentation": asdict(config.augmentation) if config.augment else None,
        "init_weights": str(config.init_weights) if config.init_weights else None,
        "fit_seconds": round(fit.seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "environment": environment(),
        "settings": settings,
        "dataset": {
            "name": data.dataset_name,
            "citation": data.citation,
            "manifest": MANIFEST_FILE,
            "manifest_sha256": data.manifest_sha256,
            "split_counts": data.counts,
        },
        **({"finetuned_from": fit.finetuned_from} if fit.finetuned_from else {}),
    }


def _calibration_section(config: TrainConfig, evaluation: Evaluation) -> dict:
    test = evaluation.results["test"]
    return {
        "temperature": evaluation.temperature,
        "abstain_threshold": evaluation.threshold,
        "abstain_rule": f"refer when the top calibrated probability < threshold; threshold = lowest value at which "
        f"accepted validation cases reach {config.abstain_target_accuracy:.0%} accuracy, never below 0.5; and refer a "
        "benign top class below benign_min_probability",
        "benign_min_probability": BENIGN_MIN_PROBABILITY,
        "fitted_on": "val",
        "test_ece_before": test["calibration"]["ece_before"],
        "test_ece_after": test["calibration"]["ece_after"],
        "test_coverage": test["abstain"]["coverage"],
    }


def colour_reference_section(config: TrainConfig, data: PreparedData) -> dict:
    """``colour_reference``: the train split's colour statistics that a site's colour mapping aims at
    (smearscope_core/stain.py), from the images at the model's input size as the split manifest lists them.

    Decoded again here (a few seconds for the default dataset) so that the card needs nothing more from the run.
    """
    rows = [row for row in data.rows if row.split == "train"]
    images, _ = load_images(Path(config.data), rows, config.image_size, [c.name for c in data.classes])
    return colour_reference(images)


def build_card(
    config: TrainConfig, data: PreparedData, fit: FitResult, evaluation: Evaluation, total_seconds: float
) -> dict:
    """The run's model card, section by section in the order the file lists them."""
    results = evaluation.results
    return {
        "schema_version": SCHEMA_VERSION,
        "name": model_name(config),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "intended_use": INTENDED_USE,
        "classes": classes_as_dicts(data.classes),
        "input": {
            "height": config.image_size,
            "width": config.image_size,
            "channels": 3,
            "color_order": "RGB",
            "pixel_range": [0, 255],
            "dtype": "float32",
        },
        "preprocessing": {**RESIZE_POLICY, "normalization": NORMALIZATION[config.colour_standardise]},
        "output": {"kind": "logits", "probabilities": "softmax(logits / calibration.temperature)"},
        "training": _training_section(config, data, fit, total_seconds),
        "metrics": {
            "float_test": {
                k: results["test"][k]
                for k in ("n", "accuracy", "macro", "roc_auc_ovr_macro", "confusion_matrix", "screening")
            },
            "float_val": {k: results["val"][k] for k in ("n", "accuracy", "macro")},
        },
        "calibration": _calibration_section(config, evaluation),
        "ood": evaluation.ood,
        "acquisition": acquisition_section(config.data, red_cell_diameter(evaluation.ood)),
        "shortcuts": evaluation.shortcuts,
        "colour_reference": colour_reference_section(config, data),
    }
