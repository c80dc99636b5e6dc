"""The "does this look like training data?" check: features, calibration, and what it refers.

On the real dataset (skipped where absent) this measures what the issue asks: the share of the
real test split that is referred, against images unlike the training data (zoomed 2-3x,
recoloured, blank, out of focus, dark, photos that are not smears).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.datasets import load_sample_images

from smearscope_core.imaging import load_rgb, model_pixels
from smearscope_core.manifest import read_manifest
from smearscope_core.model_card import read_card
from smearscope_core.ood import FEATURE_NAMES, OodDetector, fit_ood, image_features
from tests.factories import PROJECT_ROOT, REAL_DATA, smear_like

SIZE = 64


def zoom(image: Image.Image, factor: float) -> Image.Image:
    """The centre 1/factor of the image blown up to full size: a higher magnification."""
    w, h = image.size
    box = (w / 2 - w / 2 / factor, h / 2 - h / 2 / factor, w / 2 + w / 2 / factor, h / 2 + h / 2 / factor)
    return image.crop(box).resize(image.size, Image.Resampling.BILINEAR)


def shift_hue(image: Image.Image, turn: float) -> Image.Image:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(turn * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def photo_crops(count: int = 20) -> list[Image.Image]:
    """Crops of the two photographs scikit-learn ships (a temple, a flower): not smears."""
    crops = []
    for photo in (Image.fromarray(a) for a in load_sample_images().images):
        w, h = photo.size
        rng = np.random.default_rng(0)
        for _ in range(count):
            side = int(rng.integers(100, min(w, h)))
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            crops.append(photo.crop((x, y, x + side, y + side)))
    return crops


UNLIKE = {
    "zoomed 2x": lambda im: zoom(im, 2),
    "zoomed 3x": lambda im: zoom(im, 3),
    "hue turned 1/3": lambda im: shift_hue(im, 1 / 3),
    "grayscale": lambda im: im.convert("L"),
    "blurred (sigma 4)": lambda im: im.filter(ImageFilter.GaussianBlur(4)),
    "dark": lambda im: Image.eval(im, lambda v: v // 6),
}


def test_features_are_finite_for_any_image() -> None:
    cases = [np.zeros((SIZE, SIZE, 3), np.uint8), np.full((SIZE, SIZE, 3), 255, np.uint8),
             np.asarray(smear_like(1, (120, 40, 140), 8, SIZE))]  # fmt: skip
    for pixels in cases:
        features = image_features(pixels)
        assert features.shape == (len(FEATURE_NAMES),)
        assert np.isfinite(features).all()


def test_synthetic_calibration_refers_what_is_unlike_training() -> None:
    def smears(start: int, count: int) -> list[Image.Image]:
        return [smear_like(start + i, (150 - i % 40, 60, 160), 6 + i % 6, 96) for i in range(count)]

    train = np.array([image_features(model_pixels(im, SIZE)) for im in smears(0, 120)])
    val = np.array([image_features(model_pixels(im, SIZE)) for im in smears(1000, 60)])
    detector = OodDetector.from_card({"ood": fit_ood(train, val)})
    fresh = smears(5000, 60)
    referred = np.mean([bool(detector.reasons(model_pixels(im, SIZE))[0]) for im in fresh])
    assert referred <= 0.1
    for name in ("hue turned 1/3", "grayscale", "blurred (sigma 4)", "dark"):
        rate = np.mean([bool(detector.reasons(model_pixels(UNLIKE[name](im), SIZE))[0]) for im in fresh])
        assert rate >= 0.9, (name, rate)
    blank = np.full((SIZE, SIZE, 3), 230, np.uint8)
    reasons, _ = detector.reasons(blank)
    assert any("blank" in r for r in reasons)


def test_card_without_matching_features_is_refused() -> None:
    with pytest.raises(ValueError, match="other image features"):
        OodDetector.from_card({"ood": {"features": ["x"], "mean": [0], "precision": [[1]], "threshold": 1,
                                       "quality_limits": {}}})  # fmt: skip
    assert OodDetector.from_card({}) is None


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA}")
def test_real_test_split_passes_and_unlike_images_are_referred(tmp_path: Path) -> None:
    card = read_card(PROJECT_ROOT / "runs" / "default" / "model_card.json")
    detector = OodDetector.from_card(card)
    size = card["input"]["height"]
    rows = [r for r in read_manifest(PROJECT_ROOT / "runs" / "default" / "manifest.csv") if r.split == "test"]
    images = [load_rgb(REAL_DATA / r.path) for r in rows[::3]]

    def rate(batch: list[Image.Image]) -> float:
        return float(np.mean([bool(detector.reasons(model_pixels(im, size))[0]) for im in batch]))

    rates = {"real test split": rate(images)}
    for name, change in UNLIKE.items():
        rates[name] = rate([change(im) for im in images])
    rates["blank fields"] = rate([Image.new("RGB", (224, 224), (v, v, v)) for v in (0, 90, 180, 235, 255)])
    rates["photos that are not smears"] = rate(photo_crops())
    (tmp_path / "ood_rates.json").write_text(json.dumps(rates, indent=2))
    print("\nreferred rates:", json.dumps(rates, indent=2))
    assert rates["real test split"] <= 0.05
    for name in ("zoomed 3x", "hue turned 1/3", "grayscale", "blurred (sigma 4)", "dark", "blank fields",
                 "photos that are not smears"):  # fmt: skip
        assert rates[name] >= 0.9, (name, rates[name])
    assert rates["zoomed 2x"] >= 0.3  # the weakest case: measured about 0.5; see docs
