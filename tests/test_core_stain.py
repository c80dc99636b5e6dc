"""Site colour mapping (``smearscope_core.stain``) on made-up images whose colour change is known.

Two-stain images are composed in optical density from known stain vectors and concentrations, so the
Macenko fit can be checked against the truth and a stronger stain or another camera's white balance
mapped back onto the originals. The real-image comparison of the methods is in docs/model-card.md
(``colour_reference``); the training run's section is checked on the tiny run of tests/conftest.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from smearscope_core.stain import (
    COLOUR_MAPPINGS,
    ColourMapping,
    ColourMappingError,
    colour_reference,
    fit_colour_mapping,
    lab_to_rgb,
    rgb_to_lab,
)

# Ruifrok & Johnston's haematoxylin and eosin optical-density vectors, unit length
STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
STAINS /= np.linalg.norm(STAINS, axis=1, keepdims=True)


def two_stain_images(count: int = 6, size: int = 48, strength: float = 1.0, gain=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Fields of glass (no stain), pure-H and pure-E cells and mixtures, uint8 [count, size, size, 3].

    ``strength`` multiplies every concentration (a stronger stain batch); ``gain`` is a camera's per-channel
    white balance (light times gain, so the glass is no longer 255 in every channel).
    """
    rng = np.random.default_rng(7)
    concentrations = rng.uniform(0.1, 1.2, (count, size, size, 2))
    kind = rng.integers(0, 4, (count, size, size))  # 0 glass, 1 H only, 2 E only, 3 both
    concentrations[kind == 0] = 0.0
    concentrations[kind == 1, 1] = 0.0
    concentrations[kind == 2, 0] = 0.0
    density = strength * concentrations @ STAINS
    light = np.exp(-density) * 256.0 * np.asarray(gain)
    return np.clip(np.rint(light - 1.0), 0, 255).astype(np.uint8)


