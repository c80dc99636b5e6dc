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


def _litert_predict(path: Path) -> Callable[[Context, int], Predict]:
    def make(context: Context, threads: int) -> Predict:
        from edge_app.runtime import TFLiteModel

        return TFLiteModel(str(path), num_threads=threads).run

    return make


def _float_tflite(context: Context) -> Path | None:
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


def _keras_predict(context: Context, threads: int) -> Predict:
    from train.model import load_float_model

    model = load_float_model(context.run / "model.keras")
    return lambda pixels: np.asarray(model(pixels[None].astype("float32"), training=False))[0]


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
            make_predict=lambda c, t: _litert_predict(c.bundle / "model.tflite")(c, t)),
    Variant("float32 TFLite, LiteRT", "the same network unquantized, same runtime", (1, 2),
            _float_tflite, lambda c: None if _float_tflite(c) else "no float32 .tflite and no TensorFlow to make one",
            make_predict=lambda c, t: _litert_predict(_float_tflite(c))(c, t)),
    Variant("float Keras, TensorFlow", "model.keras called eagerly (what an engineer would otherwise run)", (0,),
            lambda c: c.run / "model.keras", _needs_tensorflow, make_predict=_keras_predict),
    Variant("int8 TFLite, tflite-runtime 2.14", "the older runtime, in its own environment", (1, 2),
            lambda c: c.bundle / "model.tflite", _tflite_runtime_available, measure=_tflite_runtime_measure),
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
