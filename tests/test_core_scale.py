"""The magnification check (``smearscope_core.scale``) on synthetic fields of discs of known size.

The real-data figures (test split zoomed, larger camera frames, other microscopes, other labs) are measured by
``python -m bench.field_scale``; these tests only need Pillow: pink discs of a known diameter on a pale background.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from smearscope_core.imaging import model_pixels
from smearscope_core.scale import METHOD, METHOD_VERSION, ScaleCheck, field_scale, fit_scale, nice_ratio

SIZE = 128
PINK, PALE = (205, 140, 160), (245, 240, 235)


def disc_field(diameter: float, size: int = SIZE, seed: int = 0, cover: float = 0.35, colours=(PINK, PALE)):
    """Non-overlapping discs of ``diameter`` pixels covering about ``cover`` of a ``size`` square, as an image."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), colours[1])
    draw = ImageDraw.Draw(image)
    centres: list[np.ndarray] = []
    wanted = int(cover * size * size / (math.pi * diameter**2 / 4))
    for _ in range(5000):
        if len(centres) >= wanted:
            break
        centre = rng.uniform(-diameter / 2, size + diameter / 2, 2)
        if all(np.hypot(*(centre - other)) > 1.1 * diameter for other in centres):
            centres.append(centre)
            x, y = centre
            draw.ellipse([x - diameter / 2, y - diameter / 2, x + diameter / 2, y + diameter / 2], fill=colours[0])
    return image


def zoom(image: Image.Image, factor: float) -> Image.Image:
    """The centre 1/factor of the image resized back to its size: a higher magnification."""
    w, h = image.size
    side_w, side_h = round(w / factor), round(h / factor)
    left, top = (w - side_w) // 2, (h - side_h) // 2
    return image.crop((left, top, left + side_w, top + side_h)).resize((w, h), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def check() -> ScaleCheck:
    """Fitted on "training" fields like the camera's: 224 px, discs of 19-23 px (11-13 px at the model's size)."""
    rng = np.random.default_rng(1)
    values = [field_scale(model_pixels(disc_field(rng.uniform(19, 23), 224, seed), SIZE)) for seed in range(30)]
    return ScaleCheck.from_section(fit_scale(np.array(values[:18]), np.array(values[18:]), image_size=SIZE))


def test_the_diameter_of_discs_is_measured_within_15_percent():
    for diameter in (6, 8, 12, 16, 24):
        for seed in range(2):
            assert field_scale(np.asarray(disc_field(diameter, seed=seed))) == pytest.approx(diameter, rel=0.15)


def test_doubling_the_discs_doubles_the_figure():
    small, large = (field_scale(np.asarray(disc_field(d, seed=3))) for d in (8, 16))
    assert large / small == pytest.approx(2.0, rel=0.15)


def test_the_figure_is_about_shape_not_colour():
    pink = field_scale(np.asarray(disc_field(12, seed=4)))
    blue_on_grey = field_scale(np.asarray(disc_field(12, seed=4, colours=((90, 100, 190), (200, 200, 200)))))
    gray = field_scale(np.asarray(disc_field(12, seed=4).convert("L").convert("RGB")))
    assert blue_on_grey == pytest.approx(pink, rel=0.05)
    assert gray == pytest.approx(pink, rel=0.05)


def test_a_zoomed_field_is_referred_and_a_larger_camera_frame_is_not(check):
    field = disc_field(21, 224, seed=100)
    assert check.check(model_pixels(field, SIZE)).reason is None
    frame = field.resize((3 * 224, 3 * 224), Image.Resampling.BICUBIC)  # the same field, 3x the pixels a side
    result = check.check(model_pixels(frame, SIZE))
    assert result.reason is None and result.ratio == pytest.approx(1.0, abs=0.1)
    zoomed = check.check(model_pixels(zoom(field, 2), SIZE))
    assert zoomed.ratio == pytest.approx(2.0, rel=0.2)
    assert zoomed.reason is not None and zoomed.reason.startswith("the cells look about 2x larger")
    assert "Model tab" in zoomed.reason


def test_a_field_at_a_lower_magnification_is_referred_as_smaller(check):
    tiles = Image.new("RGB", (448, 448))
    for k in range(4):
        tiles.paste(disc_field(21, 224, seed=200 + k), ((k % 2) * 224, (k // 2) * 224))
    result = check.check(model_pixels(tiles, SIZE))
    assert result.ratio == pytest.approx(0.5, rel=0.2)
    assert result.reason is not None and result.reason.startswith("the cells look about 2x smaller")


def test_a_blank_field_has_no_scale_and_no_scale_reason(check):
    blank = np.full((SIZE, SIZE, 3), 240, dtype=np.uint8)
    assert math.isnan(field_scale(blank))
    result = check.check(blank)
    assert math.isnan(result.ratio) and result.reason is None


def test_the_card_section_round_trips_through_json_and_checks_its_method():
    rng = np.random.default_rng(0)
    train, val = rng.normal(9, 0.5, 200), np.append(rng.normal(9, 0.5, 40), np.nan)
    section = fit_scale(train, val, image_size=SIZE)
    assert json.loads(json.dumps(section)) == section
    assert section["method"] == METHOD and section["version"] == METHOD_VERSION
    assert section["median"] == pytest.approx(np.median(train))
    assert section["n"] == {"train": 200, "val": 40, "unmeasured": 1}
    assert section["band"]["low"] < 1 < section["band"]["high"] and section["image_size"] == SIZE
    check = ScaleCheck.from_section(json.loads(json.dumps(section)))
    assert check.ratio(2 * section["median"]) == pytest.approx(2.0)
    assert check.reason(section["median"]) is None
    assert ScaleCheck.from_section(None) is None
    with pytest.raises(ValueError, match="measured with"):
        ScaleCheck.from_section(section | {"version": METHOD_VERSION + 1})
    with pytest.raises(ValueError, match="at least 10"):
        fit_scale(train[:5], val)


def test_ratios_are_said_as_a_person_would():
    assert [nice_ratio(r) for r in (1.3, 1.43, 1.95, 2.3, 2.9, 4.4)] == ["1.25", "1.5", "2", "2.5", "3", "4"]


def test_a_non_rgb_array_is_refused():
    with pytest.raises(ValueError, match="RGB"):
        field_scale(np.zeros((SIZE, SIZE), dtype=np.uint8))
