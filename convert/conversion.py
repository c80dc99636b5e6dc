"""One conversion: run folder -> float32 + int8 TFLite -> op check -> drift on test -> gate -> bundle.

Progress goes to stdout, one line per step with the elapsed time. The outcome is a ``Outcome``;
the CLI turns it into an exit status.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score

from convert import ConversionError, InputError
from convert.bundle import (
    REJECTED_MODEL_FILE,
    check_output_folder,
    default_float_path,
    write_bundle,
)
from convert.drift import compare, keras_logits, outputs, per_image, tflite_logits
from convert.gate import GateResult, Thresholds, evaluate
from convert.inputs import RunFolder, check_images, class_counts, read_run, stratified_sample
from convert.inspect_ops import ModelInspection, inspect_model, integer_only_problem
from convert.quiet import quiet_native_stderr
from convert.report import HTML_FILE, JSON_FILE, write_reports
from smearscope_core.files import TFLITE_FILE, sha256_of
from smearscope_core.manifest import load_images

CARD_METRIC_KEYS = ("n", "accuracy", "macro", "per_class", "roc_auc_ovr_macro", "confusion_matrix", "screening")


@dataclass
class ConvertConfig:
    run: Path
    out: Path
    data: Path
    float_out: Path | None = None
    representative_size: int = 200
    seed: int = 42
    thresholds: Thresholds = field(default_factory=Thresholds)
    allow_float_ops: bool = False
    float_layers: int = 0
    xnnpack_hard_swish: bool = False  # (x / 6) * relu6(x + 3): faster int8 on XNNPACK, see docs/performance.md
    debug_layers: bool = False  # the per-layer report also runs by itself when the gate fails
    debug_samples: int = 50
    num_threads: int = 1

    def validate(self) -> None:
        if self.representative_size < 1:
            raise InputError("--representative-size must be at least 1.")
        if not 0.0 <= self.thresholds.min_agreement_percent <= 100.0:
            raise InputError("--min-agreement is a percentage between 0 and 100.")
        if self.thresholds.max_accuracy_drop_points < 0 or self.thresholds.max_recall_drop_points < 0:
            raise InputError("--max-accuracy-drop and --max-recall-drop are percentage points, 0 or more.")
        if self.float_layers < 0:
            raise InputError("--float-layers must be 0 or more.")
        if self.debug_samples < 1:
            raise InputError("--debug-samples must be at least 1.")


@dataclass
class Candidate:
    """One int8 model and everything measured on it."""

    content: bytes
    inspection: ModelInspection
    drift: dict
    per_image: list[dict]
    gate: GateResult
    float_layers: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    passed: bool
    sentence: str
    folder: Path  # the bundle, or the rejected candidate's folder
    float_path: Path
    card: dict


class Progress:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._step = self.started

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", flush=True)

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - self._step, 2)
        self._step = now
        return self.timings[name]


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from edge_app.runtime import runtime_version

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": runtime_version("ai-edge-litert"),
    }


def _load_keras(run: RunFolder) -> object:
    import keras

    try:
        model = keras.saving.load_model(run.model_path, compile=False)
    except Exception as error:  # noqa: BLE001 - any load failure means the file is unusable
        raise InputError(f"{run.model_path} cannot be loaded as a Keras model ({type(error).__name__}).") from None
    size, classes = run.image_size, len(run.class_names)
    if tuple(model.input_shape[1:]) != (size, size, 3):
        raise InputError(f"{run.model_path} takes input {model.input_shape}, but its card says {size}x{size} RGB.")
    if int(model.output_shape[-1]) != classes:
        raise InputError(
            f"{run.model_path} has {model.output_shape[-1]} outputs, but its card names {classes} classes."
        )
    return model


def _candidate(
    content: bytes,
    name: str,
    labels: np.ndarray,
    reference: object,
    images: np.ndarray,
    run: RunFolder,
    paths: list[str],
    config: ConvertConfig,
    allow_float: bool,
    progress: Progress,
) -> Candidate:
    """Op check + drift + gate for one int8 model."""
    inspection = inspect_model(content)
    progress.log(
        f"{name}: {len(content) / 1e6:.2f} MB, {len(inspection.ops)} ops, "
        + (
            "integer-only"
            if inspection.integer_only
            else f"{len(inspection.float_ops)} float ops ({inspection.float_summary()})"
        )
        + f"; input {inspection.inputs[0].dtype} scale {inspection.inputs[0].scale} zero point "
        f"{inspection.inputs[0].zero_point}; output {inspection.outputs[0].dtype}"
    )
    started = time.perf_counter()
    candidate = outputs(tflite_logits(content, images, config.num_threads), run.temperature)
    ms_per_image = (time.perf_counter() - started) * 1000.0 / max(len(images), 1)
    threshold = float(run.card["calibration"]["abstain_threshold"])
    drift = compare(labels, reference, candidate, run.class_names, run.malignant, paths, threshold)
    drift["ms_per_image"] = round(ms_per_image, 3)  # LiteRT on this machine, interpreter set-up included
    problem = integer_only_problem(inspection, allow_float)
    gate = evaluate(drift, config.thresholds, problem, allow_float, inspection.integer_only)
    progress.log(
        f"{name} on {drift['n']} test images: agreement {drift['agreement']:.2%}, accuracy "
        f"{drift['accuracy']['float']:.4f} -> {drift['accuracy']['int8']:.4f}, macro-F1 "
        f"{drift['macro_f1']['float']:.4f} -> {drift['macro_f1']['int8']:.4f}, calibrated probability "
        f"difference mean {drift['probability_difference']['mean_abs']:.4f} max "
        f"{drift['probability_difference']['max_abs']:.4f}; {drift['ms_per_image']:.2f} ms/image "
        f"({config.num_threads} thread{'s' if config.num_threads > 1 else ''})"
    )
    return Candidate(content, inspection, drift, per_image(labels, reference, candidate, run.class_names, paths), gate)


def _summary(candidate: Candidate) -> dict:
    drift = candidate.drift
    return {
        "float_layers": candidate.float_layers,
        "integer_only": candidate.inspection.integer_only,
        "float_op_count": len(candidate.inspection.float_ops),
        "size_bytes": len(candidate.content),
        "agreement": drift["agreement"],
        "accuracy": drift["accuracy"]["int8"],
        "macro_f1": drift["macro_f1"]["int8"],
        "max_recall_drop_points": max(-r["delta_points"] for r in drift["per_class_recall"].values()) + 0.0,
        "ms_per_image": drift["ms_per_image"],
        "probability_difference_mean": drift["probability_difference"]["mean_abs"],
        "probability_difference_max": drift["probability_difference"]["max_abs"],
        "gate": candidate.gate.sentence,
    }


def convert_run(config: ConvertConfig) -> Outcome:
    """Everything; raises InputError / ConversionError for the CLI to turn into one sentence."""
    config.validate()
    progress = Progress()
    run = read_run(config.run)
    check_output_folder(config.out, config.run)
    float_path = Path(config.float_out) if config.float_out else default_float_path(config.out)
    test_rows = sorted(run.split("test"), key=lambda r: r.path)
    rep_rows = stratified_sample(run.split("train"), config.representative_size, config.seed)
    check_images(config.data, test_rows + rep_rows)
    progress.log(
        f"run {run.path}: {run.card['name']}, {run.image_size}px, classes {run.class_names}, T={run.temperature:.3f}; "
        f"{len(test_rows)} test images and {len(rep_rows)} representative train images verified (sha256)"
    )
    size = run.image_size
    rep_images, _ = load_images(config.data, rep_rows, size, run.class_names)
    test_images, labels = load_images(config.data, test_rows, size, run.class_names)
    paths = [r.path for r in test_rows]
    progress.mark("load_images")

    with quiet_native_stderr():  # TensorFlow's oneDNN / absl start-up lines
        from convert.quantize import convert_float, convert_int8, export_saved_model
        from train.model import delegate_friendly_twin

    model = _load_keras(run)
    export_model = model
    if config.xnnpack_hard_swish:  # hard-swish as ops XNNPACK runs in int8 (train/model.py), same logits
        try:
            export_model = delegate_friendly_twin(model, check=rep_images[:8])
        except ValueError as error:
            raise ConversionError(str(error)) from None
    progress.log(f"loaded {run.model_path.name}; exporting a batch-1 SavedModel and converting to float32 TFLite")
    with tempfile.TemporaryDirectory(prefix="smearscope-convert-") as workdir:
        saved_model = export_saved_model(export_model, size, Path(workdir) / "saved_model")
        float_content = convert_float(saved_model)
        progress.mark("export_and_float_conversion")
        progress.log(
            f"float32 TFLite {len(float_content) / 1e6:.2f} MB; int8 calibration on {len(rep_images)} train images "
            f"(stratified: {class_counts(rep_rows, run.class_names)})"
        )
        int8_content = convert_int8(saved_model, rep_images)
        progress.mark("int8_conversion")

        reference = outputs(keras_logits(model, test_images), run.temperature)
        started = time.perf_counter()
        float_tflite = tflite_logits(float_content, test_images, config.num_threads)
        float_check = {
            "ms_per_image": round((time.perf_counter() - started) * 1000.0 / len(test_images), 3),
            "max_abs_logit_difference": float(np.abs(float_tflite - reference.logits).max()),
            "top1_agreement": float(accuracy_score(reference.logits.argmax(1), float_tflite.argmax(1))),
        }
        progress.log(
            f"float32 TFLite vs Keras: max |logit difference| {float_check['max_abs_logit_difference']:.2e} "
            f"(the conversion itself; quantization comes next)"
        )
        allow = config.allow_float_ops or config.float_layers > 0
        full = _candidate(
            int8_content, "int8", labels, reference, test_images, run, paths, config, config.allow_float_ops, progress
        )
        progress.mark("evaluation")
        chosen, layers, remedy = full, None, None
        if config.debug_layers or config.float_layers > 0 or not full.gate.passed:
            layers, debugger = _layer_report(saved_model, rep_images, config, progress)
            if config.float_layers > 0 and debugger is None:
                raise ConversionError(f"--float-layers needs the per-layer report, which failed: {layers['error']}")
            if config.float_layers > 0:
                chosen, remedy = _remedy(
                    debugger, layers, full, labels, reference, test_images, run, paths, config, allow, progress
                )
    chosen_gate = chosen.gate
    progress.log(chosen_gate.sentence)
    timings = {**progress.timings, "total_seconds": round(time.perf_counter() - progress.started, 1)}

    float_path.parent.mkdir(parents=True, exist_ok=True)
    float_path.write_bytes(float_content)
    versions = _versions()
    card = extend_card(run, chosen, float_path, float_content, rep_rows, config, versions, timings, float_check)
    report = build_report(run, chosen, card, layers, remedy, versions, timings, float_check, float_content)
    folder = write_bundle(config.out, chosen.content, card, lambda f: write_reports(report, f), chosen_gate.passed)
    progress.log(
        f"wrote {'bundle' if chosen_gate.passed else 'REJECTED candidate'} {folder} "
        f"({TFLITE_FILE if chosen_gate.passed else REJECTED_MODEL_FILE}, card, {JSON_FILE}, {HTML_FILE}); "
        f"float32 reference {float_path} (not shipped)"
    )
    if not chosen_gate.passed and config.float_layers == 0 and layers and layers.get("layers"):
        progress.log(
            "the per-layer report lists the layers that lose most; retry with --float-layers N to keep the N worst "
            "in float (the model is then no longer integer-only)"
        )
    return Outcome(chosen_gate.passed, chosen_gate.sentence, folder, float_path, card)


def _layer_report(
    saved_model: Path, rep_images: np.ndarray, config: ConvertConfig, progress: Progress
) -> tuple[dict | None, object | None]:
    """Per-layer error report; on a debugger failure, a note instead (it must not hide the gate's verdict)."""
    from convert.debug import layer_report

    progress.log(
        f"per-layer quantization error (QuantizationDebugger) on {min(config.debug_samples, len(rep_images))} images"
    )
    try:
        debugger, report = layer_report(saved_model, rep_images, rep_images[: config.debug_samples])
    except ConversionError as error:
        progress.log(f"per-layer report unavailable: {error}")
        return {"error": str(error)}, None
    progress.mark("layer_report")
    worst = ", ".join(f"{layer['op']} {layer['rmse_over_scale']:.2f}" for layer in report.layers[:5])
    progress.log(f"per-layer report: {len(report.layers)} layers in {report.seconds:.1f}s; worst rmse/scale: {worst}")
    return report.as_dict(), debugger


def _remedy(
    debugger: object,
    layers: dict,
    full: Candidate,
    labels: np.ndarray,
    reference: object,
    test_images: np.ndarray,
    run: RunFolder,
    paths: list[str],
    config: ConvertConfig,
    allow: bool,
    progress: Progress,
) -> tuple[Candidate, dict]:
    """Keep the N worst layers in float; measure what it buys and what it costs against the full-integer model."""
    names = [layer["tensor_name"] for layer in layers["layers"][: config.float_layers]]
    progress.log(f"remedy: keeping the {len(names)} worst layers in float (--float-layers {config.float_layers})")
    started = time.perf_counter()
    content = debugger.selective_model(names)
    candidate = _candidate(
        content, "mixed int8/float", labels, reference, test_images, run, paths, config, allow, progress
    )
    candidate.float_layers = names
    progress.mark("remedy")
    remedy = {
        "float_layers": config.float_layers,
        "seconds": round(time.perf_counter() - started, 1),
        "full_integer": _summary(full),
        "with_float_layers": _summary(candidate),
        "cost": "not integer-only: float ops with QUANTIZE/DEQUANTIZE around them; larger file; slower on "
        "integer-only accelerators and unusable on int8-only NPUs",
    }
    return candidate, remedy


def _card_metrics(metrics: dict) -> dict:
    return {key: metrics[key] for key in CARD_METRIC_KEYS}


def extend_card(
    run: RunFolder,
    chosen: Candidate,
    float_path: Path,
    float_content: bytes,
    rep_rows: list,
    config: ConvertConfig,
    versions: dict,
    timings: dict,
    float_check: dict,
) -> dict:
    """The training card plus ``metrics.int8_test``, ``tflite`` and ``drift`` (documented in docs/model-card.md)."""
    card = copy.deepcopy(run.card)
    drift = chosen.drift
    card["metrics"]["int8_test"] = _card_metrics(drift["int8_metrics"])
    inspection = chosen.inspection
    card["tflite"] = {
        "file": TFLITE_FILE if chosen.gate.passed else REJECTED_MODEL_FILE,
        "sha256": sha256_of(chosen.content),
        "size_bytes": len(chosen.content),
        "quantization": "full-integer post-training int8"
        if inspection.integer_only
        else f"post-training int8 with {len(chosen.float_layers)} layers kept in float",
        "integer_only": inspection.integer_only,
        "input": {
            **inspection.inputs[0].as_dict(),
            "feed": "raw RGB pixel bytes after the preprocessing policy; real = (q - zero_point) * scale",
        },
        "output": {
            **inspection.outputs[0].as_dict(),
            "kind": "logits",
            "dequantize": "logits = (q - zero_point) * scale; "
            "probabilities = softmax(logits / calibration.temperature)",
        },
        "op_count": len(inspection.ops),
        "ops": inspection.op_counts,
        "float_ops": [op.name for op in inspection.float_ops],
        "float_layers": chosen.float_layers,
        "hard_swish": "(x / 6) * relu6(x + 3) as ADD/MUL ops" if config.xnnpack_hard_swish else "fused HARD_SWISH op",
        "representative_dataset": {
            "split": "train",
            "size": len(rep_rows),
            "per_class": class_counts(rep_rows, run.class_names),
            "selection": "stratified by class (largest remainder), deterministic",
            "seed": config.seed,
        },
        "float32_reference": {
            "file": float_path.name,
            "sha256": sha256_of(float_content),
            "size_bytes": len(float_content),
            "shipped": False,
        },
        "source_run": {
            "model_keras_sha256": sha256_of(run.model_path),
            "model_keras_size_bytes": run.model_path.stat().st_size,
        },
        "converter": {
            "tensorflow": versions["tensorflow"],
            "keras": versions["keras"],
            "method": "keras.Model.export (batch 1) -> tf.lite.TFLiteConverter.from_saved_model, "
            "Optimize.DEFAULT + representative dataset, uint8 input, int8 output",
        },
        "runtime": {"name": "ai-edge-litert", "version": versions["ai_edge_litert"]},
        "converted": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversion_seconds": timings["total_seconds"],
    }
    card["drift"] = {
        "split": "test",
        "reference": "float Keras model (model.keras), Keras predict",
        "candidate": "model.tflite through ai-edge-litert",
        **{k: drift[k] for k in ("n", "agreement", "disagreement_count", "accuracy", "macro_f1", "per_class_recall")},
        "ms_per_image": drift["ms_per_image"],
        "threads": config.num_threads,
        "screening": drift["screening"],
        "abstain": drift["abstain"],
        "probability_difference": drift["probability_difference"],
        "logit_difference": drift["logit_difference"],
        "disagreements": drift["disagreements"],
        "float32_tflite_vs_keras": float_check,
        "gate": chosen.gate.as_dict(),
        "report": {"json": JSON_FILE, "html": HTML_FILE},
    }
    return card


def build_report(
    run: RunFolder,
    chosen: Candidate,
    card: dict,
    layers: dict | None,
    remedy: dict | None,
    versions: dict,
    timings: dict,
    float_check: dict,
    float_content: bytes,
) -> dict:
    """Everything in drift_report.json (the HTML page is made from this alone)."""
    tflite = {**card["tflite"], "inspection": chosen.inspection.as_dict()}
    return {
        "model": card["name"],
        "created": card["tflite"]["converted"],
        "run": str(run.path),
        "classes": run.class_names,
        "temperature": run.temperature,
        "gate": chosen.gate.as_dict(),
        "drift": chosen.drift,
        "float32_tflite_vs_keras": float_check,
        "tflite": tflite,
        "float32_ops": inspect_model(float_content).op_counts,
        "sizes": {
            "int8_tflite": len(chosen.content),
            "float32_tflite": len(float_content),
            "keras": run.model_path.stat().st_size,
        },
        "layers": layers,
        "remedy": remedy,
        "versions": versions,
        "timings": timings,
        "per_image": chosen.per_image,
    }
