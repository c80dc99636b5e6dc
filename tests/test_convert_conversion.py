"""Whole conversions (convert/conversion.py through ``python -m convert``): the tiny trained run
(tests/conftest.py ``tiny_run``) into a bundle the app loads, a gate failure and its remedy, the colour-robust
figures (a run with a colour target, a card without one), and the committed default run on the real dataset."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from smearscope_core.errors import ExitCode
from smearscope_core.manifest import read_manifest
from smearscope_core.model_card import ModelCardError, read_card, validate_card
from tests.factories import DEFAULT_RUN, PROJECT_ROOT, REAL_DATA, run_convert, valid_card

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
        "embedding_reference.npy",
    }
    float_file = tmp_path / "models" / "tiny-float32.tflite"
    assert float_file.is_file()  # beside the bundle, not in it

    card = read_card(out / "model_card.json")  # validates against the schema
    model_bytes = (out / "model.tflite").read_bytes()
    tflite, drift = card["tflite"], card["drift"]
    assert tflite["sha256"] == hashlib.sha256(model_bytes).hexdigest() and tflite["size_bytes"] == len(model_bytes)
    assert tflite["float32_reference"]["sha256"] == hashlib.sha256(float_file.read_bytes()).hexdigest()
    # int8 everywhere but the colour-standardisation layer (train/model.py), whose ops stay float by design
    assert not tflite["integer_only"] and tflite["float_layers"]
    assert all("colour_standardisation" in name for name in tflite["float_layers"])
    assert tflite["input"]["dtype"] == "float32"  # raw 0-255 pixels go into the float layer
    assert tflite["output"]["dtype"] == "int8" and tflite["output"]["scale"] > 0
    assert tflite["converter"]["tensorflow"] and tflite["runtime"]["version"]
    assert tflite["representative_dataset"]["split"] == "train" and tflite["representative_dataset"]["size"] == 30
    assert card["schema_version"].startswith("1.")
    # the embedding check: fitted on the int8 model's own embeddings, its reference file beside the model
    embedding = card["embedding_ood"]
    reference = (out / embedding["reference"]["file"]).read_bytes()
    assert embedding["reference"]["sha256"] == hashlib.sha256(reference).hexdigest()
    assert tflite["embedding_output"]["shape"] == [1, embedding["dimensions"]]
    assert tflite["output"]["shape"] == [1, len(card["classes"])]
    assert embedding["fitted_on"] == {"reference": "train", "threshold": "val", "model": "int8"}
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

    # training wrote shortcuts: both models on the colour-standardised test images, the float one reproducing
    # training's own figure (same model, images, target and temperature; Keras batches may move one image)
    robust, trained = report["drift"]["colour_robust"], card["shortcuts"]["colour_robust"]
    assert trained["int8_test"] == robust["int8"] and robust["float"]["n"] == trained["test"]["n"] == drift["n"]
    assert robust["float"]["accuracy"] == pytest.approx(trained["test"]["accuracy"], abs=1.01 / drift["n"])
    assert "<h2>Colour-robust figures</h2>" in page
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
        "embedding_reference.npy",
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
    # the hostile activation is also the model's embedding output, so it is kept float under the outputs' names
    names = card["tflite"]["float_layers"]
    assert any("global_average_pooling" in name for name in names), names
    assert sum(name.startswith("StatefulPartitionedCall") for name in names) == 2, names
    assert card["drift"]["agreement"] == 1.0 and card["drift"]["gate"]["allow_float_ops"]
    remedy = json.loads((out / "drift_report.json").read_text())["remedy"]
    assert remedy["full_integer"]["agreement"] < 0.99 and remedy["with_float_layers"]["agreement"] == 1.0
    assert not rejected.exists()  # the stale candidate is gone once a bundle passes


# ---------------------------------------------------------------- colour-robust figures (shortcuts.colour_target)


def colour_standardised_run(tiny_run: tuple[Path, Path], folder: Path) -> Path:
    """The tiny run as trained with ``--colour-standardise``, without training again: the same network with the
    colour layer first (train/model.py ``ColourStandardisation``, no weights of its own) carrying the run's
    weights; the card keeps training's ``shortcuts`` and says how this model normalises."""
    from train.card import NORMALIZATION
    from train.model import build_model, has_colour_standardisation, load_float_model

    run, _ = tiny_run
    shutil.copytree(run, folder)
    card = json.loads((run / "model_card.json").read_text())
    model = build_model(len(card["classes"]), card["input"]["height"], colour_standardise=True)
    model.set_weights(load_float_model(run / "model.keras").get_weights())
    assert has_colour_standardisation(model)
    model.save(folder / "model.keras")
    card["preprocessing"]["normalization"] = NORMALIZATION[True]
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    return folder


