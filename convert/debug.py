"""When the gate fails: which layers lose the most to int8, and a remedy that keeps them in float.

Per-layer error comes from TFLite's ``QuantizationDebugger``: for every quantized op it runs the
float op on the same (dequantized) input and records the difference. ``rmse/scale`` is the root
mean squared error in units of the layer's quantization step; pure rounding noise gives about
0.29 (1/sqrt(12)), so layers far above that lose real information (MobileNetV3's hard-swish and
squeeze-excite layers are the usual suspects). It is blind to one failure: a tensor whose range
is inflated by an outlier channel rounds the small channels away while its error, in steps of
that huge scale, looks normal; the consumers of such a tensor must stay float too.

The remedy (``--float-layers N``) re-quantizes the already calibrated model with the N worst layers
denylisted (``denylisted_nodes``, as ``QuantizationDebugOptions`` takes them): they run in float,
with QUANTIZE/DEQUANTIZE ops around them. The model is then no longer integer-only: larger,
slower on integer-only accelerators, and unusable on an int8-only NPU.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from convert import ConversionError
from convert.quantize import fix_io_types, int8_converter, representative_data
from convert.quiet import quiet_native_stderr

UNIFORM_ROUNDING_RMSE = 1.0 / math.sqrt(12.0)


@dataclass
class LayerReport:
    """Layers worst first; ``seconds`` covers calibration, instrumented model and the debug run."""

    layers: list[dict]
    samples: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self, limit: int | None = None) -> dict:
        return {
            "metric": "rmse/scale: RMS error of the int8 op against its float twin, in quantization steps "
            f"(rounding noise alone is {UNIFORM_ROUNDING_RMSE:.2f})",
            "samples": self.samples,
            "seconds": round(self.seconds, 1),
            "layer_count": len(self.layers),
            "layers": self.layers if limit is None else self.layers[:limit],
        }


def short_layer_name(tensor_name: str) -> str:
    """A readable name for a fused TFLite tensor name ('a/b/c;d/e/f;...').

    Prefers the fused part that names the convolution or matmul, then keeps its last two path parts:
    '.../conv_bn_1/batchnorm/add_1;.../conv_1/convolution;...' -> 'conv_1/convolution'.
    """
    parts = tensor_name.split(";")
    main = next((p for p in parts if p.endswith(("/convolution", "/MatMul", "/depthwise"))), parts[0])
    return "/".join(main.split("/")[-2:])


class LayerDebugger:
    """A QuantizationDebugger on our int8 converter, calibrated once and reused for the remedy."""

    def __init__(self, saved_model: Path, representative: np.ndarray, debug_images: np.ndarray):
        self.samples = len(debug_images)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_debug_metrics={"mean_abs_error": lambda diffs: float(np.mean(np.abs(diffs)))}
        )
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the debugger uses the deprecated tf.lite.Interpreter
            try:
                self.debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=int8_converter(saved_model, representative_data(representative)),
                    debug_dataset=representative_data(debug_images),
                    debug_options=options,
                )
            except Exception as error:  # noqa: BLE001 - converter internals raise many types
                raise ConversionError(f"The quantization debugger could not be set up: {error}.") from None

    def layer_report(self) -> list[dict]:
        """Run the instrumented model over the debug images; layers sorted worst (highest rmse/scale) first."""
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.debugger.run()
        buffer = io.StringIO()
        self.debugger.layer_statistics_dump(buffer)
        layers = []
        for row in csv.DictReader(io.StringIO(buffer.getvalue())):
            scale = float(row["scale"])
            mse = float(row["mean_squared_error"])
            layers.append(
                {
                    "op": row["op_name"],
                    "layer": short_layer_name(row["tensor_name"]),
                    "tensor_name": row["tensor_name"],
                    "rmse_over_scale": math.sqrt(mse) / scale if scale > 0 else float("inf"),
                    "rmse": math.sqrt(mse),
                    "mean_abs_error": float(row["mean_abs_error"]),
                    "max_abs_error": float(row["max_abs_error"]),
                    "scale": scale,
                    "zero_point": int(float(row["zero_point"])),
                    "elements": int(float(row["num_elements"])),
                }
            )
        layers.sort(key=lambda layer: -layer["rmse_over_scale"])
        for rank, layer in enumerate(layers, start=1):
            layer["rank"] = rank
        return layers

    def selective_model(self, denylisted_nodes: list[str]) -> bytes:
        """The calibrated model re-quantized with these layers (output tensor names) kept in float.

        This is what ``QuantizationDebugger.get_nondebug_quantized_model`` does after setting
        ``QuantizationDebugOptions(denylisted_nodes=...)``, called directly: that route first builds an
        instrumented model and refuses when every quantized op is denylisted.
        """
        from tensorflow.lite.python import convert as tflite_convert  # the debugger's own quantizer entry

        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = tflite_convert.mlir_quantize(
                    self.debugger.calibrated_model,
                    disable_per_channel=False,
                    fully_quantize=False,
                    enable_numeric_verify=False,
                    denylisted_nodes=list(denylisted_nodes),
                )
            except Exception as error:  # noqa: BLE001
                raise ConversionError(f"Selective quantization failed: {error}.") from None
        return fix_io_types(bytes(model))


def layer_report(
    saved_model: Path, representative: np.ndarray, debug_images: np.ndarray
) -> tuple[LayerDebugger, LayerReport]:
    """Set up the debugger, run it, and time the whole thing (what an engineer waits for)."""
    started = time.perf_counter()
    debugger = LayerDebugger(saved_model, representative, debug_images)
    layers = debugger.layer_report()
    return debugger, LayerReport(layers, debugger.samples, time.perf_counter() - started)
