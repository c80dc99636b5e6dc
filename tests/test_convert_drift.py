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
    import keras

    from convert.drift import keras_logits, outputs
    from convert.inputs import read_run
    from convert.quantize import export_saved_model
    from smearscope_core.manifest import load_images

    run = read_run(DEFAULT_RUN)
    rows = run.split("test")
    images, labels = load_images(REAL_DATA, rows, run.image_size, run.class_names)
    model = keras.saving.load_model(run.model_path)
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
def test_constant_representative_data_fails_the_gate(default_reference: dict) -> None:
    """Calibrating on blank grey images leaves the activation ranges wrong: the gate must catch it."""
    from convert.quantize import convert_int8

    size = default_reference["run"].image_size
    constant = np.full((16, size, size, 3), 128, dtype=np.uint8)
    drift = _drift_against_float(default_reference, convert_int8(default_reference["saved"], constant))
    gate = evaluate(drift, Thresholds())
    assert not gate.passed
    assert "top-1 agreement" in gate.sentence and "(--min-agreement)" in gate.sentence
