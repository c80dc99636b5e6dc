"""Simulated other microscopes: what a clinic's camera, stain and optics do to the training lab's images.

No image from another lab with ALL labels ships with the project, so the out-of-lab test is made from
the held-out test split: each entry of ``MICROSCOPES`` (one table, one routine) changes every test
image the way another setup would, and the raw model (argmax, before any refer check) is scored on
the result. What matters most is sensitivity: an ALL smear must not turn "benign" because the stain
or the camera differ. The app's unfamiliar-image check and the abstain rule come on top of this.

Every change is seeded, so the figures are reproducible. The steps, applied to the model-sized image:
- stain: the optical density (-log of transmitted light) of each channel scaled and shifted, as a
  stronger or weaker stain batch or another staining protocol does (Tellez et al. 2019);
- camera: gamma and white balance (per-channel gain);
- optics: zoom (a centre crop resized back: a higher magnification), blur (focus), JPEG re-encoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Microscope:
    description: str
    od_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # stain strength per channel
    od_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gamma: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    zoom: float = 1.0
    blur: float = 0.0  # Gaussian radius in pixels at the model's size
    jpeg_quality: int | None = None


MICROSCOPES = {
    "stronger_stain_warm_camera": Microscope(
        "30% stronger eosin-side stain, warm white balance, gamma 0.8",
        od_scale=(1.1, 1.3, 1.0), gamma=0.8, white_balance=(1.08, 1.0, 0.9),
    ),
    "weaker_stain_cool_camera": Microscope(
        "25% weaker stain, cool white balance, gamma 1.25, JPEG quality 60",
        od_scale=(0.75, 0.8, 0.75), gamma=1.25, white_balance=(0.92, 1.0, 1.1), jpeg_quality=60,
    ),
    "other_lab_1.4x": Microscope(
        "stain mixed in optical density, gamma 0.9, 1.4x zoom, slight blur, JPEG quality 75",
        od_scale=(1.15, 0.9, 1.05), od_shift=(0.02, 0.0, 0.03), gamma=0.9, white_balance=(1.0, 0.97, 1.05),
        zoom=1.4, blur=0.6, jpeg_quality=75,
    ),
    "zoom_2x": Microscope("2x magnification (centre crop resized back), nothing else", zoom=2.0),
}  # fmt: skip


def simulate(images: np.ndarray, microscope: Microscope) -> np.ndarray:
    """Every uint8 [N, H, W, 3] image as ``microscope`` would have taken it."""
    return np.stack([_one(image, microscope) for image in images])


def _one(image: np.ndarray, scope: Microscope) -> np.ndarray:
    light = (image.astype(np.float64) + 1.0) / 256.0
    density = -np.log(light) * np.asarray(scope.od_scale) + np.asarray(scope.od_shift)
    light = np.exp(-np.clip(density, 0.0, None))
    light = np.clip(light * np.asarray(scope.white_balance), 0.0, 1.0) ** scope.gamma
    picture = Image.fromarray(np.clip(light * 256.0 - 1.0, 0, 255).round().astype(np.uint8))
    size = picture.size[0]
    if scope.zoom != 1.0:
        side = round(size / scope.zoom)
        start = (size - side) // 2
        picture = picture.crop((start, start, start + side, start + side)).resize((size, size), Image.BILINEAR)
    if scope.blur:
        picture = picture.filter(ImageFilter.GaussianBlur(scope.blur))
    if scope.jpeg_quality is not None:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=scope.jpeg_quality)
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return np.asarray(picture, dtype=np.uint8)
