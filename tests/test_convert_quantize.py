"""Int8 conversion (convert/quantize.py), the op check (convert/inspect_ops.py) and the per-layer debugger
(convert/debug.py) on the tiny trained run (tests/conftest.py ``tiny_run``), converted once per module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def fused_plain_model(run_path: Path):
    """The tiny run's trained network rebuilt without the colour layer and with Keras' fused hard-swish.

    The default model keeps its colour-standardisation layer in float when converted (convert/conversion.py);
    these tests check plain full-integer quantization and the hard-swish rewrite, so they use the network
    without that layer (it has no weights: the rest copies over one to one).
    """
    from train.model import build_model, load_float_model

    trained = load_float_model(run_path / "model.keras")
    plain = build_model(int(trained.output_shape[-1]), int(trained.input_shape[1]), colour_standardise=False)
    plain.set_weights(trained.get_weights())
    return plain


@pytest.fixture(scope="module")
def converted(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from convert.inputs import read_run
    from convert.quantize import convert_float, convert_int8, export_saved_model
    from smearscope_core.manifest import load_images

    run_path, data = tiny_run
    run = read_run(run_path)
    images, _ = load_images(data, run.split("train"), run.image_size, run.class_names)
    saved = export_saved_model(fused_plain_model(run_path), run.image_size, tmp_path_factory.mktemp("sm"))
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
def test_xnnpack_hard_swish_export_has_no_hard_swish_op_and_one_partition(
    tiny_run: tuple[Path, Path], converted: dict, tmp_path: Path
) -> None:
    """The opt-in rebuild computes the same logits and leaves XNNPACK one partition instead of many."""
    from convert.quantize import convert_int8, export_saved_model
    from edge_app.runtime import TFLiteModel
    from train.model import delegate_friendly_twin

    run_path, _ = tiny_run
    model = fused_plain_model(run_path)
    twin = delegate_friendly_twin(model, check=converted["images"][:4])  # raises if the logits differ
    size = model.input_shape[1]
    content = convert_int8(export_saved_model(twin, size, tmp_path / "sm"), converted["images"])

    def ops(tflite: bytes) -> list[str]:
        return [op["op_name"] for op in TFLiteModel(content=tflite).interpreter._get_ops_details()]

    assert "HARD_SWISH" in ops(converted["int8"]) and ops(converted["int8"]).count("DELEGATE") > 1
    assert "HARD_SWISH" not in ops(content) and ops(content).count("DELEGATE") == 1
