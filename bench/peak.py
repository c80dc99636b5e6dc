"""The physical limit: the model's multiply-accumulates, this CPU's measured float32 and int8 peak, and the
fraction of that peak each benchmarked variant reaches.

- **MACs** are counted twice: from the float Keras model's layers (Conv2D, DepthwiseConv2D, Dense: the
  kernel's size times the output's spatial positions) and from the .tflite flatbuffer's CONV_2D,
  DEPTHWISE_CONV_2D and FULLY_CONNECTED ops (the filter's size without its output channels times the
  output's elements). Element-wise work (batch norm folded or not, hard-swish, the squeeze-excite
  multiplies, the colour layer) is not counted: it is small next to the convolutions and is not a MAC.
- **Peak** is the best of repeated timings of large matrix products, run with the thread count asked:
  numpy's float32 matmul (OpenBLAS), and a one-op TFLite FULLY_CONNECTED model in float32 and in int8
  (built with TensorFlow's converter, run on the same interpreter as the variants, so on XNNPACK). The
  float32 peak is the better of the two float figures. A real network reaches a fraction of it: small
  layers, depthwise convolutions (few MACs per byte moved) and the element-wise ops in between.
- **Fraction of peak** of a variant = MACs / its median invoke time / the peak of its precision at its
  thread count (TensorFlow's default thread count counts as all cores).

Runs without TensorFlow (a Raspberry Pi with the edge requirements): the TFLite count and the numpy peak
still work; the Keras count and the TFLite micro-models are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# M x K times K x N, 268 M and 537 M MACs: several ms at float peak on one core. Two shapes because XNNPACK's
# int8 GEMM was measured to use a second thread on the second and not on the first.
GEMM_SHAPES = ((256, 1024, 1024), (128, 2048, 2048))
MAC_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense", "BATCH_MATMUL": "dense"}


def _empty_count() -> dict:
    return {"total": 0, "conv": 0, "depthwise": 0, "dense": 0, "layers": {"conv": 0, "depthwise": 0, "dense": 0}}


def _add(count: dict, kind: str, macs: int) -> None:
    count[kind] += macs
    count["total"] += macs
    count["layers"][kind] += 1


def keras_macs(model: object) -> dict:
    """Multiply-accumulates per image of a built Keras model (nested models too), by layer kind.

    Conv2D: kh * kw * Cin/groups * Cout per output position; DepthwiseConv2D: kh * kw * Cin * multiplier per
    output position; Dense: Cin * units per output row. That is the kernel's size times the output's positions.
    """
    import keras

    count = _empty_count()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kind = "depthwise"
        elif isinstance(layer, keras.layers.Conv2D):
            kind = "conv"
        elif isinstance(layer, keras.layers.Dense):
            kind = "dense"
        else:
            continue
        kernel = int(np.prod(layer.kernel.shape))
        positions = int(np.prod([int(d) for d in layer.output.shape[1:-1]]))  # no batch, no channels
        _add(count, kind, kernel * positions)
    return count


def tflite_macs(path: Path) -> dict:
    """Multiply-accumulates per image of a .tflite model, from its CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
    BATCH_MATMUL ops (the last two counted as dense).

    Filters are [Cout, kh, kw, Cin/groups] (conv), [1, kh, kw, Cout] (depthwise), [units, Cin] (dense): each
    output element costs the filter's size divided by its output channels. A BATCH_MATMUL output element costs
    the inner dimension (a model converted with its weights left as variables has these instead of dense).
    """
    from edge_app.runtime import interpreter_class

    interpreter_type, _ = interpreter_class()
    interpreter = interpreter_type(model_path=str(path))
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in interpreter.get_tensor_details()}
    batch = max(1, int(interpreter.get_input_details()[0]["shape"][0]))
    count = _empty_count()
    for op in interpreter._get_ops_details():
        kind = MAC_OPS.get(op["op_name"])
        if kind is None:
            continue
        filter_shape, out_shape = shapes[int(op["inputs"][1])], shapes[int(op["outputs"][0])]
        output = int(np.prod(out_shape))
        if op["op_name"] == "BATCH_MATMUL":  # [.., M, K] or, adjoint, [.., K, M] times the other: K per output
            left = shapes[int(op["inputs"][0])]
            per_output = left[-1] if left[-2] == out_shape[-2] else left[-2]
        else:
            per_output = int(np.prod(filter_shape)) // filter_shape[-1 if kind == "depthwise" else 0]
        _add(count, kind, output * per_output // batch)
    return count


def count_macs(run: Path, tflite_models: dict[str, Path | None]) -> dict:
    """The MAC count used for the fraction of peak, with every count it was checked against."""
    counts: dict = {}
    if importlib.util.find_spec("tensorflow") is not None and (run / "model.keras").is_file():
        from train.model import load_float_model

        counts["Keras"] = keras_macs(load_float_model(run / "model.keras"))
    else:
        counts["Keras_skipped"] = "TensorFlow or model.keras is missing"
    for name, path in tflite_models.items():
        if path is not None and Path(path).is_file():
            counts[name] = tflite_macs(Path(path))
    totals = {name: c["total"] for name, c in counts.items() if isinstance(c, dict)}
    source = "Keras" if "Keras" in totals else next(iter(totals), None)
    return {
        "per_image": totals.get(source) if source else None,
        "source": source,
        "agree": len(set(totals.values())) <= 1,
        "counts": counts,
    }


# --- peak ------------------------------------------------------------------------------------------

_NUMPY_CHILD = """
import json, sys, time
import numpy as np
m, k, n, repeats = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
a = rng.standard_normal((m, k), dtype=np.float32)
b = rng.standard_normal((k, n), dtype=np.float32)
a @ b
times = []
for _ in range(repeats):
    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def _rates(times: list[float], macs: int) -> dict:
    best, median = min(times), float(np.median(times))
    return {"gmac_per_s": macs / best / 1e9, "gmac_per_s_median": macs / median / 1e9, "repeats": len(times)}


