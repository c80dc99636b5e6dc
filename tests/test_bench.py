"""The benchmark suite in its quick mode, so it cannot rot (figures are not judged here: they are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import markdown_table, targets
from tests.factories import PROJECT_ROOT, REAL_DATA


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
