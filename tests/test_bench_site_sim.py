"""``python -m bench.site_sim``: the simulated clinic on a tiny synthetic dataset and manifest (groups never cross
sides, classes split evenly, same bytes twice, the two-label variant), its image steps (HED round trip, the
eyepiece's vignette), bad input, and the real val+test images where ../shared/datasets/all-4class is present."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.site_sim import (
    SIDES,
    SITE_FILE,
    SITE_MANIFEST,
    SITES,
    Site,
    build,
    main,
    plan,
    shift_stain,
    simulate,
    vignette,
)
from smearscope_core.errors import ExitCode
from smearscope_core.files import sha256_of
from smearscope_core.manifest import ManifestRow, read_manifest, write_manifest
from smearscope_core.paths import PROJECT_ROOT
from tests.factories import REAL_DATA, make_dataset
from train.dataset import load_class_metadata

CLASSES_JSON = {
    "dataset": {"name": "synthetic", "citation": ["made by the tests"]},
    "classes": {
        "Alpha": {"display_name": "Alpha cells", "malignant": False, "severity": 0, "description": "benign ones"},
        "Beta": {"display_name": "Beta ALL", "malignant": True, "severity": 1, "description": "b"},
        "Gamma": {"display_name": "Gamma ALL", "malignant": True, "severity": 3, "description": "g"},
    },
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-class dataset of 16 images per class with classes.json, and a manifest: 4 per class in train, the rest
    in val and test, with near-duplicate groups of 2 and 3 images (a group wholly in one split, as train makes)."""
    root = tmp_path_factory.mktemp("site-source")
    data = make_dataset(root / "data", per_class=16, size=64)
    (data / "classes.json").write_text(json.dumps(CLASSES_JSON))
    rows, group = [], 0
    for class_name in CLASSES_JSON["classes"]:
        paths = sorted((data / class_name).glob("*.png"))
        sizes = [1, 1, 1, 1, 2, 3, 1, 2, 1, 1, 2, 1]  # 4 train singles, then 12 val/test images in groups
        index = 0
        for n, size in enumerate(sizes):
            split = "train" if n < 4 else ("val" if n % 2 else "test")
            for path in paths[index : index + size]:
                relative = path.relative_to(data).as_posix()
                rows.append(ManifestRow(relative, sha256_of(path), class_name, split, group))
            index += size
            group += 1
    manifest = root / "manifest.csv"
    write_manifest(rows, manifest)
    return data, manifest


