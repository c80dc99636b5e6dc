"""Whole conversions (convert/conversion.py through ``python -m convert``): the tiny trained run
(tests/conftest.py ``tiny_run``) into a bundle the app loads, a gate failure and its remedy, and the committed
default run on the real dataset."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from smearscope_core.errors import ExitCode
from smearscope_core.manifest import read_manifest
from smearscope_core.model_card import read_card
from tests.factories import DEFAULT_RUN, REAL_DATA, run_convert

LENIENT = ["--min-agreement", "0", "--max-accuracy-drop", "100", "--max-recall-drop", "100"]


@pytest.mark.slow
def test_cli_end_to_end_writes_a_bundle_the_app_loads(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from edge_app.bundle import load_bundle
    from edge_app.classify import Classifier
    from smearscope_core.imaging import model_pixels

    run, data = tiny_run
    out = tmp_path / "models" / "tiny"
    result = run_convert(
        "--run", str(run), "--out", str(out), "--data", str(data), "--representative-size", "30", *LENIENT
    )
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    assert "Gate passed" in result.stdout and "int8 calibration on 30 train images" in result.stdout
    assert {p.name for p in out.iterdir()} == {
        "model.tflite",
        "model_card.json",
        "drift_report.json",
        "drift_report.html",
    }
    float_file = tmp_path / "models" / "tiny-float32.tflite"
    assert float_file.is_file()  # beside the bundle, not in it

    card = read_card(out / "model_card.json")  # validates against the schema
    model_bytes = (out / "model.tflite").read_bytes()
    tflite, drift = card["tflite"], card["drift"]
    assert tflite["sha256"] == hashlib.sha256(model_bytes).hexdigest() and tflite["size_bytes"] == len(model_bytes)
    assert tflite["float32_reference"]["sha256"] == hashlib.sha256(float_file.read_bytes()).hexdigest()
    assert tflite["integer_only"] and tflite["float_ops"] == []
    assert (
        tflite["input"]["dtype"] == "uint8" and tflite["input"]["scale"] == 1.0 and tflite["input"]["zero_point"] == 0
    )
    assert tflite["output"]["dtype"] == "int8" and tflite["output"]["scale"] > 0
    assert tflite["converter"]["tensorflow"] and tflite["runtime"]["version"]
    assert tflite["representative_dataset"]["split"] == "train" and tflite["representative_dataset"]["size"] == 30
    assert card["schema_version"].startswith("1.")
    for key in ("n", "accuracy", "macro", "per_class", "confusion_matrix"):
        assert key in card["metrics"]["int8_test"]
    assert drift["gate"]["passed"] and drift["gate"]["thresholds"]["min_agreement_percent"] == 0.0
    assert set(drift["screening"]["int8"]) == {"sensitivity", "specificity"} and drift["screening"]["float"]
    assert drift["abstain"]["threshold"] == card["calibration"]["abstain_threshold"]
    assert drift["abstain"]["decisions_differ"] >= 0
    test_paths = sorted(r.path for r in read_manifest(run / "manifest.csv") if r.split == "test")
    assert drift["n"] == len(test_paths)  # exactly the manifest's test split

    report = json.loads((out / "drift_report.json").read_text())
    assert [row["path"] for row in report["per_image"]] == test_paths
    page = (out / "drift_report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Gate passed" in page
    assert not re.search(r"(?:src|href)=\"(?!data:)", page) and "<script" not in page  # self-contained

    bundle = load_bundle(out)  # the app's checks: schema, sha256
    classifier = Classifier(bundle)
    row = report["per_image"][0]
    probs = classifier.probabilities(model_pixels(data / row["path"], 32))
    np.testing.assert_allclose(probs, row["int8_probabilities"], atol=1e-5)  # drift measured the app's numbers


def hostile_run(tiny_run: tuple[Path, Path], folder: Path) -> Path:
    """The tiny run with a model int8 cannot represent: one activation carries the signal (blue minus red,
    a few units) next to a channel 10,000x larger, so per-tensor int8 rounds the signal away."""
    import keras

    run, _ = tiny_run
    shutil.copytree(run, folder)
    image = keras.Input((32, 32, 3), name="image")
    hidden = keras.layers.Dense(2, name="hostile")(keras.layers.GlobalAveragePooling2D()(image))
    model = keras.Model(image, keras.layers.Dense(3, name="logits")(hidden))
    model.get_layer("hostile").set_weights(
        [np.array([[-1, 100], [0, 100], [1, 100]], "float32"), np.zeros(2, "float32")]
    )
    model.get_layer("logits").set_weights([np.array([[1, -1, 0], [0, 0, 0]], "float32"), np.zeros(3, "float32")])
    model.save(folder / "model.keras")
    return folder


@pytest.mark.slow
def test_gate_failure_keeps_the_old_bundle_then_the_remedy_passes(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run = hostile_run(tiny_run, tmp_path / "hostile-run")
    data = tiny_run[1]
    out = tmp_path / "models" / "hostile"
    out.mkdir(parents=True)
    (out / "model.tflite").write_bytes(b"the previous, good model")
    (out / "model_card.json").write_text("{}")

    result = run_convert("--run", str(run), "--out", str(out), "--data", str(data))
    assert result.returncode == ExitCode.GATE_FAILED
    assert result.stderr.strip().startswith("Gate failed: top-1 agreement is ")
    assert result.stderr.strip().endswith("(--min-agreement).")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one sentence, no native log noise
    assert (out / "model.tflite").read_bytes() == b"the previous, good model"  # untouched
    rejected = tmp_path / "models" / "hostile.rejected"
    assert {p.name for p in rejected.iterdir()} == {
        "candidate.tflite",
        "candidate_model_card.json",
        "drift_report.json",
        "drift_report.html",
    }
    report = json.loads((rejected / "drift_report.json").read_text())
    assert not report["gate"]["passed"] and report["drift"]["disagreements"]
    assert read_card(rejected / "candidate_model_card.json")["tflite"]["file"] == "candidate.tflite"
    assert report["layers"]["layers"] and report["layers"]["seconds"] > 0  # per-layer report, automatic on failure
    assert "Per-layer quantization error" in (rejected / "drift_report.html").read_text()

    # the remedy: keep the worst layers in float; it passes, and says it is no longer integer-only. Here the
    # signal is lost in the activation between the two Dense layers, so both (and the pooling before them,
    # ranked first) must stay float: rmse/scale cannot see range-inflated tensors (docs/conversion.md).
    result = run_convert("--run", str(run), "--out", str(out), "--data", str(data), "--float-layers", "3")
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    card = read_card(out / "model_card.json")
    assert not card["tflite"]["integer_only"] and card["tflite"]["float_ops"]
    assert any("hostile" in name for name in card["tflite"]["float_layers"])
    assert card["drift"]["agreement"] == 1.0 and card["drift"]["gate"]["allow_float_ops"]
    remedy = json.loads((out / "drift_report.json").read_text())["remedy"]
    assert remedy["full_integer"]["agreement"] < 0.99 and remedy["with_float_layers"]["agreement"] == 1.0
    assert not rejected.exists()  # the stale candidate is gone once a bundle passes


# ---------------------------------------------------------------- the committed default run, on the real dataset


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)")
@pytest.mark.skipif(not (DEFAULT_RUN / "model_card.json").is_file(), reason="runs/default has no finished run")
def test_default_run_converts_and_passes_the_gate(tmp_path: Path) -> None:
    result = run_convert("--run", str(DEFAULT_RUN), "--out", str(tmp_path / "default"))
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    card = read_card(tmp_path / "default" / "model_card.json")
    assert card["tflite"]["integer_only"]
    assert card["drift"]["n"] == sum(card["training"]["dataset"]["split_counts"]["test"].values())
    assert card["drift"]["agreement"] >= 0.99
    assert card["metrics"]["int8_test"]["accuracy"] >= card["metrics"]["float_test"]["accuracy"] - 0.01
    assert card["tflite"]["size_bytes"] < 2_000_000
