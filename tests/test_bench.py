"""The benchmark suite in its quick mode, so it cannot rot (figures are not judged here: they are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.measure import TestImages as Images  # not a test class
from bench.measure import bench_runner
from bench.peak import best_per_threads, fractions_of_peak, keras_macs, measure_peaks, tflite_macs
from bench.report import KERAS_PREFIX, markdown_table, targets
from bench.variants import VARIANTS, Context, run_variant
from tests.factories import PROJECT_ROOT, REAL_DATA, make_dataset


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (the bench uses its test split)"
)
def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--images", "4", "--repeats", "3", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [result_file] = tmp_path.glob("*-quick.json")
    results = json.loads(result_file.read_text())
    shipped = results["variants"]["int8 TFLite, LiteRT"]
    assert shipped["accuracy"] >= 0.75 and shipped["model_bytes"] > 100_000
    for threads in ("threads_1", "threads_2"):
        assert shipped[threads]["end_to_end"]["p50_ms"] > 0 and shipped[threads]["invoke"]["n"] == 3
    assert results["core"]["tensorflow_imported"] is False
    assert 0 < results["core"]["peak_rss_mb"] < 1000
    assert {t["target"] for t in results["targets"]} >= {"end-to-end p50, 1 thread", "inference core peak RSS"}
    assert result_file.with_suffix(".md").read_text() == markdown_table(results)
    if results["colour_target"]:  # the bundle's card has shortcuts: every variant that ran has the figures
        assert 0 <= shipped["colour_robust"]["accuracy"] <= 1 and "macro_f1" in shipped["colour_robust"]
    else:
        assert "colour_robust" not in shipped
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    limit = results["limit"]
    assert limit["macs"]["per_image"] > 1_000_000 and limit["macs"]["agree"]
    assert limit["peak"]["peaks"]["float32"]["threads_1"]["gmac_per_s"] > 0
    assert 0 < shipped["fraction_of_peak"]["threads_1"]["fraction"] < 2  # noisy: a wide bound
    assert "## Physical limit" in result_file.with_suffix(".md").read_text()


def test_targets_are_judged_from_the_figures() -> None:
    def variant(e2e: float, invoke: float) -> dict:
        return {"threads_1": {"end_to_end": {"p50_ms": e2e}, "invoke": {"p50_ms": invoke}}}

    results = {
        "variants": {
            "int8 TFLite, LiteRT": variant(2.0, 1.0),
            "float32 TFLite, LiteRT": variant(1.5, 0.5),
            "float Keras, eager model(x)": {"threads_0": {"end_to_end": {"p50_ms": 100.0}}},
            "float Keras, tf.function": {"threads_0": {"end_to_end": {"p50_ms": 30.0}}},
            "float Keras, tf.function + XLA": {"skipped": "XLA (jit_compile=True) failed on this CPU: ..."},
        },
        "core": {"peak_rss_mb": 60.0},
    }
    judged = {t["target"]: t for t in targets(results)}
    assert {name: t["met"] for name, t in judged.items()} == {
        "end-to-end p50, 1 thread": True,
        "int8 invoke vs float32 TFLite invoke (1 thread)": False,
        "speed-up over the fastest float Keras form (end to end)": False,  # 15x the compiled form, not 50x eager
        "inference core peak RSS": True,
    }
    speed_up = judged["speed-up over the fastest float Keras form (end to end)"]
    assert speed_up["value"] == 15.0 and "float Keras, tf.function," in speed_up["shown"]


def test_colour_robust_predictions_only_with_a_colour_target(tmp_path: Path) -> None:
    """bench_runner also predicts on the colour-standardised images when the card gives a target (and the
    out-of-process worker gets the target through the images' JSON)."""
    paths = sorted(make_dataset(tmp_path / "data", per_class=2).glob("*/*.png"))

    def predict(threads: int):  # "class" = the channel with the highest mean: a model that reads colour only
        return lambda pixels: pixels.reshape(-1, 3).mean(axis=0)

    plain = Images(paths, np.zeros(len(paths), int), ["R", "G", "B"], 32, 1.0)
    result = bench_runner(predict, plain, repeats=1, threads=(1,))
    assert "predicted_colour_robust" not in result and result["predicted"].count(1) < len(paths)

    green = {"mean": [40.0, 200.0, 40.0], "std": [20.0, 20.0, 20.0]}
    images = Images.from_json(Images(paths, plain.labels, plain.class_names, 32, 1.0, green).as_json())
    assert images.colour_target == green
    result = bench_runner(predict, images, repeats=1, threads=(1,))
    assert result["predicted_colour_robust"] == [1] * len(paths)  # every image now "green"


def test_markdown_table_has_colour_robust_columns_with_a_dash_without_a_target() -> None:
    figures = {"threads_1": {"end_to_end": {"p50_ms": 2.0, "p95_ms": 3.0}, "throughput_images_per_s": 400.0}}
    shipped = {**figures, "accuracy": 0.99, "macro_f1": 0.98, "colour_robust": {"accuracy": 0.61, "macro_f1": 0.55}}
    results = {
        "created": "now", "command": "python -m bench", "images": 4, "repeats": 3, "core": {}, "app": {},
        "machine": {"cpu": "cpu", "cores": 2, "system": "Linux", "python": "3.11"}, "targets": [],
        "colour_target": {"mean": [200.0, 180.0, 200.0], "std": [40.0, 50.0, 40.0]},
        "variants": {"int8 TFLite, LiteRT": shipped, "float Keras, eager model(x)": {**figures, "accuracy": 0.99}},
    }  # fmt: skip
    table = markdown_table(results)
    header = next(line for line in table.splitlines() if line.startswith("| variant"))
    assert "| colour-robust accuracy | colour-robust macro-F1 |" in header
    assert "| int8 TFLite, LiteRT | 0.9900 | 0.9800 | 0.6100 | 0.5500 |" in table
    assert "| float Keras, eager model(x) | 0.9900 | - | - | - |" in table
    rows = [line for line in table.splitlines() if line.startswith("| int8") or line.startswith("|---")]
    assert len({line.count("|") for line in rows[:2]}) == 1  # as many cells as the header
    assert "reads the cells" in table
    assert "has no `shortcuts.colour_target`" in markdown_table({**results, "colour_target": None})


def _tiny_keras_model() -> object:
    """8x8x3 -> conv 3x3 (4) -> [depthwise 3x3 stride 2 (x2) -> grouped 1x1 conv (4, 2 groups)] -> pool -> dense (2)."""
    keras = pytest.importorskip("keras")
    inner = keras.Sequential([keras.Input((8, 8, 4)), keras.layers.DepthwiseConv2D(3, strides=2, padding="same",
                              depth_multiplier=2), keras.layers.Conv2D(4, 1, groups=2)], name="inner")  # fmt: skip
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.GlobalAveragePooling2D()(inner(keras.layers.Conv2D(4, 3, padding="same")(inputs)))
    return keras.Model(inputs, keras.layers.Dense(2)(features))


# By hand, per image: conv 8*8 positions * 4 out * 3*3*3 in = 6912; depthwise 4*4 positions * 8 out * 3*3 = 1152;
# grouped 1x1 conv 4*4 positions * 4 out * (8 / 2 groups) in = 256; dense 4 in * 2 out = 8.
TINY_MACS = {"total": 6912 + 1152 + 256 + 8, "conv": 6912 + 256, "depthwise": 1152, "dense": 8,
             "layers": {"conv": 2, "depthwise": 1, "dense": 1}}  # fmt: skip


def test_keras_macs_of_a_tiny_model_match_the_hand_count() -> None:
    assert keras_macs(_tiny_keras_model()) == TINY_MACS  # the nested model's layers are counted too


def test_tflite_macs_of_the_same_tiny_model_match(tmp_path: Path) -> None:
    """The flatbuffer count agrees with the Keras one at batch 1 (this conversion keeps the weights as variables, so
    the dense layer is a BATCH_MATMUL; the bundled models have FULLY_CONNECTED, checked by the slow test)."""
    tf = pytest.importorskip("tensorflow")
    model = _tiny_keras_model()
    call = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function()], model).convert())
    assert tflite_macs(path) == TINY_MACS