def pale_field_images(count: int = 6, size: int = 40, seed: int = 0) -> np.ndarray:
    """Smear-like colours well inside the sRGB gamut: a pale background and purple/pink blobs, with noise."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    for index in range(count):
        image = np.full((size, size, 3), (225.0, 215.0, 228.0))
        for colour in [(150, 90, 170), (200, 140, 160), (120, 80, 150)]:
            cy, cx = rng.integers(5, size - 5, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(16, 60)] = colour
        images[index] = image + rng.normal(0, 6, image.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def pooled_lab(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(images).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


# ---------------------------------------------------------------- sRGB <-> Lab


def test_lab_known_colours_and_round_trip_within_one_level() -> None:
    known = rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]], dtype=np.uint8))
    np.testing.assert_allclose(known[0], [100.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(known[1], [0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(known[2], [53.24, 80.09, 67.20], atol=0.02)  # sRGB red, the published value
    np.testing.assert_allclose(known[3, 1:], [0.0, 0.0], atol=1e-6)  # greys have no chroma
    levels = np.unique(np.r_[np.arange(0, 256, 5), 1, 2, 254, 255]).astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    back = lab_to_rgb(rgb_to_lab(grid))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - grid).max() <= 1


# ---------------------------------------------------------------- the identity and the section


def test_none_is_the_identity() -> None:
    images = pale_field_images(2)
    for section in (None, {"method": "none"}, fit_colour_mapping("none", list(images), None)):
        mapping = ColourMapping.from_section(section)
        assert mapping.method == "none"
        out = mapping.apply(images)
        assert out.dtype == np.uint8 and np.array_equal(out, images) and out is not images
    assert fit_colour_mapping("none", list(images), None) == {"method": "none", "source": {}, "target": {}}


@pytest.mark.parametrize("method", ["reinhard-lab", "macenko"])
def test_a_site_with_the_reference_colour_is_barely_changed(method: str) -> None:
    images = two_stain_images() if method == "macenko" else pale_field_images()
    section = fit_colour_mapping(method, list(images), colour_reference(images))
    out = ColourMapping.from_section(section).apply(images)
    assert np.abs(out.astype(int) - images).mean() < 0.6
    assert np.abs(out.astype(int) - images).max() <= 2


def test_colour_reference_is_a_deterministic_json_card_section() -> None:
    images = two_stain_images(4)
    reference = colour_reference(images)
    assert reference == colour_reference(images.copy())
    assert json.loads(json.dumps(reference)) == reference
    assert reference["fitted_on"] == "train" and reference["images"] == 4
    assert set(reference["methods"]) == {"reinhard-lab", "macenko"} == set(COLOUR_MAPPINGS) - {"none"}
    assert np.shape(reference["methods"]["reinhard-lab"]["mean"]) == (3,)
    assert np.shape(reference["methods"]["reinhard-lab"]["std"]) == (3,)
    assert np.shape(reference["methods"]["macenko"]["stain_matrix"]) == (2, 3)
    assert np.shape(reference["methods"]["macenko"]["max_concentrations"]) == (2,)


def test_blank_training_images_leave_macenko_out_and_the_site_is_told() -> None:
    blank = np.full((3, 16, 16, 3), 250, dtype=np.uint8)
    blank[:, :8] = 240  # some spread, no stain
    reference = colour_reference(blank)
    assert set(reference["methods"]) == {"reinhard-lab"}
    with pytest.raises(ColourMappingError, match=r"colour_reference has no 'macenko' statistics"):
        fit_colour_mapping("macenko", list(two_stain_images(2)), reference)
    with pytest.raises(ColourMappingError, match="too few for Macenko stain vectors"):
        fit_colour_mapping("macenko", list(blank), colour_reference(two_stain_images(2)))


# ---------------------------------------------------------------- known colour changes mapped back


def test_reinhard_brings_a_site_with_a_channel_gain_to_the_reference_statistics() -> None:
    reference_images = pale_field_images(6, seed=1)
    site = np.clip(np.rint(reference_images * np.array([0.85, 1.0, 1.08])), 0, 255).astype(np.uint8)
    reference = colour_reference(reference_images)
    section = fit_colour_mapping("reinhard-lab", list(site), reference)
    target_mean, target_std = pooled_lab(reference_images)
    np.testing.assert_allclose(section["target"]["mean"], target_mean, atol=1e-5)
    np.testing.assert_allclose(section["target"]["std"], target_std, atol=1e-5)
    site_mean, _ = pooled_lab(site)
    assert np.abs(site_mean - target_mean).max() > 5  # the gain moved the colour: a real change to undo
    mapped = ColourMapping.from_section(section).apply(site)
    mean, std = pooled_lab(mapped)
    np.testing.assert_allclose(mean, target_mean, atol=0.3)  # Lab units: only uint8 rounding left
    np.testing.assert_allclose(std, target_std, rtol=0.02)


def test_macenko_recovers_a_known_stain_matrix() -> None:
    fitted = colour_reference(two_stain_images(8))["methods"]["macenko"]
    stains = np.asarray(fitted["stain_matrix"])
    assert np.allclose(np.linalg.norm(stains, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(stains * STAINS, axis=1)  # H first: it absorbs more red than eosin does
    assert cosines.min() > 0.995, stains
    np.testing.assert_allclose(fitted["white"], [255, 255, 255])
    assert all(1.0 < value < 1.4 for value in fitted["max_concentrations"])


@pytest.mark.parametrize(
    ("change", "site"),
    [
        ("stain 40% stronger", dict(strength=1.4)),
        ("camera white balance", dict(gain=(0.9, 1.0, 0.8))),
        ("both", dict(strength=0.75, gain=(1.0, 0.92, 0.85))),
    ],
)
def test_macenko_maps_a_stronger_stain_or_another_camera_back_onto_the_reference(change: str, site: dict) -> None:
    reference_images = two_stain_images()
    site_images = two_stain_images(**site)
    assert np.abs(site_images.astype(int) - reference_images).mean() > 8, change
    section = fit_colour_mapping("macenko", list(site_images), colour_reference(reference_images))
    np.testing.assert_allclose(section["source"]["stain_matrix"], section["target"]["stain_matrix"], atol=0.01)
    mapped = ColourMapping.from_section(section).apply(site_images)
    assert np.abs(mapped.astype(int) - reference_images).mean() < 0.6, change


def test_macenko_pairs_the_stains_by_direction_when_the_ordering_rule_flips() -> None:
    reference = colour_reference(two_stain_images())
    section = fit_colour_mapping("macenko", list(two_stain_images(strength=1.2)), reference)
    flipped = json.loads(json.dumps(section))
    flipped["source"]["stain_matrix"].reverse()
    flipped["source"]["max_concentrations"].reverse()
    images = two_stain_images(2, strength=1.2)
    assert np.array_equal(
        ColourMapping.from_section(flipped).apply(images), ColourMapping.from_section(section).apply(images)
    )


# ---------------------------------------------------------------- applying


@pytest.mark.parametrize("method", ["none", "reinhard-lab", "macenko"])
def test_apply_keeps_shape_and_dtype_and_is_one_fixed_transform(method: str) -> None:
    reference = colour_reference(two_stain_images(4))
    site = two_stain_images(5, strength=1.3, gain=(0.95, 1.0, 0.9))
    mapping = ColourMapping.from_section(fit_colour_mapping(method, list(site), reference))
    batch = mapping.apply(site)
    assert batch.shape == site.shape and batch.dtype == np.uint8
    one = mapping.apply(site[2])
    assert one.shape == site[2].shape and one.dtype == np.uint8
    assert np.array_equal(one, batch[2])  # the other images of the batch do not change this one's colours
    odd = mapping.apply(np.ascontiguousarray(site[0, :31, 5:, :]))  # any size, a non-contiguous view too
    assert np.array_equal(odd, batch[0, :31, 5:, :])
    assert np.array_equal(mapping.apply(site[:, ::2, ::3]), batch[:, ::2, ::3])


def test_a_site_fit_uses_the_pooled_images_not_each_image() -> None:
    reference = colour_reference(pale_field_images(4, seed=3))
    site = list(pale_field_images(6, seed=4))
    first = fit_colour_mapping("reinhard-lab", site, reference)
    assert fit_colour_mapping("reinhard-lab", site, reference) == first  # deterministic
    assert fit_colour_mapping("reinhard-lab", site[:3], reference) != first  # the statistics are the site's


@pytest.mark.parametrize("method", ["reinhard-lab", "macenko"])
def test_apply_on_a_224_pixel_image_takes_a_few_milliseconds(method: str) -> None:
    reference = colour_reference(two_stain_images(4))
    mapping = ColourMapping.from_section(fit_colour_mapping(method, list(two_stain_images(4, strength=1.2)), reference))
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        mapping.apply(image)
        timings.append(time.perf_counter() - started)
    assert np.median(timings) < 0.025  # measured about 2 ms (Reinhard) and 1 ms (Macenko); slack for a busy machine


# ---------------------------------------------------------------- bad input: one sentence


def test_an_unknown_method_is_refused_with_a_sentence() -> None:
    message = r"Unknown colour mapping method 'hsv'; choose one of macenko, none, reinhard-lab\."
    with pytest.raises(ColourMappingError, match=message):
        ColourMapping.from_section({"method": "hsv"})
    with pytest.raises(ColourMappingError, match=message):
        fit_colour_mapping("hsv", list(pale_field_images(1)), None)
    with pytest.raises(ValueError, match="Unknown colour mapping method None"):  # an InputError is a ValueError
        ColourMapping.from_section({})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("reinhard-lab", "must be an object with a 'method'"),
        ({"method": "reinhard-lab", "target": {"mean": [1, 2, 3], "std": [1, 1, 1]}}, "source must be an object"),
        (
            {"method": "reinhard-lab", "source": {"mean": [1, 2], "std": [1, 1, 1]}, "target": {}},
            "source needs 'mean' as 3 finite numbers",
        ),
        (
            {"method": "reinhard-lab", "source": {"mean": [1, 2, 3], "std": [1, 0, 1]}, "target": {}},
            "has 'std' \\[1.0, 0.0, 1.0\\], which must be above zero",
        ),
        (
            {"method": "reinhard-lab", "source": {"mean": [1, "x", 3], "std": [1, 1, 1]}, "target": {}},
            "'mean' as 3 finite numbers",
        ),
        (
            {
                "method": "macenko",
                "source": {"stain_matrix": [[1, 0, 0], [2, 0, 0]], "max_concentrations": [1, 1], "white": [9, 9, 9]},
                "target": {},
            },
            "two parallel stain vectors",
        ),
        (
            {"method": "macenko", "source": {"stain_matrix": [[1, 0, 0]], "max_concentrations": [1, 1]}},
            "needs 'stain_matrix' as 2 x 3 finite numbers",
        ),
    ],
)
def test_a_malformed_section_is_refused_with_a_sentence(section: object, message: str) -> None:
    with pytest.raises(ColourMappingError, match=message):
        ColourMapping.from_section(section)  # type: ignore[arg-type]


def test_bad_images_and_a_missing_reference_are_refused_with_a_sentence() -> None:
    images = list(pale_field_images(2))
    with pytest.raises(ColourMappingError, match=r"no colour_reference section .* --calibrate-ood-only"):
        fit_colour_mapping("reinhard-lab", images, None)
    with pytest.raises(ColourMappingError, match="needs at least one image"):
        fit_colour_mapping("reinhard-lab", [], colour_reference(pale_field_images(2)))
    with pytest.raises(ColourMappingError, match=r"Image 1 is float64 \[8, 8, 3\]; a colour mapping takes uint8"):
        colour_reference([images[0], np.zeros((8, 8, 3))])
    mapping = ColourMapping.from_section(None)
    for pixels in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)):
        with pytest.raises(ColourMappingError, match="Colour mapping takes uint8 RGB"):
            mapping.apply(pixels)


# ---------------------------------------------------------------- the training run's card


@pytest.mark.slow
def test_training_and_the_ood_refresh_write_the_train_splits_colour_reference(
    tiny_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from smearscope_core.manifest import load_images, read_manifest
    from smearscope_core.model_card import read_card, write_card
    from train.ood_calibration import calibrate_run

    run, data = tiny_run
    card = read_card(run / "model_card.json")  # validated against the schema
    rows = [row for row in read_manifest(run / "manifest.csv") if row.split == "train"]
    names, size = [c["name"] for c in card["classes"]], card["input"]["height"]
    images, _ = load_images(data, rows, size, names)
    assert card["colour_reference"] == colour_reference(images)
    assert (
        card["colour_reference"]["images"]
        == len(rows)
        == sum(card["training"]["dataset"]["split_counts"]["train"].values())
    )
    assert set(card["colour_reference"]["methods"]) == {"reinhard-lab", "macenko"}

    refreshed = tmp_path / "run"  # a run from before the section: --calibrate-ood-only adds it
    shutil.copytree(run, refreshed)
    del card["colour_reference"]
    write_card(card, refreshed / "model_card.json")
    calibrate_run(refreshed, data)
    assert read_card(refreshed / "model_card.json")["colour_reference"] == colour_reference(images)
