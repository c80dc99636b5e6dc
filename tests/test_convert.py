"""Conversion stage (convert/): int8 conversion, op check, drift, gate, bundle and the CLI.

Fast tests use crafted numbers and crafted run folders; the slow ones train a tiny MobileNetV3 run
(32 px, 2 epochs, synthetic images) once per module and convert it for real.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convert import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK
from convert.__main__ import main
from convert.gate import Thresholds, evaluate
from convert.inputs import stratified_sample
from smearscope_core.manifest import ManifestRow, read_manifest, write_manifest
from smearscope_core.model_card import read_card
from tests.conftest import PROJECT_ROOT, REAL_DATA, make_dataset
from tests.test_model_card import valid_card

DEFAULT_RUN = PROJECT_ROOT / "runs" / "default"
LENIENT = ["--min-agreement", "0", "--max-accuracy-drop", "100", "--max-recall-drop", "100"]


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convert", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )


# ---------------------------------------------------------------- the gate, on crafted numbers


def crafted_drift(
    agreement: float = 1.0,
    accuracy: tuple[float, float] = (0.95, 0.95),
    recalls: dict[str, tuple[float, float]] | None = None,
    n: int = 400,
) -> dict:
    """The fields of convert.drift.compare's result that the gate reads (float, int8 pairs)."""
    recalls = recalls or {"Benign": (0.96, 0.96), "Pro": (0.94, 0.94)}
    return {
        "n": n,
        "agreement": agreement,
        "disagreement_count": round((1 - agreement) * n),
        "accuracy": {"float": accuracy[0], "int8": accuracy[1], "delta_points": (accuracy[1] - accuracy[0]) * 100},
        "per_class_recall": {
            name: {"float": f, "int8": i, "delta_points": (i - f) * 100} for name, (f, i) in recalls.items()
        },
    }


def test_gate_passes_within_the_default_thresholds() -> None:
    drift = crafted_drift(0.995, (0.95, 0.945), {"Benign": (0.96, 0.945), "Pro": (0.94, 0.95)})
    result = evaluate(drift, Thresholds())
    assert result.passed
    assert result.sentence.startswith("Gate passed:") and result.sentence.count(".") <= 8
    assert all(check["passed"] for check in result.checks)


def test_gate_thresholds_met_exactly_pass() -> None:
    # 0.99 agreement, a 1.00-point accuracy drop and a 2.00-point recall drop are all allowed
    drift = crafted_drift(0.99, (0.96, 0.95), {"Benign": (0.97, 0.95), "Pro": (0.9, 0.9)})
    assert evaluate(drift, Thresholds()).passed


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (
            crafted_drift(agreement=0.9825),
            r"^Gate failed: top-1 agreement is 98\.25% \(7 of 400 test images disagree\), below the 99\.00% "
            r"minimum \(--min-agreement\)\.$",
        ),
        (
            crafted_drift(accuracy=(0.95, 0.935)),
            r"^Gate failed: accuracy dropped 1\.50 points \(95\.00% float, 93\.50% int8\), more than the 1\.00 "
            r"allowed \(--max-accuracy-drop\)\.$",
        ),
        (
            crafted_drift(recalls={"Benign": (0.96, 0.96), "Pro": (0.94, 0.91)}),
            r"^Gate failed: Pro recall dropped 3\.00 points \(94\.00% float, 91\.00% int8\), more than the 2\.00 "
            r"allowed \(--max-recall-drop\)\.$",
        ),
    ],
)
def test_gate_fails_with_one_sentence_naming_the_threshold(drift: dict, expected: str) -> None:
    result = evaluate(drift, Thresholds())
    assert not result.passed
    assert re.match(expected, result.sentence), result.sentence


def test_gate_names_every_broken_threshold_in_one_sentence() -> None:
    drift = crafted_drift(0.9, (0.95, 0.9), {"Benign": (0.96, 0.90), "Pro": (0.94, 0.94)})
    sentence = evaluate(drift, Thresholds()).sentence
    assert sentence.startswith("Gate failed:") and sentence.endswith(".") and "\n" not in sentence
    for flag in ("--min-agreement", "--max-accuracy-drop", "--max-recall-drop"):
        assert flag in sentence
    assert "Pro recall" not in sentence  # only the broken class is named