def test_variant_table_has_the_compiled_keras_forms() -> None:
    keras = {v.name: v for v in VARIANTS if v.name.startswith(KERAS_PREFIX)}
    assert set(keras) == {"float Keras, eager model(x)", "float Keras, tf.function", "float Keras, predict_on_batch",
                          "float Keras, tf.function + XLA"}  # fmt: skip
    assert all(v.precision == "float32" and v.threads == (0,) and v.make_predict for v in keras.values())
    assert "jit_compile=True" in keras["float Keras, tf.function + XLA"].description
    assert "jit_compile=False" in keras["float Keras, tf.function"].description
    assert {v.name: v.precision for v in VARIANTS}["int8 TFLite, LiteRT"] == "int8"


def test_every_keras_form_gives_the_eager_logits(tmp_path: Path) -> None:
    """Each compiled form runs the same model (XLA may be skipped, with a one-sentence reason, never a crash)."""
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(inputs))))  # fmt: skip
    model.save(tmp_path / "model.keras")
    paths = sorted(make_dataset(tmp_path / "data", per_class=1).glob("*/*.png"))[:2]
    context = Context(tmp_path, tmp_path, Images(paths, np.zeros(len(paths), int), ["a", "b", "c"], 8, 1.0), 2)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype("uint8")
    expected = np.asarray(model(pixels[None].astype("float32"), training=False))[0]
    for variant in (v for v in VARIANTS if v.name.startswith(KERAS_PREFIX)):
        reason = variant.available(context)
        if reason:
            assert variant.name.endswith("XLA") and reason.startswith("XLA (jit_compile=True) failed")
            assert run_variant(variant, context) == {"skipped": reason}
            continue
        np.testing.assert_allclose(variant.make_predict(context, 0)(pixels), expected, rtol=1e-4, atol=1e-4)


