"""End to end: ``python -m train`` for a couple of epochs on a tiny synthetic dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smearscope_core.manifest import read_manifest
from smearscope_core.model_card import read_card
from tests.factories import PROJECT_ROOT, RUN_FILES


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_two_epoch_run_writes_a_complete_run_folder(dataset_with_problems: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _train(
        "--data",
        str(dataset_with_problems),
        "--out",
        str(out),
        "--image-size",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    assert "epoch   1/2" in result.stdout and "epoch   2/2" in result.stdout  # one progress line per epoch

    card = read_card(out / "model_card.json")  # validates against the schema
    assert card["training"]["epochs_run"] == 2
    assert card["input"] == {
        "height": 64,
        "width": 64,
        "channels": 3,
        "color_order": "RGB",
        "pixel_range": [0, 255],
        "dtype": "float32",
    }
    rows = read_manifest(out / "manifest.csv")
    import hashlib

    assert (
        card["training"]["dataset"]["manifest_sha256"]
        == hashlib.sha256((out / "manifest.csv").read_bytes()).hexdigest()
    )
    assert sum(sum(c.values()) for c in card["training"]["dataset"]["split_counts"].values()) == len(rows)

    report = json.loads((out / "dataset_report.json").read_text())
    assert report["files_rejected"] == 3
    assert report["duplicates"]["exact_duplicate_copies_dropped"] == 1

    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] == sum(card["training"]["dataset"]["split_counts"]["test"].values())
    assert set(test) >= {
        "accuracy",
        "macro",
        "per_class",
        "confusion_matrix",
        "roc_auc_ovr_macro",
        "calibration",
        "abstain",
    }
    assert metrics["temperature"] > 0
    # the shortcut baselines and the colour-robust figures, in the card (schema-checked above) and metrics.json
    shortcuts = card["shortcuts"]
    assert set(shortcuts["baselines"]) == {"colour", "corners", "file", "majority_class"}
    assert shortcuts["colour_robust"]["test"]["n"] == test["n"] and metrics["shortcuts"] == shortcuts
    assert len(shortcuts["colour_target"]["mean"]) == 3

    # the saved model takes raw pixels and gives one logit per class
    from train.model import load_float_model  # registers the custom layers the saved model may hold

    model = load_float_model(out / "model.keras")
    assert model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape == (1, 3)

    # a second run on the same manifest reuses exactly the same split, here under tf.distribute
    again = tmp_path / "again"
    result = _train(
        "--data", str(dataset_with_problems), "--out", str(again), "--manifest", str(out / "manifest.csv"),
        "--image-size", "64", "--epochs", "1", "--batch-size", "16", "--strategy", "mirrored",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_manifest(again / "manifest.csv") == rows
    assert read_card(again / "model_card.json")["training"]["settings"]["strategy"] == "mirrored"
