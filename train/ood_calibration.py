"""Calibrate the app's "does this look like training data?" check on the run's own split.

Statistics come from the train split and the refusal threshold from the val split (the 99th
percentile of validation distances, so about 1% of in-distribution images are referred). The
result goes into the model card under ``ood``; smearscope_core/ood.py documents the features.

``calibrate_run`` (``python -m train --calibrate-ood-only``) refreshes an existing run's refer rules
that need no retraining: the ``ood`` section, the ``acquisition`` section (train/acquisition.py) and
the benign bar (``calibration.benign_min_probability``, smearscope_core.calibration), and the train
split's ``colour_reference`` that site colour mapping aims at (smearscope_core/stain.py). The embedding
check is fitted later, by conversion, on the int8 model's own embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smearscope_core.calibration import BENIGN_MIN_PROBABILITY
from smearscope_core.console import logger, progress
from smearscope_core.ood import OodDetector, fit_ood, image_features
from smearscope_core.scale import field_scale, fit_scale
from smearscope_core.stain import colour_reference
from train.acquisition import acquisition_section
from train.run_folder import read_run_splits, write_section


def calibrate_ood(pixels: dict[str, np.ndarray]) -> dict:
    """Fit on ``pixels["train"]``, set the threshold on ``pixels["val"]``, report rates on val and test.

    ``pixels`` maps split name to uint8 [N, S, S, 3] model-sized images (``smearscope_core.manifest.load_images``).
    """
    features = {
        s: np.array([image_features(p) for p in progress(pixels[s], f"image statistics ({s})")])
        for s in ("train", "val", "test")
    }
    section = fit_ood(features["train"], features["val"])
    scales = {s: np.array([field_scale(p) for p in progress(pixels[s], f"cell scale ({s})")]) for s in ("train", "val")}
    try:
        section["field_scale"] = fit_scale(scales["train"], scales["val"], image_size=int(pixels["train"].shape[1]))
    except ValueError as error:  # too few measurable images (a tiny dataset): no magnification check; the app says so
        logger("train").info(f"no magnification check: {error}")
    detector = OodDetector.from_card({"ood": section})
    for split in ("val", "test"):
        flagged = [bool(detector.reasons_for_features(f)[0]) for f in features[split]]
        section[f"{split}_referred_rate"] = float(np.mean(flagged))
    return section


def ood_summary(section: dict) -> dict:
    """The part of the card's ``ood`` section that ``metrics.json`` repeats: the threshold and its refer rates."""
    return {k: section[k] for k in ("threshold", "val_referred_rate", "test_referred_rate")}


def calibrate_run(run: Path, data: Path) -> dict:
    """Add (or refresh) the ``ood``, ``acquisition`` and ``colour_reference`` sections and the benign bar of an
    existing run's card."""
    card, splits = read_run_splits(run, data)
    section = calibrate_ood({name: split.images for name, split in splits.items()})
    card["calibration"]["benign_min_probability"] = BENIGN_MIN_PROBABILITY
    card["acquisition"] = acquisition_section(data, red_cell_diameter(section))
    card["colour_reference"] = colour_reference(splits["train"].images)
    write_section(run, card, "ood", section, ood_summary(section))
    return section


def red_cell_diameter(section: dict) -> float | None:
    """The training images' median red-cell diameter in model pixels, from the field-scale calibration."""
    scale = section.get("field_scale")
    return float(scale["median"]) if scale else None