def numpy_gemm(threads: int, repeats: int, shape: tuple[int, int, int] = GEMM_SHAPES[0]) -> dict:
    """numpy float32 matmul in a fresh process whose BLAS is limited to ``threads`` (set before numpy loads)."""
    limits = {v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", _NUMPY_CHILD, *(str(s) for s in shape), str(repeats)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **limits},
    )  # fmt: skip
    if done.returncode != 0:
        return {"skipped": f"numpy matmul failed: {done.stderr.strip().splitlines()[-1:]}"}
    return _rates(json.loads(done.stdout.strip().splitlines()[-1]), int(np.prod(shape)))


def gemm_tflite(int8: bool, shape: tuple[int, int, int] = GEMM_SHAPES[0]) -> bytes:
    """A one-op .tflite model: [M, K] input times a constant [K, N] weight (FULLY_CONNECTED), float32 or int8."""
    import tensorflow as tf

    m, k, n = shape
    rng = np.random.default_rng(0)
    weight = tf.constant(rng.standard_normal((k, n)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec((m, k), tf.float32)])
    def gemm(x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, weight)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([gemm.get_concrete_function()], gemm)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.standard_normal((m, k)).astype("float32")] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # stdout carries the results table
        warnings.simplefilter("ignore")  # "statistics for quantized inputs were expected": the input is synthetic
        return converter.convert()


def tflite_gemm(content: bytes, threads: int, repeats: int, shape: tuple[int, int, int] = GEMM_SHAPES[0]) -> dict:
    """Invoke a GEMM model on the variants' interpreter (LiteRT: XNNPACK) with ``threads``; best and median rate."""
    from edge_app.runtime import interpreter_class

    interpreter_type, runtime = interpreter_class()
    interpreter = interpreter_type(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    return _rates(times, int(np.prod(shape))) | {"runtime": runtime, "ops": ops}


def measure_peaks(threads: tuple[int, ...], repeats: int = 100, shapes: tuple = GEMM_SHAPES) -> dict:
    """This CPU's float32 and int8 peak (GMAC/s, best of ``repeats``) per thread count, with each measurement."""
    tensorflow = importlib.util.find_spec("tensorflow") is not None
    measurements: list[dict] = []
    for shape in shapes:
        size = "x".join(str(s) for s in shape)
        for count in threads:
            measurements.append({"name": f"numpy float32 matmul {size}", "precision": "float32", "threads": count}
                                | numpy_gemm(count, repeats, shape))  # fmt: skip
        for precision in ("float32", "int8"):
            name = f"TFLite {precision} FULLY_CONNECTED {size}"
            if not tensorflow:
                measurements.append({"name": name, "skipped": "TensorFlow is not installed to build it"})
                continue
            try:
                content = gemm_tflite(precision == "int8", shape)
            except Exception as error:  # noqa: BLE001 - recorded, the rest of the benchmark goes on
                measurements.append({"name": name, "skipped": _sentence(error)})
                continue
            for count in threads:
                measurements.append({"name": name, "precision": precision, "threads": count}
                                    | tflite_gemm(content, count, repeats, shape))  # fmt: skip
    return {"gemm_shapes": [list(s) for s in shapes], "peaks": best_per_threads(measurements, threads),
            "measurements": measurements}  # fmt: skip


def best_per_threads(measurements: list[dict], threads: tuple[int, ...]) -> dict:
    """Per precision and thread count, the best rate measured with at most that many threads.

    More threads can always leave one idle, so a peak never falls with the thread count; a lower figure at
    2 threads than at 1 is another job taking the second core, and the 1-thread figure stands (``from`` says so).
    """
    peaks: dict = {"float32": {}, "int8": {}}
    for precision, by_threads in peaks.items():
        for count in sorted(threads):
            usable = [m for m in measurements if m.get("precision") == precision and "gmac_per_s" in m
                      and m["threads"] <= count]  # fmt: skip
            if usable:
                best = max(usable, key=lambda m: m["gmac_per_s"])
                by_threads[f"threads_{count}"] = {"gmac_per_s": best["gmac_per_s"], "from": best["name"],
                                                  "threads": best["threads"]}  # fmt: skip
    return peaks


def _sentence(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{type(error).__name__}: {text[:200]}"


def fractions_of_peak(variant: dict, precision: str, macs: int | None, peak: dict, cores: int) -> dict:
    """Per thread count of a measured variant: achieved GMAC/s at its median invoke and the fraction of peak."""
    out: dict = {}
    for key, figures in variant.items():
        if not key.startswith("threads_") or not isinstance(figures, dict) or "invoke" not in figures or not macs:
            continue
        peak_key = f"threads_{cores}" if key == "threads_0" else key  # TF's default: every core
        best = peak["peaks"].get(precision, {}).get(peak_key)
        achieved = macs / (figures["invoke"]["p50_ms"] / 1000.0) / 1e9
        out[key] = {
            "gmac_per_s": achieved,
            "peak_gmac_per_s": best["gmac_per_s"] if best else None,
            "fraction": achieved / best["gmac_per_s"] if best else None,
            "ms_at_peak": macs / (best["gmac_per_s"] * 1e9) * 1000.0 if best else None,
        }
    return out


def physical_limit(run: Path, tflite_models: dict[str, Path | None], threads: tuple[int, ...], repeats: int) -> dict:
    """MACs per image and the CPU's peaks, for the results JSON (``limit``)."""
    return {"macs": count_macs(run, tflite_models), "peak": measure_peaks(threads, repeats)}
