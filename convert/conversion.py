"""One conversion: run folder -> float32 + int8 TFLite -> op check -> drift on test -> gate -> bundle.

``Conversion(config).run()`` holds the conversion's state on the object (the config, the run folder,
the images, the models, the candidates, the card and the report) the way a step-by-step exporter does,
and each step is a method that reads what the earlier ones left on ``self``. Progress goes to stdout
through the shared console style (``smearscope_core.console``), one line per step with the elapsed
time; the per-step seconds are kept for the report. The outcome is an ``Outcome``; the CLI turns it
into an exit status. A run whose card has a colour target (``shortcuts.colour_target``) also gets both
models' colour-robust figures (``colour_robust``): in the drift report and as the bundle card's
``shortcuts.colour_robust.int8_test``. Unless ``--features none``, the bundle also gets the ImageNet feature
extractor ``features.tflite`` and the card's ``features`` section (convert/features.py; cached between runs).
"""

from __future__ import annotations

import copy
import io
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score

from convert import ConversionError
from convert.bundle import (
    REJECTED_MODEL_FILE,
    check_output_folder,
    default_float_path,
    write_bundle,
)
from convert.config import NO_FEATURES, ConvertConfig
from convert.drift import (
    ModelOutputs,
    colour_robust_drift,
    colour_target,
    compare,
    keras_logits,
    outputs,
    per_image,
    tflite_logits,
)
from convert.features import SECTION as FEATURES_SECTION
from convert.features import checkpoint_path, feature_extractor
from convert.gate import GateResult, evaluate
from convert.inputs import RunFolder, check_images, class_counts, read_run, stratified_sample
from convert.inspect_ops import ModelInspection, TensorIO, inspect_model, integer_only_problem
from convert.quiet import quiet_native_stderr
from convert.report import HTML_FILE, JSON_FILE, write_reports
from smearscope_core.console import logger
from smearscope_core.embedding_ood import REFERENCE_FILE, fit_embedding_ood
from smearscope_core.embedding_ood import SECTION as EMBEDDING_SECTION
from smearscope_core.errors import InputError
from smearscope_core.files import FEATURES_FILE, TFLITE_FILE, sha256_of
from smearscope_core.manifest import ManifestRow, load_images
from smearscope_core.model_card import SCHEMA_VERSION

STAGE = "convert"
CARD_METRIC_KEYS = ("n", "accuracy", "macro", "per_class", "roc_auc_ovr_macro", "confusion_matrix", "screening")
CARD_DRIFT_KEYS = ("n", "agreement", "disagreement_count", "accuracy", "macro_f1", "per_class_recall")


@dataclass
class Candidate:
    """One int8 model and everything measured on it."""

    content: bytes
    inspection: ModelInspection
    drift: dict
    per_image: list[dict]
    gate: GateResult
    float_layers: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """The figures the remedy compares, full-integer against with float layers."""
        drift = self.drift
        return {
            "float_layers": self.float_layers,
            "integer_only": self.inspection.integer_only,
            "float_op_count": len(self.inspection.float_ops),
            "size_bytes": len(self.content),
            "agreement": drift["agreement"],
            "accuracy": drift["accuracy"]["int8"],
            "macro_f1": drift["macro_f1"]["int8"],
            "max_recall_drop_points": max(-r["delta_points"] for r in drift["per_class_recall"].values()) + 0.0,
            "ms_per_image": drift["ms_per_image"],
            "probability_difference_mean": drift["probability_difference"]["mean_abs"],
            "probability_difference_max": drift["probability_difference"]["max_abs"],
            "gate": self.gate.sentence,
        }


@dataclass
class Outcome:
    passed: bool
    sentence: str
    folder: Path  # the bundle, or the rejected candidate's folder
    float_path: Path
    card: dict


class StepTimer:
    """Seconds spent in each step (``mark`` ends one) and in all: the report's ``timings``."""

    def __init__(self) -> None:
        self.started = self._step = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - self._step, 2)
        self._step = now
        return self.timings[name]

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from edge_app.runtime import runtime_version

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": runtime_version("ai-edge-litert"),
    }


