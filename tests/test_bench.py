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
from bench.report import markdown_table, targets
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


def test_targets_are_judged_from_the_figures() -> None:
    def variant(e2e: float, invoke: float) -> dict:
        return {"threads_1": {"end_to_end": {"p50_ms": e2e}, "invoke": {"p50_ms": invoke}}}

    results = {
        "variants": {
            "int8 TFLite, LiteRT": variant(2.0, 1.0),
            "float32 TFLite, LiteRT": variant(1.5, 0.5),
            "float Keras, TensorFlow": {"threads_0": {"end_to_end": {"p50_ms": 100.0}}},
        },
        "core": {"peak_rss_mb": 60.0},
    }
    judged = {t["target"]: t["met"] for t in targets(results)}
    assert judged == {
        "end-to-end p50, 1 thread": True,
        "int8 invoke vs float32 TFLite invoke (1 thread)": False,
        "speed-up over the float Keras model (end to end)": True,
        "inference core peak RSS": True,
    }


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
        "variants": {"int8 TFLite, LiteRT": shipped, "float Keras, TensorFlow": {**figures, "accuracy": 0.99}},
    }  # fmt: skip
    table = markdown_table(results)
    header = next(line for line in table.splitlines() if line.startswith("| variant"))
    assert "| colour-robust accuracy | colour-robust macro-F1 |" in header
    assert "| int8 TFLite, LiteRT | 0.9900 | 0.9800 | 0.6100 | 0.5500 |" in table
    assert "| float Keras, TensorFlow | 0.9900 | - | - | - |" in table
    rows = [line for line in table.splitlines() if line.startswith("| int8") or line.startswith("|---")]
    assert len({line.count("|") for line in rows[:2]}) == 1  # as many cells as the header
    assert "reads the cells" in table
    assert "has no `shortcuts.colour_target`" in markdown_table({**results, "colour_target": None})
