"""Builders for the site-calibration tests (tests/test_site_calibration.py): a tiny base bundle that has a feature
extractor, and synthetic site folders whose classes differ (or not) in cell colour and size.

The base bundle is small on purpose: a two-layer int8 conv net stands in for both the classifier (outputs
``logits`` and ``embedding``, 48 px, tests/factories.py's classes) and for EfficientNet-Lite0 (one output
``features``, 64 px), exported and converted the way conversion does it (convert.quantize). Random convolution
weights still give pooled features that carry a cell's colour and size, which is all a separable site needs.
TensorFlow is imported inside the builders only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smearscope_core.files import sha256_of
from smearscope_core.imaging import model_pixels
from smearscope_core.stain import colour_reference
from tests.factories import CLASSES, SIZE, smear_like, smears, write_bundle

FEATURE_SIZE = 64
FEATURE_DIMENSIONS = 24
FEATURES_FILE = "features.tflite"

# Site classes: (cell colour, cell radius). "blast" and "normal" are easy to tell apart; "look-alike-*" are not.
SEPARABLE = {"blast": ((60, 50, 175), 11), "normal": ((185, 80, 95), 5)}
BASE_NAMED = {"Benign": ((185, 80, 95), 5), "Pre": ((60, 50, 175), 11), "Pro": ((120, 40, 120), 16)}
ALIKE = {"blast": ((130, 60, 150), 8), "normal": ((130, 60, 150), 8)}
SITE_CLASSES_JSON = {
    "classes": {
        "blast": {"display_name": "Blast (site)", "malignant": True, "severity": 3, "description": "Blasts here."},
        "normal": {"display_name": "Normal lymphocyte (site)", "malignant": False, "severity": 0, "description": ""},
    }
}


def tiny_conv_int8(folder: Path, size: int, outputs: str, seed: int = 0) -> bytes:
    """A two-convolution int8 model at ``size`` px: ``outputs`` "classifier" gives ``logits`` (one per CLASSES)
    and ``embedding``; "features" gives one output ``features``. uint8 raw RGB in, as the bundle's models."""
    import keras

    from convert.quantize import convert_int8, export_saved_model

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 5, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(FEATURE_DIMENSIONS, 3, strides=2, activation="relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    if outputs == "features":
        model = keras.Model(inputs, {"features": pooled})
    else:
        model = keras.Model(inputs, {"logits": keras.layers.Dense(len(CLASSES), name="logits")(pooled),
                                     "embedding": pooled})  # fmt: skip
    saved = export_saved_model(model, size, folder / f"saved-{outputs}")
    images = [smear_like(i, colour, radius, 72) for i, (colour, radius) in
              enumerate(list(SEPARABLE.values()) * 8 + list(BASE_NAMED.values()) * 4)]  # fmt: skip
    return convert_int8(saved, np.stack([model_pixels(im, size) for im in images]))


def features_section(tflite: bytes) -> dict:
    """The card's ``features`` section for the tiny extractor, as conversion writes it for EfficientNet-Lite0."""
    return {
        "file": FEATURES_FILE,
        "sha256": sha256_of(tflite),
        "architecture": "two-convolution test network (random weights)",
        "weights": {"package": "none: random, seeded"},
        "input": {"height": FEATURE_SIZE, "width": FEATURE_SIZE, "dtype": "uint8", "normalisation": "inside"},
        "output": {"name": "features", "dimensions": FEATURE_DIMENSIONS},
        "quantization": {},
        "verification": {},
    }


def write_site_base(folder: Path, work: Path) -> Path:
    """A base bundle with model.tflite (logits + embedding), features.tflite and a colour_reference, at ``folder``."""
    classifier = tiny_conv_int8(work, SIZE, "classifier")
    extractor = tiny_conv_int8(work, FEATURE_SIZE, "features", seed=1)
    reference = colour_reference(np.stack([model_pixels(im, SIZE) for im in smears(100, 40)]))
    write_bundle(folder, classifier, {"name": "site-base", "features": features_section(extractor),
                                      "colour_reference": reference})  # fmt: skip
    (folder / FEATURES_FILE).write_bytes(extractor)
    return folder


def make_site(
    root: Path, styles: dict, per_class: int | dict[str, int], seed: int = 0, classes_json: dict | None = None
) -> Path:
    """SITE_DATA: one folder per class of smear-like images in the class's style, an optional classes.json."""
    for index, (name, (colour, radius)) in enumerate(styles.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        count = per_class[name] if isinstance(per_class, dict) else per_class
        for i in range(count):
            smear_like(seed * 100_000 + index * 1000 + i, colour, radius, 80).save(folder / f"{name}-{i:03d}.png")
    if classes_json is not None:
        (root / "classes.json").write_text(json.dumps(classes_json))
    return root
