"""On the real ALL dataset (../shared/datasets/all-4class): skipped with a reason where absent.

Also checks that the committed default run (runs/default) is consistent with the dataset.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smearscope_core.files import sha256_of
from smearscope_core.manifest import check_no_group_leak, read_manifest
from smearscope_core.model_card import read_card
from tests.factories import PROJECT_ROOT, REAL_DATA
from train.dataset import scan_dataset
from train.dedup import group_duplicates, perceptual_hashes
from train.split import make_split

DEFAULT_RUN = PROJECT_ROOT / "runs" / "default"
needs_real_data = pytest.mark.skipif(
    not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)"
)


@pytest.fixture(scope="module")
def real_scan():
    if not REAL_DATA.is_dir():
        pytest.skip(f"real dataset not found at {REAL_DATA}")
    scan = scan_dataset(REAL_DATA)
    return scan, group_duplicates(scan.records, perceptual_hashes(REAL_DATA, scan.records))


@needs_real_data
def test_real_dataset_scan_and_duplicates(real_scan) -> None:
    scan, duplicates = real_scan
    assert scan.class_counts() == {"Benign": 504, "Early": 985, "Pre": 963, "Pro": 804}
    assert scan.rejected == []
    # DATASET.md: the set has byte-identical pairs; each is grouped and kept once
    assert sum(len(c) for c in duplicates.exact_copies.values()) == 40
    assert duplicates.near_pairs > 0


@needs_real_data
def test_real_split_is_leak_free_and_deterministic(real_scan) -> None:
    scan, duplicates = real_scan
    rows = make_split(scan, duplicates, seed=42)
    check_no_group_leak(rows)
    assert rows == make_split(scan, duplicates, seed=42)
    assert len(rows) == 3256 - 40


@needs_real_data
def test_committed_manifest_matches_the_dataset(real_scan) -> None:
    scan, duplicates = real_scan
    rows = read_manifest(DEFAULT_RUN / "manifest.csv")
    check_no_group_leak(rows)
    # the committed manifest is what today's code makes from today's data
    assert rows == make_split(scan, duplicates, seed=read_card(DEFAULT_RUN / "model_card.json")["training"]["seed"])
    for row in rows[::97]:
        assert sha256_of(REAL_DATA / row.path) == row.sha256


def test_committed_default_run_is_consistent() -> None:
    card = read_card(DEFAULT_RUN / "model_card.json")
    metrics = json.loads((DEFAULT_RUN / "metrics.json").read_text())
    assert card["metrics"]["float_test"]["macro"] == metrics["test"]["macro"]
    counts = card["training"]["dataset"]["split_counts"]["test"]
    assert metrics["test"]["n"] == sum(counts.values())
    matrix = metrics["test"]["confusion_matrix"]["matrix"]
    assert [sum(row) for row in matrix] == [counts[name] for name in metrics["test"]["confusion_matrix"]["labels"]]
    import hashlib

    assert (
        hashlib.sha256((DEFAULT_RUN / "manifest.csv").read_bytes()).hexdigest()
        == card["training"]["dataset"]["manifest_sha256"]
    )


@needs_real_data
def test_shipped_bundle_colour_robust_figure_matches_its_card() -> None:
    """The shipped int8 model, through the app's runtime, on the colour-standardised test split: its card's figure."""
    from edge_app.bundle import load_bundle
    from edge_app.classify import Classifier
    from smearscope_core.calibration import softmax
    from smearscope_core.colour import standardise_colour
    from smearscope_core.manifest import load_images
    from train.metrics import classification_metrics

    bundle = load_bundle(PROJECT_ROOT / "edge_app" / "models" / "default")
    card = bundle.card
    if "shortcuts" not in card:
        pytest.fail("the shipped default has no shortcuts section: retrain or run --shortcuts-only and reconvert")
    names = [c["name"] for c in card["classes"]]
    rows = [r for r in read_manifest(DEFAULT_RUN / "manifest.csv") if r.split == "test"]
    images, labels = load_images(REAL_DATA, rows, int(card["input"]["height"]), names)
    classifier = Classifier(bundle, num_threads=1)
    logits = [classifier.logits(image) for image in standardise_colour(images, card["shortcuts"]["colour_target"])]
    probs = softmax(logits, classifier.temperature)
    metrics = classification_metrics(labels, probs, names, [c["malignant"] for c in card["classes"]])
    recorded = card["shortcuts"]["colour_robust"]["int8_test"]
    assert metrics["n"] == recorded["n"]
    assert metrics["macro"]["f1"] == pytest.approx(recorded["macro_f1"], abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)


@pytest.mark.slow
@needs_real_data
def test_short_training_on_a_real_subset(tmp_path: Path) -> None:
    """Two epochs on 30 real images per class (linked, never copied into the project)."""
    subset = tmp_path / "subset"
    for class_dir in sorted(p for p in REAL_DATA.iterdir() if p.is_dir()):
        (subset / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.glob("*.jpg"))[:30]:
            (subset / class_dir.name / image.name).symlink_to(image)
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "--data",
            str(subset),
            "--out",
            str(out),
            "--image-size",
            "96",
            "--epochs",
            "2",
            "--batch-size",
            "16",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    card = read_card(out / "model_card.json")
    assert [c["name"] for c in card["classes"]] == ["Benign", "Early", "Pre", "Pro"]
    assert card["training"]["dataset"]["citation"], "the ALL citation must reach the model card"
    assert json.loads((out / "metrics.json").read_text())["test"]["screening"] is not None