def test_peak_never_falls_with_threads_and_fractions_use_it() -> None:
    measured = [
        {"name": "a", "precision": "float32", "threads": 1, "gmac_per_s": 50.0},
        {"name": "a", "precision": "float32", "threads": 2, "gmac_per_s": 40.0},  # the second core was busy
        {"name": "b", "precision": "int8", "threads": 1, "gmac_per_s": 200.0},
        {"name": "b", "precision": "int8", "threads": 2, "gmac_per_s": 380.0},
        {"name": "c", "skipped": "no TensorFlow"},
    ]
    peak = {"peaks": best_per_threads(measured, (1, 2))}
    assert peak["peaks"]["float32"]["threads_2"] == {"gmac_per_s": 50.0, "from": "a", "threads": 1}
    assert peak["peaks"]["int8"]["threads_2"]["gmac_per_s"] == 380.0
    variant = {"threads_1": {"invoke": {"p50_ms": 1.0}}, "threads_2": {"invoke": {"p50_ms": 0.5}}, "accuracy": 1.0}
    got = fractions_of_peak(variant, "int8", 20_000_000, peak, cores=2)  # 20 M MACs in 1 ms: 20 GMAC/s
    assert got["threads_1"]["gmac_per_s"] == pytest.approx(20.0)
    assert got["threads_1"]["fraction"] == pytest.approx(0.1)
    assert got["threads_2"]["fraction"] == pytest.approx(40 / 380)
    assert got["threads_1"]["ms_at_peak"] == pytest.approx(0.1)
    keras = fractions_of_peak({"threads_0": {"invoke": {"p50_ms": 10.0}}}, "float32", 20_000_000, peak, cores=2)
    assert keras["threads_0"]["peak_gmac_per_s"] == 50.0  # TF's default threads: every core's peak