class Conversion:
    """One conversion of a training run folder into a model bundle (or a rejected candidate).

    ``run()`` calls the steps in order; each reads the state the earlier ones set on ``self`` and
    raises ``InputError`` / ``ConversionError`` (one sentence) for the CLI to report.
    """

    # set by load_inputs
    run_folder: RunFolder
    float_path: Path
    test_rows: list[ManifestRow]
    rep_rows: list[ManifestRow]
    rep_images: np.ndarray
    test_images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    # set by load_model
    model: object  # the float Keras model: the reference
    export_model: object  # what is converted: the model, or its XNNPACK-friendly twin
    # set by export_float, int8_candidate and float_reference
    saved_model: Path  # a temporary SavedModel, only while run() converts
    float_content: bytes
    int8_content: bytes
    reference: ModelOutputs
    float_check: dict
    # set by the evaluation, layer_report and apply_remedy
    full: Candidate
    chosen: Candidate
    layers: dict | None = None
    debugger: object | None = None
    float_by_design: list[str]  # tensor names kept in float on purpose (the colour-standardisation layer)
    remedy: dict | None = None
    # set by embedding_calibration
    embedding_section: dict
    embedding_reference: bytes  # the .npy file's bytes
    # set by feature_extractor (None with --features none)
    features_content: bytes | None = None
    features_section: dict | None = None
    # set at the end of run() and by build_card / build_report
    timings: dict
    versions: dict
    card: dict
    report: dict

    def __init__(self, config: ConvertConfig) -> None:
        self.config = config
        self.timer = StepTimer()  # started again by run()
        self.float_by_design = []

    def log(self, message: str) -> None:
        logger(STAGE).info(message)

    def run(self) -> Outcome:
        """Everything; raises InputError / ConversionError for the CLI to turn into one sentence."""
        config = self.config
        config.validate()
        self.timer = StepTimer()
        self.layers = self.debugger = self.remedy = None
        self.features_content = self.features_section = None
        self.load_inputs()
        if config.features != NO_FEATURES:  # a missing weights package is bad input: say so before converting
            checkpoint_path()
        self.load_model()
        with tempfile.TemporaryDirectory(prefix="smearscope-convert-") as workdir:
            self.export_float(Path(workdir))
            self.int8_candidate()
            self.float_reference()
            self.full = self.chosen = self.evaluate(
                self.int8_content, "int8", config.allow_float_ops or bool(self.float_by_design)
            )
            self.chosen.float_layers = list(self.float_by_design)
            self.timer.mark("evaluation")
            if config.debug_layers or config.float_layers > 0 or not self.full.gate.passed:
                self.layer_report()
                if config.float_layers > 0 and self.debugger is None:
                    raise ConversionError(
                        f"--float-layers needs the per-layer report, which failed: {self.layers['error']}"
                    )
                if config.float_layers > 0:
                    self.apply_remedy()
        self.colour_robust()
        self.embedding_calibration()
        self.feature_extractor()
        gate = self.chosen.gate
        self.log(gate.sentence)
        self.timings = {**self.timer.timings, "total_seconds": self.timer.total()}

        self.write_float_reference()
        self.versions = _versions()
        self.build_card()
        self.build_report()
        folder = self.write_bundle()
        self.log(
            f"wrote {'bundle' if gate.passed else 'REJECTED candidate'} {folder} "
            f"({TFLITE_FILE if gate.passed else REJECTED_MODEL_FILE}, card, {JSON_FILE}, {HTML_FILE}"
            f"{', ' + FEATURES_FILE if self.features_content is not None else ''}); "
            f"float32 reference {self.float_path} (not shipped)"
        )
        if not gate.passed and config.float_layers == 0 and self.layers and self.layers.get("layers"):
            self.log(
                "the per-layer report lists the layers that lose most; retry with --float-layers N to keep the N "
                "worst in float (the model is then no longer integer-only)"
            )
        return Outcome(gate.passed, gate.sentence, folder, self.float_path, self.card)

    def load_inputs(self) -> None:
        """The run folder, the output folder's check, and the verified test and representative images."""
        config = self.config
        run = self.run_folder = read_run(config.run)
        check_output_folder(config.out, config.run)
        self.float_path = Path(config.float_out) if config.float_out else default_float_path(config.out)
        self.test_rows = sorted(run.split("test"), key=lambda r: r.path)
        self.rep_rows = stratified_sample(run.split("train"), config.representative_size, config.seed)
        check_images(config.data, self.test_rows + self.rep_rows)
        self.log(
            f"run {run.path}: {run.card['name']}, {run.image_size}px, classes {run.class_names}, "
            f"T={run.temperature:.3f}; {len(self.test_rows)} test images and {len(self.rep_rows)} representative "
            "train images verified (sha256)"
        )
        self.rep_images, _ = load_images(config.data, self.rep_rows, run.image_size, run.class_names)
        self.test_images, self.labels = load_images(config.data, self.test_rows, run.image_size, run.class_names)
        self.paths = [r.path for r in self.test_rows]
        self.timer.mark("load_images")

    def load_model(self) -> None:
        """The float Keras model, checked against the card, and the model to export."""
        with quiet_native_stderr():  # TensorFlow's oneDNN / absl start-up lines
            import convert.quantize  # noqa: F401 - TensorFlow's import, with its native log hidden
            from train.model import delegate_friendly_twin, load_float_model, with_embedding

        run = self.run_folder
        try:
            model = load_float_model(run.model_path)
        except Exception as error:  # noqa: BLE001 - any load failure means the file is unusable
            raise InputError(f"{run.model_path} cannot be loaded as a Keras model ({type(error).__name__}).") from None
        size, classes = run.image_size, len(run.class_names)
        if tuple(model.input_shape[1:]) != (size, size, 3):
            raise InputError(f"{run.model_path} takes input {model.input_shape}, but its card says {size}x{size} RGB.")
        if int(model.output_shape[-1]) != classes:
            raise InputError(
                f"{run.model_path} has {model.output_shape[-1]} outputs, but its card names {classes} classes."
            )
        self.model = self.export_model = model
        if self.config.xnnpack_hard_swish:  # hard-swish as ops XNNPACK runs in int8 (train/model.py), same logits
            try:
                self.export_model = delegate_friendly_twin(model, check=self.rep_images[:8])
            except ValueError as error:
                raise ConversionError(str(error)) from None
        self.export_model = with_embedding(self.export_model)  # logits and the embedding, by name
        self.log(f"loaded {run.model_path.name}; exporting a batch-1 SavedModel and converting to float32 TFLite")

    def export_float(self, workdir: Path) -> None:
        """A batch-1 SavedModel in ``workdir`` and its plain float32 TFLite conversion."""
        from convert.quantize import convert_float, export_saved_model

        self.saved_model = export_saved_model(self.export_model, self.run_folder.image_size, workdir / "saved_model")
        self.float_content = convert_float(self.saved_model)
        self.timer.mark("export_and_float_conversion")

    def int8_candidate(self) -> None:
        """Full-integer int8 conversion, calibrated on the representative train images."""
        from convert.quantize import convert_int8

        self.log(
            f"float32 TFLite {len(self.float_content) / 1e6:.2f} MB; int8 calibration on {len(self.rep_images)} "
            f"train images (stratified: {class_counts(self.rep_rows, self.run_folder.class_names)})"
        )
        from train.model import has_colour_standardisation

        self.float_by_design = []
        if has_colour_standardisation(self.model):
            self.colour_layer_in_float()
        else:
            self.int8_content = convert_int8(self.saved_model, self.rep_images)
        self.timer.mark("int8_conversion")

    def colour_layer_in_float(self) -> None:
        """Int8 everywhere but the colour-standardisation layer, whose ops stay float.

        That layer computes each image's own channel means and variances (train/model.py); their range is
        far wider than any one image's, and in int8 they are destroyed (measured on the default model:
        28% top-1 agreement with the float model). Its nine small ops in float cost little and keep the
        rest of the network int8 (measured: 99.3% agreement). The card lists them in ``tflite.float_layers``.
        """
        from convert.debug import LayerDebugger
        from train.model import COLOUR_LAYER

        with quiet_native_stderr():
            debugger = LayerDebugger(self.saved_model, self.rep_images, self.rep_images[:1])
            names = [layer["tensor_name"] for layer in debugger.layer_report() if COLOUR_LAYER in layer["tensor_name"]]
        self.float_by_design = names
        self.int8_content = debugger.selective_model(names)
        self.log(f"int8 with the colour-standardisation layer's {len(names)} ops kept in float (by design)")

    def float_reference(self) -> None:
        """The Keras model's outputs on the test images, and how far the float32 TFLite model is from them."""
        self.reference = outputs(keras_logits(self.model, self.test_images), self.run_folder.temperature)
        started = time.perf_counter()
        float_tflite = tflite_logits(self.float_content, self.test_images, self.config.num_threads, "float32 TFLite")
        self.float_check = {
            "ms_per_image": round((time.perf_counter() - started) * 1000.0 / len(self.test_images), 3),
            "max_abs_logit_difference": float(np.abs(float_tflite - self.reference.logits).max()),
            "top1_agreement": float(accuracy_score(self.reference.logits.argmax(1), float_tflite.argmax(1))),
        }
        self.log(
            f"float32 TFLite vs Keras: max |logit difference| {self.float_check['max_abs_logit_difference']:.2e} "
            f"(the conversion itself; quantization comes next)"
        )

    def evaluate(self, content: bytes, name: str, allow_float: bool) -> Candidate:
        """Op check + drift against the float reference + gate, for one int8 model."""
        run, config = self.run_folder, self.config
        inspection = inspect_model(content)
        self.log(
            f"{name}: {len(content) / 1e6:.2f} MB, {len(inspection.ops)} ops, "
            + (
                "integer-only"
                if inspection.integer_only
                else f"{len(inspection.float_ops)} float ops ({inspection.float_summary()})"
            )
            + f"; input {inspection.inputs[0].dtype} scale {inspection.inputs[0].scale} zero point "
            f"{inspection.inputs[0].zero_point}; outputs "
            + ", ".join(f"{output.shape} {output.dtype}" for output in inspection.outputs)
        )
        started = time.perf_counter()
        candidate = outputs(tflite_logits(content, self.test_images, config.num_threads, name), run.temperature)
        ms_per_image = (time.perf_counter() - started) * 1000.0 / max(len(self.test_images), 1)
        threshold = float(run.card["calibration"]["abstain_threshold"])
        benign_min = float(run.card["calibration"].get("benign_min_probability", 0.0))
        drift = compare(
            self.labels, self.reference, candidate, run.class_names, run.malignant, self.paths, threshold, benign_min
        )
        drift["ms_per_image"] = round(ms_per_image, 3)  # LiteRT on this machine, interpreter set-up included
        problem = integer_only_problem(inspection, allow_float)
        gate = evaluate(drift, config.thresholds, problem, allow_float, inspection.integer_only)
        self.log(
            f"{name} on {drift['n']} test images: agreement {drift['agreement']:.2%}, accuracy "
            f"{drift['accuracy']['float']:.4f} -> {drift['accuracy']['int8']:.4f}, macro-F1 "
            f"{drift['macro_f1']['float']:.4f} -> {drift['macro_f1']['int8']:.4f}, calibrated probability "
            f"difference mean {drift['probability_difference']['mean_abs']:.4f} max "
            f"{drift['probability_difference']['max_abs']:.4f}; {drift['ms_per_image']:.2f} ms/image "
            f"({config.num_threads} thread{'s' if config.num_threads > 1 else ''})"
        )
        images = per_image(self.labels, self.reference, candidate, run.class_names, self.paths)
        return Candidate(content, inspection, drift, images, gate)

    def layer_report(self) -> None:
        """Per-layer error report; on a debugger failure, a note instead (it must not hide the gate's verdict)."""
        from convert.debug import layer_report

        samples = self.config.debug_samples
        self.log(f"per-layer quantization error (QuantizationDebugger) on {min(samples, len(self.rep_images))} images")
        try:
            self.debugger, report = layer_report(self.saved_model, self.rep_images, self.rep_images[:samples])
        except ConversionError as error:
            self.log(f"per-layer report unavailable: {error}")
            self.layers, self.debugger = {"error": str(error)}, None
            return
        self.timer.mark("layer_report")
        worst = ", ".join(f"{layer['op']} {layer['rmse_over_scale']:.2f}" for layer in report.layers[:5])
        self.log(f"per-layer report: {len(report.layers)} layers in {report.seconds:.1f}s; worst rmse/scale: {worst}")
        self.layers = report.as_dict()

    def apply_remedy(self) -> None:
        """Keep the N worst layers in float; measure what it buys and what it costs against the full-integer model."""
        config = self.config
        names = [layer["tensor_name"] for layer in self.layers["layers"][: config.float_layers]]
        self.log(f"remedy: keeping the {len(names)} worst layers in float (--float-layers {config.float_layers})")
        started = time.perf_counter()
        content = self.debugger.selective_model(names)
        allow = config.allow_float_ops or config.float_layers > 0
        candidate = self.evaluate(content, "mixed int8/float", allow)
        candidate.float_layers = names
        self.timer.mark("remedy")
        self.remedy = {
            "float_layers": config.float_layers,
            "seconds": round(time.perf_counter() - started, 1),
            "full_integer": self.full.summary(),
            "with_float_layers": candidate.summary(),
            "cost": "not integer-only: float ops with QUANTIZE/DEQUANTIZE around them; larger file; slower on "
            "integer-only accelerators and unusable on int8-only NPUs",
        }
        self.chosen = candidate

    def colour_robust(self) -> None:
        """Both models on the test images with their colour standardised to the card's target, into the chosen
        candidate's drift (``drift["colour_robust"]``); nothing for a run whose card has no colour target."""
        run, chosen = self.run_folder, self.chosen
        if colour_target(run.card) is None:
            return
        logits_of = {
            "float": lambda images: keras_logits(self.model, images),
            "int8": lambda images: tflite_logits(chosen.content, images, self.config.num_threads, "int8 colour-robust"),
        }
        robust = chosen.drift["colour_robust"] = colour_robust_drift(
            run, self.test_images, self.labels, logits_of, chosen.drift
        )
        self.timer.mark("colour_robust")
        int8, float_, as_is = robust["int8"], robust["float"], robust["as_is"]["int8"]
        self.log(
            f"colour-robust (test images with each image's colour standardised to the training average): int8 "
            f"accuracy {int8['accuracy']:.4f} (as is {as_is['accuracy']:.4f}), macro-F1 {int8['macro_f1']:.4f} "
            f"(as is {as_is['macro_f1']:.4f}); float {float_['accuracy']:.4f} / {float_['macro_f1']:.4f}"
        )

    def embedding_calibration(self) -> None:
        """The embedding check's calibration from the chosen int8 model's own embeddings: the training split as
        the reference, the validation split for the threshold (smearscope_core.embedding_ood)."""
        from convert.drift import tflite_embeddings

        run, config = self.run_folder, self.config
        embeddings = {}
        for split in ("train", "val"):
            rows = sorted(run.split(split), key=lambda r: r.path)
            images, _ = load_images(config.data, rows, run.image_size, run.class_names)
            embeddings[split] = tflite_embeddings(self.chosen.content, images, config.num_threads, f"{split} split")
        section, reference = fit_embedding_ood(embeddings["train"], embeddings["val"])
        buffer = io.BytesIO()
        np.save(buffer, reference, allow_pickle=False)
        self.embedding_reference = buffer.getvalue()
        section["reference"]["sha256"] = sha256_of(self.embedding_reference)
        self.embedding_section = section
        self.timer.mark("embedding_calibration")
        self.log(
            f"embedding check: {section['method']} k={section['k']} on {section['reference']['rows']} train "
            f"embeddings ({section['dimensions']}-d), threshold {section['threshold']:.4f} (val quantile "
            f"{section['quantile']})"
        )

    def feature_extractor(self) -> None:
        """The bundle's ImageNet feature extractor and its card section (convert/features.py): converted, verified
        and measured on train and external-dev images, or taken from the cache; nothing with --features none."""
        config = self.config
        if config.features == NO_FEATURES:
            return
        self.features_content, self.features_section = feature_extractor(
            self.run_folder, config.data, config.external_data, config.seed, config.features_cache, self.log
        )
        self.timer.mark("features")

    def write_extras(self, folder: Path) -> None:
        """The drift reports, the embedding check's reference and the feature extractor, into the staging folder."""
        write_reports(self.report, folder)
        (folder / REFERENCE_FILE).write_bytes(self.embedding_reference)
        if self.features_content is not None:
            (folder / FEATURES_FILE).write_bytes(self.features_content)

    def write_float_reference(self) -> None:
        """The float32 .tflite, for comparison only: beside the bundle (or at --float-out), never in it."""
        self.float_path.parent.mkdir(parents=True, exist_ok=True)
        self.float_path.write_bytes(self.float_content)

    def build_card(self) -> dict:
        """The training card plus ``metrics.int8_test``, ``tflite``, ``drift`` and, for a run with a colour target,
        ``shortcuts.colour_robust.int8_test`` (documented in docs/model-card.md)."""
        run, chosen, config, versions = self.run_folder, self.chosen, self.config, self.versions
        card = copy.deepcopy(run.card)
        card["schema_version"] = SCHEMA_VERSION
        card[EMBEDDING_SECTION] = self.embedding_section
        if self.features_section is not None:
            card[FEATURES_SECTION] = self.features_section
        drift = chosen.drift
        card["metrics"]["int8_test"] = {key: drift["int8_metrics"][key] for key in CARD_METRIC_KEYS}
        if "colour_robust" in drift:  # the run's card has shortcuts (training writes them)
            card["shortcuts"]["colour_robust"]["int8_test"] = drift["colour_robust"]["int8"]
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
                **self.output_of(inspection, len(run.class_names)).as_dict(),
                "kind": "logits",
                "dequantize": "logits = (q - zero_point) * scale; "
                "probabilities = softmax(logits / calibration.temperature)",
            },
            "embedding_output": {
                **self.output_of(inspection, self.embedding_section["dimensions"]).as_dict(),
                "kind": "embedding",
                "signature_name": "embedding",
                "dequantize": "embedding = (q - zero_point) * scale; read by its signature name (embedding_ood)",
            },
            "op_count": len(inspection.ops),
            "ops": inspection.op_counts,
            "float_ops": [op.name for op in inspection.float_ops],
            "float_layers": chosen.float_layers,
            "hard_swish": "(x / 6) * relu6(x + 3) as ADD/MUL ops"
            if config.xnnpack_hard_swish
            else "fused HARD_SWISH op",
            "representative_dataset": {
                "split": "train",
                "size": len(self.rep_rows),
                "per_class": class_counts(self.rep_rows, run.class_names),
                "selection": "stratified by class (largest remainder), deterministic",
                "seed": config.seed,
            },
            "float32_reference": {
                "file": self.float_path.name,
                "sha256": sha256_of(self.float_content),
                "size_bytes": len(self.float_content),
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
            "conversion_seconds": self.timings["total_seconds"],
        }
        card["drift"] = {
            "split": "test",
            "reference": "float Keras model (model.keras), Keras predict",
            "candidate": "model.tflite through ai-edge-litert",
            **{key: drift[key] for key in CARD_DRIFT_KEYS},
            "ms_per_image": drift["ms_per_image"],
            "threads": config.num_threads,
            "screening": drift["screening"],
            "abstain": drift["abstain"],
            "probability_difference": drift["probability_difference"],
            "logit_difference": drift["logit_difference"],
            "disagreements": drift["disagreements"],
            "float32_tflite_vs_keras": self.float_check,
            "gate": chosen.gate.as_dict(),
            "report": {"json": JSON_FILE, "html": HTML_FILE},
        }
        self.card = card
        return card

    @staticmethod
    def output_of(inspection: ModelInspection, width: int) -> TensorIO:
        """The model output of ``width`` values (the logits: one per class; the embedding): the converter orders
        outputs as it likes, and the runtime reads them by signature name (edge_app.runtime)."""
        return next(output for output in inspection.outputs if output.shape[-1:] == [width])

    def build_report(self) -> dict:
        """Everything in drift_report.json (the HTML page is made from this alone)."""
        run, chosen, card = self.run_folder, self.chosen, self.card
        self.report = {
            "model": card["name"],
            "created": card["tflite"]["converted"],
            "run": str(run.path),
            "classes": run.class_names,
            "temperature": run.temperature,
            "gate": chosen.gate.as_dict(),
            "drift": chosen.drift,
            "float32_tflite_vs_keras": self.float_check,
            "tflite": {**card["tflite"], "inspection": chosen.inspection.as_dict()},
            "float32_ops": inspect_model(self.float_content).op_counts,
            "sizes": {
                "int8_tflite": len(chosen.content),
                "float32_tflite": len(self.float_content),
                "keras": run.model_path.stat().st_size,
            },
            "layers": self.layers,
            "remedy": self.remedy,
            "versions": self.versions,
            "timings": self.timings,
            "per_image": chosen.per_image,
        }
        return self.report

    def write_bundle(self) -> Path:
        """The bundle (gate passed) or the rejected candidate (gate failed), with the drift report; its folder."""
        return write_bundle(
            self.config.out,
            self.chosen.content,
            self.card,
            self.write_extras,
            self.chosen.gate.passed,
        )
