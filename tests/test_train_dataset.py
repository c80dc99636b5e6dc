"""Scan, class metadata, file validation, colour modes and the resize policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smearscope_core.errors import DatasetError
from smearscope_core.imaging import load_rgb, resize_for_model
from tests.factories import PROJECT_ROOT, make_dataset, smear_like
from train.dataset import scan_dataset


def test_scan_finds_classes_in_folder_order(tiny_dataset: Path) -> None:
    scan = scan_dataset(tiny_dataset)
    assert [c.name for c in scan.classes] == ["Alpha", "Beta", "Gamma"]
    assert [c.id for c in scan.classes] == [0, 1, 2]
    assert scan.class_counts() == {"Alpha": 20, "Beta": 20, "Gamma": 20}
    assert scan.rejected == []
    assert all(len(r.sha256) == 64 for r in scan.records)


def test_bad_files_are_reported_and_skipped(dataset_with_problems: Path) -> None:
    scan = scan_dataset(dataset_with_problems)
    reasons = {r.path: r.reason for r in scan.rejected}
    assert set(reasons) == {"Beta/broken.jpg", "Beta/tiny.png", "Beta/notes.txt"}
    assert "cannot be decoded" in reasons["Beta/broken.jpg"]
    assert "too small (8x8" in reasons["Beta/tiny.png"]
    assert "not an image" in reasons["Beta/notes.txt"]
    paths = {r.path for r in scan.records}
    for odd in ("palette.png", "rgba.png", "cmyk.jpg", "gray.png", "sixteen.png"):
        assert f"Gamma/{odd}" in paths


@pytest.mark.parametrize("mode", ["P", "RGBA", "CMYK", "L", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    base = smear_like(3, (120, 40, 140), 14)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    else:
        image = base.convert(mode)
    rgb = load_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.size == base.size
    grey = np.asarray(base.convert("L"), dtype=float).mean()
    assert abs(np.asarray(rgb.convert("L"), dtype=float).mean() - grey) < 40  # same picture, not garbage


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    rgb = np.asarray(load_rgb(Image.fromarray(ramp)))
    assert rgb.min() == 0 and rgb.max() == 255
    assert len(np.unique(rgb[..., 0])) > 200


def test_transparency_is_flattened_onto_white() -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert np.asarray(load_rgb(clear)).min() == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 40), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "o.jpg", exif=exif)
    assert load_rgb(tmp_path / "o.jpg").size == (40, 60)


def test_resize_policy_center_crops_then_resizes() -> None:
    wide = np.zeros((100, 200, 3), dtype=np.uint8)
    wide[:, 50:150] = 255  # the centre square is white, the sides black
    out = resize_for_model(Image.fromarray(wide), 32)
    assert out.size == (32, 32)
    assert np.asarray(out).min() > 200


def test_class_metadata_file_is_used(tiny_dataset: Path) -> None:
    (tiny_dataset / "classes.json").write_text(
        json.dumps(
            {
                "dataset": {"name": "Synthetic", "citation": ["Made by the tests."]},
                "classes": {"Beta": {"display_name": "Beta cells", "malignant": True, "severity": 3}},
            }
        )
    )
    scan = scan_dataset(tiny_dataset)
    beta = scan.classes[1]
    assert (beta.display_name, beta.malignant, beta.severity) == ("Beta cells", True, 3)
    assert scan.classes[0].malignant is False and scan.classes[0].display_name == "Alpha"
    assert scan.dataset_name == "Synthetic" and scan.citation == ["Made by the tests."]


def test_known_dataset_gets_built_in_defaults(tmp_path: Path) -> None:
    root = tmp_path / "all"
    for name in ("Benign", "Early", "Pre", "Pro"):
        (root / name).mkdir(parents=True)
        smear_like(len(name), (100, 50, 150), 12).save(root / name / "a.png")
    scan = scan_dataset(root)
    by_name = {c.name: c for c in scan.classes}
    assert by_name["Benign"].malignant is False and by_name["Benign"].severity == 0
    assert [by_name[n].severity for n in ("Early", "Pre", "Pro")] == [1, 2, 3]
    assert all(by_name[n].malignant for n in ("Early", "Pre", "Pro"))
    assert any("10.1002/int.22753" in line for line in scan.citation)


def test_metadata_errors_are_clear(tiny_dataset: Path) -> None:
    (tiny_dataset / "classes.json").write_text(json.dumps({"classes": {"Alpha": {"severity": 7}}}))
    with pytest.raises(DatasetError, match="severity 7"):
        scan_dataset(tiny_dataset)
    (tiny_dataset / "classes.json").write_text(json.dumps({"classes": {"Delta": {}}}))
    with pytest.raises(DatasetError, match="Delta"):
        scan_dataset(tiny_dataset)
    (tiny_dataset / "classes.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        scan_dataset(tiny_dataset)


def _one_class(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "one", per_class=3)
    for extra in ("Beta", "Gamma"):
        for f in (root / extra).iterdir():
            f.unlink()
        (root / extra).rmdir()
    return root


def _empty_class(tmp_path: Path) -> Path:
    root = make_dataset(tmp_path / "empty", per_class=3)
    (root / "Delta").mkdir()
    return root


def _unreadable(tmp_path: Path) -> Path:
    root = tmp_path / "junk"
    for name in ("A", "B"):
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_bytes(b"garbage")
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (_one_class, "at least two class folders"),
        (_empty_class, "is empty"),
        (_unreadable, "No readable images"),
    ],
)
def test_bad_dataset_stops_with_one_sentence(tmp_path: Path, make, message: str) -> None:
    root = make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        scan_dataset(root)
    # and the command line says it in one line, without a traceback
    result = subprocess.run(
        [sys.executable, "-m", "train", "--data", str(root), "--out", str(tmp_path / "run"), "--scan-only"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr
