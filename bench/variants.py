"""The one table of what is benchmarked: each variant says what it needs and how it predicts.

A variant's ``make_predict(threads)`` returns a function from uint8 pixels [H, W, 3] to logits.
Variants that cannot run here (no TensorFlow on a Pi, no tflite-runtime environment) are skipped
with the reason in the results.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from bench.measure import PROJECT_ROOT, Predict, TestImages, bench_runner

TFLITE_RUNTIME_PYTHON = PROJECT_ROOT / ".venv-bench-tflite-runtime" / "bin" / "python"


@dataclass
class Context:
    bundle: Path
    run: Path
    images: TestImages
    repeats: int


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    threads: tuple[int, ...]
    model_file: Callable[[Context], Path | None]
    available: Callable[[Context], str | None]  # None, or why it is skipped
    make_predict: Callable[[Context, int], Predict] | None = None  # in-process variants
    measure: Callable[[Context], dict] | None = None  # out-of-process variants
    precision: str = "float32"  # whose peak its fraction of peak is read against (bench/peak.py)


def _litert_predict(path: Path) -> Callable[[Context, int], Predict]:
    def make(context: Context, threads: int) -> Predict:
        from edge_app.runtime import TFLiteModel

        return TFLiteModel(str(path), num_threads=threads).run

    return make


def float_tflite_path(context: Context) -> Path | None:
    return _float_tflite_for(context.bundle, context.run, context.images.size)


@cache
def _float_tflite_for(bundle: Path, run: Path, size: int) -> Path | None:
    """The float32 .tflite convert/ writes beside the bundle; made here with TensorFlow if absent."""
    path = bundle.with_name(bundle.name + "-float32.tflite")
    if path.is_file():
        return path
    if importlib.util.find_spec("tensorflow") is None or not (run / "model.keras").is_file():
        return None
    from convert.quantize import convert_float, export_saved_model
    from train.model import load_float_model

    with tempfile.TemporaryDirectory() as folder:
        saved = export_saved_model(load_float_model(run / "model.keras"), size, Path(folder) / "sm")
        path = Path(tempfile.gettempdir()) / "smearscope-bench-float32.tflite"
        path.write_bytes(convert_float(saved))
    return path


def _needs_tensorflow(context: Context) -> str | None:
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed (edge-only machine)"
    if not (context.run / "model.keras").is_file():
        return f"no float model at {context.run / 'model.keras'}"
    return None


@cache
def _keras_model(path: Path) -> object:
    """One loaded float model for every Keras variant (the forms differ in how it is called, not in weights)."""
    from train.model import load_float_model

    return load_float_model(path)


@cache
def _keras_call(path: Path, size: int, form: str) -> Callable[[np.ndarray], object]:
    """The float model as a function of a float32 [1, size, size, 3] batch, called the way ``form`` says.

    eager: ``model(x, training=False)``, op by op. tf.function: the same call traced once into a graph for a
    fixed input signature. xla: that graph compiled by XLA (``jit_compile=True``). predict_on_batch: Keras' own
    compiled predict step (it resolves ``jit_compile="auto"`` to False on a machine without an accelerator).
    """
    model = _keras_model(path)
    if form == "eager":
        return lambda batch: model(batch, training=False)
    if form == "predict_on_batch":
        return model.predict_on_batch
    import tensorflow as tf

    signature = [tf.TensorSpec((1, size, size, 3), tf.float32)]
    return tf.function(lambda batch: model(batch, training=False), input_signature=signature,
                       jit_compile=form == "xla")  # fmt: skip


def _keras_predict(form: str) -> Callable[[Context, int], Predict]:
    def make(context: Context, threads: int) -> Predict:
        call = _keras_call(context.run / "model.keras", context.images.size, form)
        return lambda pixels: np.asarray(call(pixels[None].astype("float32")))[0]

    return make


def _xla_available(context: Context) -> str | None:
    """TensorFlow and the model, and XLA compiling the model on this CPU: if it fails, the reason in a sentence."""
    reason = _needs_tensorflow(context)
    if reason:
        return reason
    size = context.images.size
    try:
        np.asarray(_keras_call(context.run / "model.keras", size, "xla")(np.zeros((1, size, size, 3), "float32")))
    except Exception as error:  # noqa: BLE001 - a result, not a crash: the other variants still run
        first = (str(error).strip().splitlines() or [""])[0][:200]
        return f"XLA (jit_compile=True) failed on this CPU: {type(error).__name__}: {first}"
    return None


def _tflite_runtime_available(context: Context) -> str | None:
    if not TFLITE_RUNTIME_PYTHON.exists():
        return f"no tflite-runtime environment at {TFLITE_RUNTIME_PYTHON.parent.parent} (make bench creates it)"
    return None


def _tflite_runtime_measure(context: Context) -> dict:
    """Run the same routine inside the tflite-runtime 2.14 environment (numpy<2) and read its JSON."""
    done = subprocess.run(
        [str(TFLITE_RUNTIME_PYTHON), "-m", "bench.worker", str(context.bundle / "model.tflite"), str(context.repeats)],
        input=context.images.as_json(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        return {"skipped": f"tflite-runtime worker failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


VARIANTS = (
    Variant("int8 TFLite, LiteRT", "what ships: the bundle's model.tflite on ai-edge-litert", (1, 2),
            lambda c: c.bundle / "model.tflite", lambda c: None,
            make_predict=lambda c, t: _litert_predict(c.bundle / "model.tflite")(c, t), precision="int8"),
    Variant("float32 TFLite, LiteRT", "the same network unquantized, same runtime", (1, 2),
            float_tflite_path,
            lambda c: None if float_tflite_path(c) else "no float32 .tflite and no TensorFlow to make one",
            make_predict=lambda c, t: _litert_predict(float_tflite_path(c))(c, t)),
    Variant("float Keras, eager model(x)", "model.keras called eagerly, model(x, training=False), op by op", (0,),
            lambda c: c.run / "model.keras", _needs_tensorflow, make_predict=_keras_predict("eager")),
    Variant("float Keras, tf.function", "model(x, training=False) in tf.function(jit_compile=False) with a fixed "
            "[1, H, W, 3] float32 input signature: traced once, run as a graph", (0,),
            lambda c: c.run / "model.keras", _needs_tensorflow, make_predict=_keras_predict("tf.function")),
    Variant("float Keras, predict_on_batch", "model.predict_on_batch(x): Keras' own compiled predict step "
            "(jit_compile resolves to False without an accelerator)", (0,),
            lambda c: c.run / "model.keras", _needs_tensorflow, make_predict=_keras_predict("predict_on_batch")),
    Variant("float Keras, tf.function + XLA", "the same tf.function with jit_compile=True: XLA-compiled for this CPU",
            (0,), lambda c: c.run / "model.keras", _xla_available, make_predict=_keras_predict("xla")),
    Variant("int8 TFLite, tflite-runtime 2.14", "the older runtime, in its own environment", (1, 2),
            lambda c: c.bundle / "model.tflite", _tflite_runtime_available, measure=_tflite_runtime_measure,
            precision="int8"),
)  # fmt: skip


def run_variant(variant: Variant, context: Context) -> dict:
    reason = variant.available(context)
    if reason:
        return {"skipped": reason}
    if variant.measure is not None:
        result = variant.measure(context)
    else:
        result = bench_runner(lambda t: variant.make_predict(context, t), context.images, context.repeats,
                              variant.threads)  # fmt: skip
    path = variant.model_file(context)
    if path is not None and path.is_file():
        result["model_bytes"] = path.stat().st_size
    result["precision"] = variant.precision
    return result


def worker_main() -> None:
    """Entry of ``python -m bench.worker MODEL REPEATS`` (images as JSON on stdin)."""
    from edge_app.runtime import TFLiteModel

    model_path, repeats = sys.argv[1], int(sys.argv[2])
    images = TestImages.from_json(sys.stdin.read())

    def make(threads: int) -> Predict:
        return TFLiteModel(model_path, num_threads=threads).run

    result = bench_runner(make, images, repeats)
    result["runtime"] = TFLiteModel(model_path).runtime
    print(json.dumps(result))