def test_gate_thresholds_are_configurable() -> None:
    drift = crafted_drift(0.97, (0.95, 0.93), {"Benign": (0.96, 0.93)})
    assert not evaluate(drift, Thresholds()).passed
    assert evaluate(drift, Thresholds(96.0, 2.5, 3.5)).passed


def test_gate_fails_on_float_ops_unless_they_are_allowed() -> None:
    problem = "the model is not integer-only: 2 ops run in float (CONV_2D), and float ops were not allowed"
    failed = evaluate(crafted_drift(), Thresholds(), problem, allow_float_ops=False, integer_only=False)
    assert not failed.passed and failed.sentence == f"Gate failed: {problem}."
    allowed = evaluate(crafted_drift(), Thresholds(), None, allow_float_ops=True, integer_only=False)
    assert allowed.passed and "NOT integer-only" in allowed.sentence


# ---------------------------------------------------------------- representative sampling


def test_representative_sample_is_stratified_and_deterministic() -> None:
    rows = [
        ManifestRow(f"{c}/{i}.png", "0" * 64, c, "train", i)
        for c, k in (("A", 600), ("B", 300), ("C", 100))
        for i in range(k)
    ]
    sample = stratified_sample(rows, 200, seed=1)
    counts = {c: sum(r.class_name == c for r in sample) for c in "ABC"}
    assert counts == {"A": 120, "B": 60, "C": 20}
    assert sample == stratified_sample(list(reversed(rows)), 200, seed=1)
    assert sample != stratified_sample(rows, 200, seed=2)
    assert len(stratified_sample(rows, 5000, seed=1)) == len(rows)
    tiny = stratified_sample(rows, 3, seed=1)
    assert {r.class_name for r in tiny} == {"A", "B", "C"}  # every class at least once


# ---------------------------------------------------------------- the CLI on bad input


def crafted_run(folder: Path) -> Path:
    """A run folder whose card and manifest are valid (the model file is a placeholder, never loaded)."""
    folder.mkdir(parents=True)
    rows = [
        ManifestRow(f"{c}/{c}-{i}.png", "0" * 64, c, s, n)
        for n, (c, i, s) in enumerate((c, i, s) for c in ("A", "B") for i, s in enumerate(("train", "val", "test")))
    ]
    sha = write_manifest(rows, folder / "manifest.csv")
    card = valid_card()
    card["name"] = "crafted"
    card["classes"] = [
        {"id": 0, "name": "A", "display_name": "A", "malignant": False, "severity": 0, "description": ""},
        {"id": 1, "name": "B", "display_name": "B", "malignant": True, "severity": 2, "description": ""},
    ]
    card["input"] |= {"height": 32, "width": 32}
    card["training"] |= {"image_size": 32}
    card["training"]["dataset"] |= {"manifest": "manifest.csv", "manifest_sha256": sha}
    card["calibration"]["temperature"] = 1.0
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "model.keras").write_bytes(b"placeholder")
    return folder


def _run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_missing_run_folder_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    result = _convert("--run", str(tmp_path / "nope"), "--out", str(tmp_path / "bundle"))
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip() == f"error: The run folder {tmp_path / 'nope'} does not exist."
    assert "Traceback" not in result.stderr


def test_broken_card_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    (run / "model_card.json").write_text("{not json")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == EXIT_BAD_INPUT and "not valid JSON" in err and len(err.strip().splitlines()) == 1

    (run / "model_card.json").write_text(json.dumps({"schema_version": "1.0", "name": "x"}))
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == EXIT_BAD_INPUT and "Model card field" in err


def test_changed_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    with open(run / "manifest.csv", "a") as handle:
        handle.write(f"A/extra.png,{'0' * 64},A,test,99\n")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == EXIT_BAD_INPUT and "does not match its model card" in err