@pytest.mark.slow
def test_colour_standardised_run_gets_the_int8_colour_robust_figure(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run = colour_standardised_run(tiny_run, tmp_path / "colour-run")
    out = tmp_path / "models" / "colour"
    result = run_convert(
        "--run", str(run), "--out", str(out), "--data", str(tiny_run[1]), "--representative-size", "30", *LENIENT
    )
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]

    card = read_card(out / "model_card.json")  # validates against the schema
    shortcuts = json.loads((run / "model_card.json").read_text())["shortcuts"]
    robust = json.loads((out / "drift_report.json").read_text())["drift"]["colour_robust"]
    int8 = card["shortcuts"]["colour_robust"]["int8_test"]
    assert int8 == robust["int8"] and set(int8) == {"n", "accuracy", "macro_f1", "sensitivity", "specificity"}
    assert int8["n"] == card["drift"]["n"] and 0 <= int8["accuracy"] <= 1
    kept = {**shortcuts, "colour_robust": {**shortcuts["colour_robust"], "int8_test": int8}}
    assert card["shortcuts"] == kept  # training's section as it was, plus the int8 figure
    assert robust["colour_target"] == shortcuts["colour_target"] and robust["note"]
    assert robust["as_is"]["int8"]["accuracy"] == card["metrics"]["int8_test"]["accuracy"]
    assert set(robust) >= {"float", "int8", "as_is"}
    broken = copy.deepcopy(card)
    broken["shortcuts"]["colour_robust"]["int8_test"]["accuracy"] = 1.5
    with pytest.raises(ModelCardError):  # the schema checks the figure, not only its presence
        validate_card(broken)

    assert f"int8 accuracy {int8['accuracy']:.4f}" in result.stdout  # the one log line
    page = (out / "drift_report.html").read_text()
    assert "<h2>Colour-robust figures</h2>" in page and "not the photo session" in page
    assert page.index("Colour-robust figures") < page.index("<h2>Gate</h2>")


def test_a_card_without_shortcuts_gets_no_colour_robust_figures() -> None:
    """Runs trained before the shortcuts section (the committed runs/default): nothing measured, nothing written,
    and the drift report of such a run is byte for byte what it was."""
    from convert.config import ConvertConfig
    from convert.conversion import Candidate, Conversion
    from convert.inputs import RunFolder
    from convert.report import render_html

    card = valid_card()
    assert "shortcuts" not in card
    conversion = Conversion(ConvertConfig(run=DEFAULT_RUN, out=Path("unused")))
    conversion.run_folder = RunFolder(DEFAULT_RUN, card, DEFAULT_RUN / "model.keras", DEFAULT_RUN / "manifest.csv", [])
    conversion.chosen = Candidate(b"", None, {"n": 0}, [], None)  # no model, no images: it must not look
    conversion.colour_robust()
    assert conversion.chosen.drift == {"n": 0}

    bundle = PROJECT_ROOT / "edge_app" / "models" / "default"
    report = json.loads((bundle / "drift_report.json").read_text())
    assert render_html(report) == (bundle / "drift_report.html").read_text(encoding="utf-8")
    report["drift"].pop("colour_robust", None)
    assert "olour-robust" not in render_html(report)


# ---------------------------------------------------------------- the committed default run, on the real dataset


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)")
@pytest.mark.skipif(not (DEFAULT_RUN / "model_card.json").is_file(), reason="runs/default has no finished run")
def test_default_run_converts_and_passes_the_gate(tmp_path: Path) -> None:
    result = run_convert("--run", str(DEFAULT_RUN), "--out", str(tmp_path / "default"))
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    card = read_card(tmp_path / "default" / "model_card.json")
    floats = card["tflite"]["float_layers"]  # int8 but for the colour-standardisation layer
    assert card["tflite"]["integer_only"] or all("colour_standardisation" in name for name in floats)
    assert card["drift"]["n"] == sum(card["training"]["dataset"]["split_counts"]["test"].values())
    assert card["drift"]["agreement"] >= 0.99
    assert card["metrics"]["int8_test"]["accuracy"] >= card["metrics"]["float_test"]["accuracy"] - 0.01
    assert card["tflite"]["size_bytes"] < 2_000_000