def site_rows(out: Path) -> list[dict[str, str]]:
    with open(out / SITE_MANIFEST, newline="") as handle:
        return list(csv.DictReader(handle))


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_groups_stay_whole_and_every_class_is_halved(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, manifest = source
    out = tmp_path / "site"
    assert main(["--out", str(out), "--data", str(data), "--manifest", str(manifest), "--site", "phone-eyepiece"]) == 0
    rows = site_rows(out)
    assert {r["source_split"] for r in rows} == {"val", "test"} and len(rows) == 3 * 12  # train images never used
    sides_of_group = defaultdict(set)
    for row in rows:
        sides_of_group[row["group"]].add(row["side"])
        assert (out / row["file"]).is_file() and row["file"].startswith(f"{row['side']}/{row['class']}/")
        assert row["class"] == row["source_class"]
    assert all(len(sides) == 1 for sides in sides_of_group.values())
    counts = Counter((r["source_class"], r["side"]) for r in rows)
    for class_name in CLASSES_JSON["classes"]:
        assert abs(counts[(class_name, "calibration")] - counts[(class_name, "heldout")]) <= 3  # the largest group
        for side in SIDES:
            files = sorted((out / side / class_name).iterdir())
            assert len(files) == counts[(class_name, side)] > 0
            with Image.open(files[0]) as image:
                assert image.format == "JPEG" and image.size == (64, 64)
    for side in SIDES:  # the dataset's class metadata beside the class folders, read as training reads it
        metadata = json.loads((out / side / "classes.json").read_text())
        assert metadata["classes"] == CLASSES_JSON["classes"]
        classes = load_class_metadata(out / side, ["Alpha", "Beta", "Gamma"])[0]
        assert [c.malignant for c in classes] == [False, True, True]
    record = json.loads((out / SITE_FILE).read_text())
    assert record["site"] == "phone-eyepiece" and record["parameters"]["zoom"] == SITES["phone-eyepiece"].zoom
    assert sum(record["counts"]["calibration"].values()) + sum(record["counts"]["heldout"].values()) == 36


def test_same_inputs_and_seed_give_the_same_bytes(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, manifest = source
    built = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build(tmp_path / name, data, manifest, "phone-eyepiece", seed=seed)
        built.append(folder_bytes(tmp_path / name))
    assert built[0] == built[1]
    images = [k for k in built[0] if k.endswith(".jpg")]
    assert built[2].keys() != built[0].keys() or any(built[2][k] != built[0][k] for k in images)
    # building again into the same folder replaces the previous site, byte for byte
    build(tmp_path / "a", data, manifest, "phone-eyepiece", seed=0)
    assert folder_bytes(tmp_path / "a") == built[0]


def test_every_site_and_label_set_hold_out_the_same_images(source: tuple[Path, Path]) -> None:
    data, manifest = source
    rows = read_manifest(manifest)
    classes = load_class_metadata(data, ["Alpha", "Beta", "Gamma"])[0]
    four = {p.row.path: p.side for p in plan(rows, classes, "source", 0.5, seed=0)}
    two = {p.row.path: p.side for p in plan(rows, classes, "two", 0.5, seed=0)}
    assert four == two


def test_two_labels_pool_the_malignant_classes(source: tuple[Path, Path], tmp_path: Path) -> None:
    data, manifest = source
    out = tmp_path / "two"
    args = ["--out", str(out), "--data", str(data), "--manifest", str(manifest), "--labels", "two"]
    assert main([*args, "--site", "other-lab-camera"]) == ExitCode.OK
    for side in SIDES:
        assert sorted(p.name for p in (out / side).iterdir()) == ["benign", "classes.json", "malignant"]
        metadata = json.loads((out / side / "classes.json").read_text())
        assert metadata["dataset"]["citation"] == ["made by the tests"]
        benign, malignant = metadata["classes"]["benign"], metadata["classes"]["malignant"]
        assert benign["malignant"] is False and benign["severity"] == 0 and benign["display_name"] == "Alpha cells"
        assert malignant["malignant"] is True and malignant["severity"] == 3  # the highest pooled
        assert "Beta ALL" in malignant["description"] and "Gamma ALL" in malignant["description"]
        assert set(malignant) == set(benign) == {"display_name", "malignant", "severity", "description"}
    rows = site_rows(out)
    assert all(r["class"] == ("benign" if r["source_class"] == "Alpha" else "malignant") for r in rows)


def test_hed_round_trip_is_the_identity_without_a_shift() -> None:
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)  # every colour
    back = np.round(shift_stain(cube, np.ones(3), np.zeros(3)))
    assert np.abs(back - cube).max() <= 1
    stronger = shift_stain(np.array([[120, 60, 160]], dtype=np.uint8), np.array([1.3, 1.0, 1.0]), np.zeros(3))
    assert (stronger < [[120, 60, 160]]).all()  # more stain: darker


def test_the_eyepiece_vignette_darkens_corners_and_keeps_the_centre() -> None:
    flat = np.full((60, 80, 3), 200.0)
    out = vignette(flat, diameter=0.92, edge=0.02, falloff=0.25, outside=4.0)
    assert out[0, 0].max() < 10 and out[-1, -1].max() < 10 and out[30, 2].max() < 10  # outside the circle
    assert np.allclose(out[29:31, 39:41], 200.0, atol=1.0)  # the centre as it was
    assert 140 < out[30, 40 + 24].mean() < out[30, 40 + 10].mean() < 200  # dimmer towards the rim
    only_field = Site("vignette only", field=0.92, rim_falloff=0.25)
    picture = simulate(Image.fromarray(flat.astype(np.uint8)), only_field, np.random.default_rng(0))
    assert picture.size == (80, 60) and np.asarray(picture)[0, 0].max() < 10


def test_zoom_keeps_the_size_and_magnifies(tmp_path: Path) -> None:
    image = np.full((64, 96, 3), 255, dtype=np.uint8)
    image[24:40, 40:56] = (120, 40, 140)  # a 16-px 'cell' in the centre
    magnified = np.asarray(simulate(Image.fromarray(image), Site("zoom only", zoom=2.0), np.random.default_rng(0)))
    assert magnified.shape == image.shape
    dark = (magnified.mean(axis=2) < 200).sum()
    assert 3.0 < dark / (16 * 16) < 5.0  # twice the side: about four times the area


def test_bad_input_gets_one_sentence(source: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, manifest = source
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("someone's files")
    cases = {
        ("--out", str(occupied)): "is not empty and holds no site.json",
        ("--out", str(data / "site")): "is inside the dataset",
        ("--out", str(tmp_path / "x"), "--manifest", str(tmp_path / "none.csv")): "does not exist",
        ("--out", str(tmp_path / "y"), "--share", "1.5"): "between 0 and 1",
    }
    for args, expected in cases.items():
        full = ["--data", str(data), "--manifest", str(manifest), *args]
        assert main(full) == ExitCode.BAD_INPUT, args
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and expected in error and "\n" not in error, error
    assert (occupied / "notes.txt").is_file() and not (data / "site").exists()


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)")
def test_real_val_and_test_images_split_by_group(tmp_path: Path) -> None:
    manifest = PROJECT_ROOT / "runs" / "default" / "manifest.csv"
    rows = read_manifest(manifest)
    names = sorted({r.class_name for r in rows})
    classes = load_class_metadata(REAL_DATA, names)[0]
    placements = plan(rows, classes, "source", 0.5, seed=0)
    source = [r for r in rows if r.split in ("val", "test")]
    assert len(placements) == len(source) == 919
    sides_of_group = defaultdict(set)
    for placement in placements:
        sides_of_group[placement.row.group].add(placement.side)
    assert all(len(sides) == 1 for sides in sides_of_group.values())
    counts = Counter((p.class_name, p.side) for p in placements)
    for name in names:
        total = counts[(name, "calibration")] + counts[(name, "heldout")]
        assert total == sum(r.class_name == name for r in source)
        assert abs(counts[(name, "calibration")] - counts[(name, "heldout")]) <= 3
    # a few real images through the phone site, at the source size, in bounded time
    few = {p.row.path for p in placements[::115]}
    started = time.perf_counter()
    record = build(tmp_path / "site", REAL_DATA, manifest, "phone-eyepiece", only=few)
    assert time.perf_counter() - started < 60
    assert record["source"]["images"] == len(few) == 8
    for row in site_rows(tmp_path / "site"):
        with Image.open(REAL_DATA / row["source"]) as original, Image.open(tmp_path / "site" / row["file"]) as made:
            assert made.size == original.size and made.format == "JPEG"
