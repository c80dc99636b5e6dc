"""Drift (convert/drift.py) of the committed default bundle against its float model, on the real test split."""

from __future__ import annotations

import numpy as np
import pytest

from convert.gate import Thresholds, evaluate
from tests.factories import DEFAULT_RUN, PROJECT_ROOT, REAL_DATA

DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"


@pytest.fixture(scope="module")
def default_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The default run's float model, its test images and labels, and its exported SavedModel."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA} (it is never committed)")

    from convert.drift import keras_logits, outputs
    from convert.inputs import read_run
    from convert.quantize import export_saved_model
    from smearscope_core.manifest import load_images
    from train.model import load_float_model

    run = read_run(DEFAULT_RUN)
    rows = run.split("test")
    images, labels = load_images(REAL_DATA, rows, run.image_size, run.class_names)
    model = load_float_model(run.model_path)
    return {
        "run": run,
        "rows": rows,
        "images": images,
        "labels": labels,
        "float": outputs(keras_logits(model, images), run.temperature),
        "saved": export_saved_model(model, run.image_size, tmp_path_factory.mktemp("default-sm")),
    }


def _drift_against_float(reference: dict, tflite: bytes) -> dict:
    from convert.drift import compare, outputs, tflite_logits

    run = reference["run"]
    candidate = outputs(tflite_logits(tflite, reference["images"]), run.temperature)
    paths = [r.path for r in reference["rows"]]
    return compare(reference["labels"], reference["float"], candidate, run.class_names, run.malignant, paths)


@pytest.mark.slow
@pytest.mark.real_data
def test_committed_default_bundle_still_passes_its_own_gate(default_reference: dict) -> None:
    """The shipped model.tflite, re-run on the real test split, reproduces its card and passes its gate."""
    from edge_app.bundle import load_bundle

    bundle = load_bundle(DEFAULT_BUNDLE)  # sha256 checked against the card
    card = bundle.card
    assert (
        card["training"]["dataset"]["manifest_sha256"]
        == default_reference["run"].card["training"]["dataset"]["manifest_sha256"]
    )
    drift = _drift_against_float(default_reference, bundle.model_path.read_bytes())
    gate = evaluate(
        drift, Thresholds(**card["drift"]["gate"]["thresholds"]), integer_only=card["tflite"]["integer_only"]
    )
    assert gate.passed, gate.sentence
    assert drift["accuracy"]["int8"] == pytest.approx(card["metrics"]["int8_test"]["accuracy"])
    assert drift["agreement"] == pytest.approx(card["drift"]["agreement"])
    # the target for the shipped default
    assert drift["agreement"] >= 0.995 and drift["accuracy"]["delta_points"] >= -0.5


@pytest.mark.slow
@pytest.mark.real_data
def test_unrepresentative_calibration_fails_the_gate(default_reference: dict) -> None:
    """Calibrating on random noise instead of smears leaves the activation ranges wrong: the gate must catch it.

    Quantized as conversion quantizes the default (its colour-standardisation layer in float). Blank grey
    images, the old version of this test, give that layer zero variance and LiteRT aborts the whole process
    when it allocates such a model; conversion always calibrates on train images, never on blank ones.
    """
    from convert.debug import LayerDebugger
    from train.model import COLOUR_LAYER

    size = default_reference["run"].image_size
    noise = np.random.default_rng(0).integers(0, 256, (16, size, size, 3)).astype(np.uint8)
    debugger = LayerDebugger(default_reference["saved"], noise, noise[:1])
    colour_ops = [layer["tensor_name"] for layer in debugger.layer_report() if COLOUR_LAYER in layer["tensor_name"]]
    drift = _drift_against_float(default_reference, debugger.selective_model(colour_ops))
    gate = evaluate(drift, Thresholds())
    assert not gate.passed
    assert "top-1 agreement" in gate.sentence and "(--min-agreement)" in gate.sentence