def test_missing_or_different_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    out = str(tmp_path / "bundle")
    code, err = _run_main(capsys, "--run", str(run), "--out", out, "--data", str(tmp_path / "no-data"))
    assert (
        code == EXIT_BAD_INPUT
        and err.strip()
        == f"error: The dataset folder {tmp_path / 'no-data'} does not exist (pass --data DATASET_ROOT)."
    )
    data = tmp_path / "data"
    for row in read_manifest(run / "manifest.csv"):
        (data / row.path).parent.mkdir(parents=True, exist_ok=True)
        (data / row.path).write_bytes(b"different bytes")
    code, err = _run_main(capsys, "--run", str(run), "--out", out, "--data", str(data))
    assert code == EXIT_BAD_INPUT and "differ from the manifest (sha256)" in err
    assert not (tmp_path / "bundle").exists()


def test_bad_flags_and_foreign_out_folder_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["--run", str(run)])  # no --out
    assert exit_info.value.code == EXIT_BAD_INPUT
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "b"), "--min-agreement", "150")
    assert code == EXIT_BAD_INPUT and "--min-agreement is a percentage" in err
    foreign = tmp_path / "somebody-elses-folder"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(foreign), "--data", str(tmp_path))
    assert code == EXIT_BAD_INPUT and "not part of a model bundle" in err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_gate_failure_exit_status_and_sentence(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import convert.pipeline
    from convert.pipeline import Outcome

    sentence = evaluate(crafted_drift(agreement=0.95), Thresholds()).sentence

    def fake_run(config: object) -> Outcome:
        return Outcome(False, sentence, Path("x.rejected"), Path("x-float32.tflite"), {})

    monkeypatch.setattr(convert.pipeline, "convert_run", fake_run)
    code, err = _run_main(capsys, "--run", "r", "--out", "o")
    assert code == EXIT_GATE_FAILED and err == sentence + "\n"


# ---------------------------------------------------------------- real conversions of a tiny trained run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real (if weak) MobileNetV3Small run folder written by train.run at 32 px; (run folder, dataset)."""
    from train.run import TrainConfig, train

    root = tmp_path_factory.mktemp("convert")
    data = make_dataset(root / "data", per_class=20)
    classes = {"Beta": {"malignant": True, "severity": 2}, "Gamma": {"malignant": True, "severity": 3}}
    (data / "classes.json").write_text(json.dumps({"classes": classes}))  # screening metrics need a malignant class
    train(TrainConfig(data=data, out=root / "run", image_size=32, epochs=2, batch_size=16, seed=3))
    return root / "run", data


@pytest.fixture(scope="module")
def converted(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    import keras

    from convert.inputs import read_run
    from convert.quantize import convert_float, convert_int8, export_saved_model
    from smearscope_core.manifest import load_images

    run_path, data = tiny_run
    run = read_run(run_path)
    images, _ = load_images(data, run.split("train"), run.image_size, run.class_names)
    saved = export_saved_model(keras.saving.load_model(run.model_path), run.image_size, tmp_path_factory.mktemp("sm"))
    return {"saved": saved, "images": images, "int8": convert_int8(saved, images), "float": convert_float(saved)}


@pytest.mark.slow
def test_int8_model_is_full_integer_with_raw_pixel_input(converted: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from convert.inspect_ops import inspect_model, integer_only_problem

    inspection = inspect_model(converted["int8"])
    assert inspection.integer_only, inspection.float_summary()
    assert integer_only_problem(inspection, allow_float=False) is None
    assert {"HARD_SWISH", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(inspection.op_counts)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(inspection.op_counts)  # fixed batch of one
    assert not {"FLOAT32", "FLOAT16"} & set(inspection.tensor_types)
    (inp,), (out,) = inspection.inputs, inspection.outputs
    assert (inp.dtype, inp.scale, inp.zero_point, inp.shape) == ("uint8", 1.0, 0, [1, 32, 32, 3])
    assert out.dtype == "int8" and out.scale > 0 and out.shape == [1, 3]

    interpreter = Interpreter(model_content=converted["int8"])  # the app's runtime agrees
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (1.0, 0)
    interpreter.set_tensor(detail["index"], converted["images"][:1])  # raw pixel bytes straight in
    interpreter.invoke()


@pytest.mark.slow
def test_op_check_fails_on_a_float_fallback_unless_allowed(converted: dict) -> None:
    from convert.debug import LayerDebugger
    from convert.inspect_ops import inspect_model, integer_only_problem

    float_model = inspect_model(converted["float"])
    assert not float_model.integer_only and float_model.inputs[0].dtype == "float32"

    debugger = LayerDebugger(converted["saved"], converted["images"], converted["images"][:8])
    layers = debugger.layer_report()
    assert layers and layers[0]["rmse_over_scale"] >= layers[-1]["rmse_over_scale"]  # worst first
    mixed = inspect_model(debugger.selective_model([layers[0]["tensor_name"]]))
    assert not mixed.integer_only
    assert {"QUANTIZE", "DEQUANTIZE"} & {op.name for op in mixed.float_ops}
    assert mixed.inputs[0].dtype == "uint8"  # the bundle's raw-pixel input survives selective quantization
    problem = integer_only_problem(mixed, allow_float=False)
    assert problem is not None and "--allow-float-ops" in problem and "ops run in float" in problem
    assert integer_only_problem(mixed, allow_float=True) is None


@pytest.mark.slow
def test_cli_end_to_end_writes_a_bundle_the_app_loads(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    from edge_app.bundle import load_bundle
    from edge_app.classify import Classifier
    from smearscope_core.imaging import model_pixels

    run, data = tiny_run
    out = tmp_path / "models" / "tiny"
    result = _convert(
        "--run", str(run), "--out", str(out), "--data", str(data), "--representative-size", "30", *LENIENT
    )
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
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

    result = _convert("--run", str(run), "--out", str(out), "--data", str(data))
    assert result.returncode == EXIT_GATE_FAILED
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
    result = _convert("--run", str(run), "--out", str(out), "--data", str(data), "--float-layers", "3")
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
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
    result = _convert("--run", str(DEFAULT_RUN), "--out", str(tmp_path / "default"))
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
    card = read_card(tmp_path / "default" / "model_card.json")
    assert card["tflite"]["integer_only"]
    assert card["drift"]["n"] == sum(card["training"]["dataset"]["split_counts"]["test"].values())
    assert card["drift"]["agreement"] >= 0.99
    assert card["metrics"]["int8_test"]["accuracy"] >= card["metrics"]["float_test"]["accuracy"] - 0.01
    assert card["tflite"]["size_bytes"] < 2_000_000


# ---------------------------------------------------------------- the committed default bundle, re-evaluated

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


@pytest.mark.slow
def test_xnnpack_hard_swish_export_has_no_hard_swish_op_and_one_partition(
    tiny_run: tuple[Path, Path], converted: dict, tmp_path: Path
) -> None:
    """The opt-in rebuild computes the same logits and leaves XNNPACK one partition instead of many."""
    import keras

    from convert.quantize import convert_int8, export_saved_model
    from edge_app.runtime import TFLiteModel
    from train.model import delegate_friendly_twin

    run_path, _ = tiny_run
    model = keras.saving.load_model(run_path / "model.keras")
    twin = delegate_friendly_twin(model, check=converted["images"][:4])  # raises if the logits differ
    size = model.input_shape[1]
    content = convert_int8(export_saved_model(twin, size, tmp_path / "sm"), converted["images"])

    def ops(tflite: bytes) -> list[str]:
        return [op["op_name"] for op in TFLiteModel(content=tflite).interpreter._get_ops_details()]

    assert "HARD_SWISH" in ops(converted["int8"]) and ops(converted["int8"]).count("DELEGATE") > 1
    assert "HARD_SWISH" not in ops(content) and ops(content).count("DELEGATE") == 1