def test_measure_peaks_on_a_small_product() -> None:
    measured = measure_peaks((1,), repeats=2, shapes=((16, 32, 32),))
    names = [m["name"] for m in measured["measurements"]]
    assert names[0] == "numpy float32 matmul 16x32x32" and measured["measurements"][0]["gmac_per_s"] > 0
    assert measured["peaks"]["float32"]["threads_1"]["gmac_per_s"] > 0
    int8 = [m for m in measured["measurements"] if m["name"].startswith("TFLite int8")]
    assert all("skipped" in m or ("FULLY_CONNECTED" in m["ops"] and m["gmac_per_s"] > 0) for m in int8)


def test_markdown_has_the_keras_baseline_and_the_physical_limit() -> None:
    def variant(e2e: float, invoke: float, threads: str = "threads_1", precision: str = "int8") -> dict:
        figures = {"end_to_end": {"p50_ms": e2e, "p95_ms": e2e}, "invoke": {"p50_ms": invoke, "p95_ms": invoke},
                   "throughput_images_per_s": 1.0}  # fmt: skip
        return {threads: figures, "precision": precision,
                "fraction_of_peak": {threads: {"gmac_per_s": 18.0 / invoke, "peak_gmac_per_s": 200.0,
                                               "fraction": 18.0 / invoke / 200.0, "ms_at_peak": 0.09}}}  # fmt: skip

    counts = {"total": 18_000_000, "conv": 15_000_000, "depthwise": 2_997_696, "dense": 2304,
              "layers": {"conv": 41, "depthwise": 11, "dense": 1}}  # fmt: skip
    results = {
        "created": "now", "command": "python -m bench", "images": 4, "repeats": 3, "core": {}, "app": {},
        "machine": {"cpu": "cpu", "cores": 2, "system": "Linux", "python": "3.11"}, "colour_target": None,
        "input_size": 128, "load_average": {"start": [3.5, 4.0, 4.4], "end": [2.9, 3.8, 4.3]},
        "variants": {"int8 TFLite, LiteRT": variant(2.0, 1.0),
                     "float Keras, eager model(x)": variant(100.0, 99.0, "threads_0", "float32"),
                     "float Keras, predict_on_batch": variant(12.0, 11.0, "threads_0", "float32")},
        "limit": {"macs": {"per_image": 18_000_000, "source": "Keras", "agree": True,
                           "counts": {"Keras": counts, "int8 TFLite": counts}},
                  "peak": {"peaks": {"float32": {"threads_1": {"gmac_per_s": 50.0, "from": "f", "threads": 1},
                                                 "threads_2": {"gmac_per_s": 50.0, "from": "f", "threads": 1}},
                                     "int8": {"threads_1": {"gmac_per_s": 200.0, "from": "i", "threads": 1}}},
                           "measurements": [{"name": "numpy float32 matmul", "threads": 1, "gmac_per_s": 45.0,
                                             "repeats": 30}]}},
    }  # fmt: skip
    results["targets"] = targets(results)
    table = markdown_table(results)
    assert "the shipped model on one thread is 6.0x faster than it and 50.0x faster than the eager call" in table
    assert "invoke alone, 11.00 ms vs 1.00 ms: 11.0x" in table
    assert "| speed-up over the fastest float Keras form (end to end) | >= 20x | 6.0x" in table
    assert "18.00 M multiply-accumulates (MACs) per image at 128 px" in table
    assert "dense 2,304 in 1" in table and "int8 TFLite flatbuffer ops give the same count" in table
    assert "50.0 at 2 threads (the 1-thread figure: the other core was busy)" in table
    assert "| int8 TFLite, LiteRT | int8 | 1 | 1.00 | 18.00 | 200.0 | 9.0% | 0.090 |" in table
    assert "| float Keras, predict_on_batch | float32 | TF default (2) | 11.00 |" in table
    assert "Load average (1 min) at the start and end: 3.5 and 2.9 on 2 cores" in table
