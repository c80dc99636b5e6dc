"""Occlusion-sensitivity heatmap: where covering the image changes the model's mind.

It needs only forward passes, so it works with the int8 TFLite model (no gradients, no
TensorFlow). A patch of the image's mean colour slides over the model-sized image; the heat at a
place is how much the predicted class's logit margin (its logit minus the best other class's)
shrinks when that place is hidden. The margin matters: a confident model's probability, and even
its log-probability, sit at 1.0 and 0.0 whichever patch is hidden (measured on the default model:
changes below 1e-8), while the margin still moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from edge_app.classify import Classifier

# (position, RGB) stops of a perceptual dark-purple -> orange -> yellow ramp (like matplotlib's inferno)
_RAMP = np.array(
    [
        (0.00, (0, 0, 4)),
        (0.25, (87, 16, 110)),
        (0.50, (188, 55, 84)),
        (0.75, (249, 142, 9)),
        (1.00, (252, 255, 164)),
    ],
    dtype=object,
)


@dataclass
class Heatmap:
    heat: np.ndarray  # float32 [size, size] in [0, 1], 1 = most important
    target_class: int
    base_probability: float
    max_drop: float  # largest margin drop seen (logits / temperature); near 0: no single region decides


def occlusion_heatmap(
    classifier: Classifier, pixels: np.ndarray, patch: int | None = None, stride: int | None = None
) -> Heatmap:
    """Slide a patch of the image's mean colour; record how much the top class's margin shrinks."""
    size = pixels.shape[0]
    patch = patch or max(8, size // 8)
    stride = stride or max(4, patch // 2)
    logits = classifier.logits(pixels).astype(np.float64) / classifier.temperature
    target = int(np.argmax(logits))
    base_margin = _margin(logits, target)
    fill = pixels.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    heat = np.zeros((size, size), dtype=np.float64)
    hits = np.zeros((size, size), dtype=np.float64)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    for top in starts:
        for left in starts:
            occluded = pixels.copy()
            occluded[top : top + patch, left : left + patch] = fill
            occluded_logits = classifier.logits(occluded).astype(np.float64) / classifier.temperature
            drop = base_margin - _margin(occluded_logits, target)
            heat[top : top + patch, left : left + patch] += max(drop, 0.0)
            hits[top : top + patch, left : left + patch] += 1
    heat /= np.maximum(hits, 1)
    max_drop = float(heat.max())
    normalized = heat / max_drop if max_drop > 1e-6 else heat
    probability = float(np.exp(logits[target] - np.logaddexp.reduce(logits)))
    return Heatmap(normalized.astype(np.float32), target, probability, max_drop)


def _margin(logits: np.ndarray, target: int) -> float:
    return float(logits[target] - np.delete(logits, target).max())


def colorize(heat: np.ndarray) -> np.ndarray:
    """Map [0, 1] heat to RGB uint8 with the ramp above."""
    positions = np.array([p for p, _ in _RAMP], dtype=np.float64)
    colours = np.array([c for _, c in _RAMP], dtype=np.float64)
    flat = np.clip(heat.ravel(), 0, 1)
    rgb = np.stack([np.interp(flat, positions, colours[:, k]) for k in range(3)], axis=1)
    return rgb.reshape(*heat.shape, 3).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, opacity: float = 0.6) -> Image.Image:
    """The heatmap on the image (any size): colour where it matters, the smear left clear elsewhere."""
    base = image.convert("RGB")
    colour = Image.fromarray(colorize(heat)).resize(base.size, Image.Resampling.BILINEAR)
    alpha = Image.fromarray((np.clip(heat, 0, 1) * opacity * 255).astype(np.uint8)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    return Image.composite(colour, base, alpha)
