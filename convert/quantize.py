"""Keras model -> float32 and full-integer int8 TFLite flatbuffers.

The path that works with Keras 3 (measured): ``model.export`` to a SavedModel with a fixed batch of
one, then ``TFLiteConverter.from_saved_model``. ``from_concrete_functions`` on a Keras 3 model fails
during calibration (READ_VARIABLE), and a dynamic batch adds SHAPE/STRIDED_SLICE/PACK ops.

The int8 model takes uint8 raw RGB pixels (the model normalizes inside, so the input scale comes
out as 1.0 and the zero point as 0: pixel bytes go straight in) and returns int8 logits. An int8
output loses nothing against a float one: the last FULLY_CONNECTED computes int8 either way, and a
float output would only append a DEQUANTIZE op; the consumer dequantizes with the recorded scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from convert import ConversionError
from convert.quiet import quiet_native_stderr

RepresentativeData = Callable[[], Iterator[list[np.ndarray]]]


def _last_error_line(lines: list[str], error: BaseException) -> str:
    interesting = [line.strip() for line in lines if "error" in line.lower()]
    text = interesting[-1] if interesting else str(error).strip().splitlines()[-1] if str(error).strip() else ""
    return text[:300] or type(error).__name__


def export_saved_model(model: keras.Model, image_size: int, folder: Path) -> Path:
    """SavedModel with one float32 [1, S, S, 3] input: the converter's input."""
    signature = [tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="image")]
    model.export(str(folder), format="tf_saved_model", input_signature=signature, verbose=False)
    return folder


def representative_data(images: np.ndarray) -> RepresentativeData:
    """Calibration samples as the converter wants them: float32 raw pixels, batch of one."""

    def generate() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def float_converter(saved_model: Path) -> tf.lite.TFLiteConverter:
    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def int8_converter(saved_model: Path, representative: RepresentativeData) -> tf.lite.TFLiteConverter:
    """Full-integer post-training quantization; uint8 input, int8 output.

    Float fallback is permitted at the converter level (TFLITE_BUILTINS next to the INT8 set) so that
    an op that cannot be quantized shows up by name in the op check, which then fails the conversion
    unless float ops were explicitly allowed, instead of an opaque converter error.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
    return converter


def run_converter(converter: tf.lite.TFLiteConverter, what: str) -> bytes:
    """``converter.convert()`` with its native log hidden; a failure becomes one ConversionError sentence."""
    with quiet_native_stderr() as lines:
        try:
            return bytes(converter.convert())
        except Exception as error:  # noqa: BLE001 - the converter raises many types; report one sentence
            failure = error
    raise ConversionError(f"The TFLite converter failed on the {what} model: {_last_error_line(lines, failure)}.")


def convert_float(saved_model: Path) -> bytes:
    return run_converter(float_converter(saved_model), "float32")


def convert_int8(saved_model: Path, images: np.ndarray) -> bytes:
    return run_converter(int8_converter(saved_model, representative_data(images)), "int8")


def fix_io_types(model: bytes) -> bytes:
    """Give a selectively quantized model (float I/O from the quantizer) the bundle's uint8 input / int8 output.

    Uses the routine the converter applies to its own output. Where the first layer is kept in
    float there is no input QUANTIZE to fold and the input stays float32; where the last one is,
    the output stays float32. The card records whatever comes out, and the app handles both.
    """
    from tensorflow.lite.python.util import modify_model_io_type  # not in tf.lite's public API

    for input_type in (tf.uint8, tf.float32):
        with quiet_native_stderr():  # absl warns when a float output keeps its type: expected here
            try:
                return bytes(modify_model_io_type(model, input_type, tf.int8))
            except ValueError:  # "Model input is not dequantized": the first layer is float
                continue
    return model
