"""Find a TFLite interpreter: LiteRT first, the older tflite-runtime second, never TensorFlow.

LiteRT (``ai-edge-litert``) is the maintained successor of ``tflite-runtime`` and measured 6.5x
faster on an int8 MobileNetV3-Small; ``tflite-runtime`` 2.14 remains for older Raspberry Pi images.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

import numpy as np

RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


class RuntimeMissingError(RuntimeError):
    """No TFLite runtime is installed; the message says what to install."""


def interpreter_class() -> tuple[type[Any], str]:
    """Return (Interpreter class, runtime distribution name) of the first runtime found."""
    for module_name, distribution in RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, distribution
    raise RuntimeMissingError(
        "No TFLite runtime is installed: run `pip install ai-edge-litert` "
        "(or `pip install tflite-runtime` on an older Raspberry Pi OS)."
    )


def runtime_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


class TFLiteModel:
    """One .tflite model on the runtime: raw uint8 pixels in, dequantized float outputs out.

    The app's classifier and the conversion stage's drift check both run models through this
    class, so the drift figures describe exactly what the app computes. One interpreter is shared
    by every browser session of the app, and an interpreter is not thread-safe (measured: five
    threads invoking one raise "reference to internal data"), so each run holds a lock.
    """

    LOGITS = "logits"
    EMBEDDING = "embedding"

    def __init__(self, path: str | None = None, content: bytes | None = None, num_threads: int | None = None):
        interpreter_type, self.runtime = interpreter_class()
        self.delegate = "XNNPACK"
        try:
            self.interpreter = interpreter_type(model_path=path, model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except RuntimeError as error:
            if "XNNPACK" not in str(error):
                raise
            # XNNPACK refuses some quantization parameters (measured: an embedding output whose scale is ~1e-8, from
            # an untrained network); the built-in kernels run any valid model, only slower. Say so, run anyway.
            resolver = sys.modules[interpreter_type.__module__].OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self.interpreter = interpreter_type(model_path=path, model_content=content, num_threads=num_threads,
                                                experimental_op_resolver_type=resolver)  # fmt: skip
            self.interpreter.allocate_tensors()
            self.delegate = f"none (XNNPACK refused the model: {str(error).strip().splitlines()[0][:120]})"
        self._lock = threading.Lock()
        self.input = self.interpreter.get_input_details()[0]
        self.named_outputs = self._outputs_by_name()
        self.output = self.named_outputs.get(self.LOGITS, self.interpreter.get_output_details()[0])

    def _outputs_by_name(self) -> dict[str, dict]:
        """Output details by signature name: the converter may reorder outputs, the names stay.

        A model converted with one output and no signature (older bundles) gives ``{}``; its output is the logits.
        """
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            return {}
        runner = self.interpreter.get_signature_runner(next(iter(signatures)))
        by_index = {detail["index"]: detail for detail in self.interpreter.get_output_details()}
        return {name: by_index[detail["index"]] for name, detail in runner.get_output_details().items()}

    @property
    def has_embedding(self) -> bool:
        return self.EMBEDDING in self.named_outputs

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def outputs(self) -> int:
        """The number of classes: the length of the logits output."""
        return int(self.output["shape"][-1])

    def _feed(self, batch: np.ndarray) -> np.ndarray:
        """Raw pixels as the input tensor wants them (bytes go straight in at scale 1, zero point 0)."""
        dtype = np.dtype(self.input["dtype"])
        scale, zero_point = self.input["quantization"]
        if dtype == np.float32:
            return batch.astype(np.float32)
        if dtype == np.uint8 and scale in (0.0, 1.0) and zero_point == 0:
            return batch.astype(np.uint8)
        info = np.iinfo(dtype)
        return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Dequantized logits (float64 [classes]) for one uint8 [H, W, 3] image: the output named ``logits``, or a
        model's first output where none is named so."""
        return self._invoke(pixels, {self.LOGITS: self.output})[self.LOGITS]

    def run_all(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output, dequantized (float64), by signature name: a classifier's ``logits`` (and ``embedding``
        where it has one), a feature extractor's ``features``; a model without a signature gives ``logits``."""
        return self._invoke(pixels, self.named_outputs or {self.LOGITS: self.output})

    def _invoke(self, pixels: np.ndarray, wanted: dict[str, dict]) -> dict[str, np.ndarray]:
        batch = self._feed(pixels[None])
        with self._lock:
            self.interpreter.set_tensor(self.input["index"], batch)
            self.interpreter.invoke()
            raw = {name: self.interpreter.get_tensor(detail["index"])[0] for name, detail in wanted.items()}
        return {name: _dequantize(raw[name], wanted[name]) for name in wanted}


def _dequantize(raw: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(raw.dtype, np.integer) and scale:
        return (raw.astype(np.float64) - zero_point) * scale
    return raw.astype(np.float64)
