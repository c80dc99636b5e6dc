"""Shortcut baselines and colour-robust metrics (train/shortcuts.py, smearscope_core/colour.py), on data made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smearscope_core.colour import colour_statistics, colour_target, standardise_colour
from train.microscopes import MICROSCOPES, Microscope, simulate
from train.run_folder import RunSplit
from train.shortcuts import baseline_scores, colour_robust, corner_features, file_features, shortcuts_section


def test_standardise_colour_hand_checked() -> None:
    # one 1x2 image: R = (10, 30) -> mean 20, std 10; G constant 50 -> std 0; B = (0, 200) -> mean 100, std 100
    image = np.array([[[[10, 50, 0], [30, 50, 200]]]], dtype=np.uint8)
    assert colour_statistics(image).tolist() == [[20.0, 50.0, 100.0, 10.0, 0.0, 100.0]]
    target = {"mean": [100.0, 100.0, 100.0], "std": [20.0, 20.0, 20.0]}
    # R: (10-20)/10*20+100 = 80, (30-20)/10*20+100 = 120; G: a flat channel stays flat at the target mean;
    # B: (0-100)/100*20+100 = 80, 120
    assert standardise_colour(image, target).tolist() == [[[[80, 100, 80], [120, 100, 120]]]]
    assert colour_target(np.concatenate([image, image])) == {"mean": [20.0, 50.0, 100.0], "std": [10.0, 0.0, 100.0]}


def test_standardised_images_share_the_target_statistics() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 16, 16, 3)).astype(np.uint8) // rng.integers(1, 4, (5, 1, 1, 3)).astype(np.uint8)
    target = {"mean": [180.0, 150.0, 200.0], "std": [30.0, 25.0, 20.0]}
    stats = colour_statistics(standardise_colour(images, target))
    assert np.allclose(stats[:, :3], target["mean"], atol=1.0) and np.allclose(stats[:, 3:], target["std"], atol=1.0)


def _coloured(colours: list[tuple[int, int, int]], per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is their colour cast and nothing else: the shortcut a colour baseline finds."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, colour in enumerate(colours):
        for _ in range(per_class):
            noise = rng.normal(0, 8, (16, 16, 3))
            images.append(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def test_colour_baseline_finds_a_pure_colour_shortcut_and_standardising_removes_it() -> None:
    colours = [(220, 200, 230), (190, 205, 245), (235, 230, 240)]
    train_x, train_y = _coloured(colours, 12, 1)
    test_x, test_y = _coloured(colours, 6, 2)
    scores = baseline_scores(colour_statistics(train_x), train_y, colour_statistics(test_x), test_y,
                             [False, True, True])  # fmt: skip
    assert scores == {"accuracy": 1.0, "macro_f1": 1.0, "malignant_vs_benign_accuracy": 1.0}
    # after standardisation the images carry no class information: a "model" that reads colour is at chance
    target = colour_target(train_x)
    means = colour_statistics(standardise_colour(test_x, target))[:, :3]
    assert np.ptp(means, axis=0).max() < 1.0


def test_colour_robust_scores_a_model_on_standardised_images() -> None:
    colours = [(220, 200, 230), (190, 205, 245)]
    x, y = _coloured(colours, 5, 3)
    split = RunSplit(x, y, [])
    target = colour_target(x)

    def reads_red(images: np.ndarray) -> np.ndarray:  # a model that reads only the red mean
        red = images[..., 0].mean(axis=(1, 2))
        return np.stack([red - 205.0, 205.0 - red], axis=1)

    robust = colour_robust(reads_red, split, target, 1.0, ["A", "B"], [False, True])
    assert robust["n"] == 10 and robust["accuracy"] == pytest.approx(0.5)  # every image now looks the same
    assert robust["sensitivity"] in (0.0, 1.0) and robust["specificity"] in (0.0, 1.0)


def test_corner_and_file_features(tmp_path: Path) -> None:
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    images[1, :2, :2] = 255  # a mark in the top-left corner of the second image
    features = corner_features(images)
    assert features.shape == (2, 24) and features[0].max() == 0 and features[1, 0] == 255.0
    Image.new("RGB", (20, 10)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    rows = file_features([tmp_path / "a.jpg", tmp_path / "b.png"])
    assert rows[:, 1:].tolist() == [[20.0, 10.0, 1.0], [8.0, 8.0, 0.0]]


def test_shortcuts_section_has_every_baseline(tmp_path: Path) -> None:
    colours = [(220, 200, 230), (190, 205, 245)]
    splits = {}
    for index, name in enumerate(("train", "val", "test")):
        x, y = _coloured(colours, 4, 10 + index)
        paths = []
        for i, image in enumerate(x):
            paths.append(tmp_path / f"{name}-{i}.png")
            Image.fromarray(image).save(paths[-1])
        splits[name] = RunSplit(x, y, paths)
    section = shortcuts_section(lambda images: np.zeros((len(images), 2)), splits, 1.0, ["A", "B"], [False, True])
    assert set(section["baselines"]) == {"colour", "corners", "file", "majority_class"}
    assert section["baselines"]["colour"]["accuracy"] == 1.0
    assert set(section["colour_robust"]) == {"val", "test"} and section["colour_robust"]["test"]["n"] == 8


def test_simulated_microscopes() -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    assert np.array_equal(simulate(images, Microscope("the training lab's own")), images)  # neutral is a no-op
    stronger = simulate(images, Microscope("stronger stain", od_scale=(1.5, 1.5, 1.5)))
    assert stronger.mean() < images.mean()  # more stain absorbs more light
    flat = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    flat[0, 8:24, 8:24] = 200  # a centred square fills the field at 2x
    assert simulate(flat, Microscope("2x", zoom=2.0))[0, 4:28, 4:28].min() >= 190
    assert set(MICROSCOPES) >= {"zoom_2x", "other_lab_1.4x"}
    section = shortcuts_section(
        lambda x: np.zeros((len(x), 2)),
        {s: RunSplit(images, np.array([0, 1]), []) for s in ("train", "val", "test")},
        1.0,
        ["A", "B"],
        [False, True],
        baselines=False,
    )
    assert set(section["simulated_microscopes"]) == set(MICROSCOPES)
