"""How large are the cells? The magnification check: a field's scale against the training images'.

Zoom is the most common difference between two microscopes (objective, camera adapter, digital
zoom, a crop), and a model that has only seen red cells about 9 pixels across answers confidently,
and wrongly, on a field where they are 18. So the app measures the scale of each field on the
model-sized image and compares it with the training images' (stored in the model card): "cells
look about 2x larger than in the images this model knows" is something a technician can fix.

``field_scale`` is the typical cell diameter in model pixels, by radial-symmetry voting (after Loy
and Zelinsky's fast radial symmetry transform): every strong luminance edge votes for the centre of
a dark round object of radius r, one step of r against its gradient, for a ladder of radii; at the
radius of the cells the votes of each cell's rim meet in one place. How often two votes land in the
same cell of a grid (of pitch proportional to r), against chance, makes a curve over r whose peak
is the typical radius. Each edge pixel casts one vote whatever its contrast, and edges into the
darkest insides (white cells, nuclei) do not vote, so the many pale red cells set the scale rather
than the few dark white cells; colour does not enter (the simulated stain, gamma and white-balance
changes and grayscale move the median by at most 2%). Radii from 9 pixels up are voted on a
half-size image and from 18 up on a quarter-size one, so the texture inside a large zoomed white
cell does not pass for small cells.
It needs numpy only: 0.63 ms median per 128 x 128 image on the development VM (one thread).

Measured with ``python -m bench.field_scale`` (bench/results/*-field-scale.md): training images
measure 8.8 px (5th-95th percentile 7.8-10.3); zoomed fields 1.21x (1.25x zoom), 1.43x (1.5x),
2.3x (2x), 2.75x (3x); the same field from a 2-4x larger camera frame, flipped, turned or
re-encoded 1.00-1.01x. Simpler figures scatter more over the training images (the luminance
autocorrelation half-width refers 20% of fields zoomed 1.5x, the power-spectrum peak 3%, this 91%).
Out-of-focus fields measure a little larger (1.07x median).

A larger camera frame of the same field is reduced to the model's size before this runs
(``imaging.model_pixels``), so it measures the same; a zoomed field (a higher magnification, a
crop) measures larger. ``fit_scale`` makes the card section from the training split's values (the
median) and the validation split's (the accepted band, from both splits' extreme quantiles);
``ScaleCheck`` turns a value into a ratio and, outside the band, a reason with advice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

METHOD = "radial-symmetry-votes"
METHOD_VERSION = 2  # 2: edges into the darkest 40% do not vote, coarser levels weighted 1.4, 29 radii

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_RADII = np.geomspace(2.0, 64.0, 29)  # model pixels: cell diameters of 4 to 128, in steps of 13%
_LEVEL_FROM = (0.0, 9.0, 18.0)  # radii from 9 px are voted on the half-size image, from 18 on the quarter-size
_COARSE_WEIGHT = 1.4  # the smaller images' curves count this much more: their edges are fewer and smoother
_EDGE_SHARE = 0.30  # the strongest 30% of a level's gradients vote...
_MAX_EDGES = (3000, 1500, 1000)  # ...at most this many of them per level (every k-th), for a bounded cost...
_DARK_SHARE = 0.40  # ...and not those whose darker side (1.5 px in) is among the darkest 40% of the voters':
_DARK_STEP = 1.5  # the rims of white cells and their nuclei, so that the many red cells set the scale
_PITCH = 0.35  # the vote grid's pitch, as a fraction of the radius
_SMOOTHING = 0.15  # the curve is smoothed over log radius with a Gaussian of this width before its peak is taken
_CHUNK = 16384  # votes computed at a time: on some machines each 4 kB of a large temporary costs a page fault

# Band and message defaults (see fit_scale and ScaleCheck)
BAND_QUANTILES = (0.005, 0.995)
# (below, above): the band is widened less above, where a zoomed field (the common and dangerous shift) falls, than
# below, where the densest training fields of small cells lie (chosen on shifted copies of the val split)
BAND_MARGIN = (1.08, 1.02)
_NICE_RATIOS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def field_scale(pixels: np.ndarray) -> float:
    """The typical cell diameter in pixels of a uint8 RGB image [H, W, 3] (model-sized), or NaN when it
    shows no edges at all (a blank field: the image checks refer it anyway)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"field_scale needs an RGB image [H, W, 3], not an array of shape {pixels.shape}")
    curve = scale_curve(pixels)
    if not np.isfinite(curve).all() or curve.max() <= 0:
        return float("nan")
    return _peak_diameter(curve)


def scale_curve(pixels: np.ndarray) -> np.ndarray:
    """Vote concentration against chance for each radius of ``_RADII`` (1 = no preferred size)."""
    lum = np.asarray(pixels, dtype=np.float32) @ _LUMA
    curve = np.zeros(len(_RADII))
    level_of_radius = np.searchsorted(_LEVEL_FROM, _RADII, side="right") - 1
    for level in range(len(_LEVEL_FROM)):
        if level:
            lum = _half(lum)
        chosen = level_of_radius == level
        if chosen.any() and min(lum.shape) >= 8:
            weight = _COARSE_WEIGHT if level else 1.0
            curve[chosen] = weight * _level_curve(lum, _RADII[chosen] / 2**level, _MAX_EDGES[level])
    return curve


def _half(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = image[:h, :w]
    return 0.25 * (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2])


def _level_curve(lum: np.ndarray, radii: np.ndarray, max_edges: int) -> np.ndarray:
    gy = np.zeros_like(lum)
    gx = np.zeros_like(lum)
    gy[1:-1] = lum[2:] - lum[:-2]
    gx[:, 1:-1] = lum[:, 2:] - lum[:, :-2]
    strength = (gy * gy + gx * gx).ravel()
    edges = np.flatnonzero(strength > _quantile(strength, 1 - _EDGE_SHARE))
    if edges.size > max_edges:
        edges = edges[:: -(-edges.size // max_edges)]
    if edges.size < 8:
        return np.zeros(len(radii))
    norm = np.sqrt(strength[edges])
    uy, ux = gy.ravel()[edges] / norm, gx.ravel()[edges] / norm  # unit vectors towards the brighter side
    y, x = (a.astype(np.float32) for a in np.divmod(edges, lum.shape[1]))
    inside = (y - _DARK_STEP * uy + 0.5).astype(np.intp) * lum.shape[1]
    inside += (x - _DARK_STEP * ux + 0.5).astype(np.intp)  # off the image at its border: any pixel will do
    inner = np.take(lum, inside, mode="clip")  # the luminance just inside each edge
    keep = inner >= _quantile(inner, _DARK_SHARE)  # ties kept: flat synthetic discs keep every edge
    y, x, uy, ux = y[keep], x[keep], uy[keep], ux[keep]
    count = y.size
    if count < 8:
        return np.zeros(len(radii))
    pitch = np.maximum(1.0, _PITCH * radii)
    margin = np.ceil(radii / pitch) + 2  # keeps votes off the image >= 0, so truncation is floor
    width = (np.ceil(lum.shape[1] / pitch) + 2 * margin + 1).astype(np.int32)
    per_pitch, steps = (1 / pitch).astype(np.float32)[:, None], (radii / pitch).astype(np.float32)[:, None]
    margin = margin.astype(np.float32)[:, None]
    pairs = np.empty(len(radii))
    chunk = max(1, _CHUNK // count)  # radii at a time: on some machines a large temporary costs a page fault per 4 kB
    for first in range(0, len(radii), chunk):
        part = slice(first, first + chunk)
        # each edge's vote for radius r: r towards the darker side, as a cell of a grid of pitch ~r
        votes = (y * per_pitch[part] - steps[part] * uy + margin[part]).astype(np.int32)
        votes *= width[part, None]
        votes += (x * per_pitch[part] - steps[part] * ux + margin[part]).astype(np.int32)
        for index, cells in enumerate(votes, start=first):
            pairs[index] = np.bincount(cells)[cells].sum() - count  # the sum over grid cells of n * (n - 1)
    return pairs * lum.size / (count * (count - 1) * pitch * pitch)  # 1 when votes fall as if at random


def _quantile(values: np.ndarray, share: float) -> float:
    """About the ``share`` quantile of ``values`` (from every fifth value: cheaper than np.quantile)."""
    sample = values[::5]
    rank = min(int(sample.size * share), sample.size - 1)
    return float(np.partition(sample, rank)[rank])


@lru_cache(maxsize=1)
def _smoother() -> np.ndarray:
    log_radius = np.log(_RADII)
    weights = np.exp(-0.5 * ((log_radius[:, None] - log_radius[None, :]) / _SMOOTHING) ** 2)
    return weights / weights.sum(axis=0, keepdims=True)


def _peak_diameter(curve: np.ndarray) -> float:
    smooth = (curve / curve.max()) @ _smoother()
    best = int(np.argmax(smooth))
    shift = 0.0
    if 0 < best < len(smooth) - 1:
        left, middle, right = smooth[best - 1 : best + 2]
        bend = left - 2 * middle + right
        shift = 0.5 * (left - right) / bend if bend < 0 else 0.0
    step = math.log(_RADII[1] / _RADII[0])
    return float(2 * math.exp(math.log(_RADII[best]) + shift * step))


def fit_scale(
    train_values: np.ndarray,
    val_values: np.ndarray,
    quantiles: tuple[float, float] = BAND_QUANTILES,
    margin: float | tuple[float, float] = BAND_MARGIN,
    image_size: int | None = None,
) -> dict:
    """The model card's scale section from ``field_scale`` of every training and validation image.

    ``median``: the training images' typical cell diameter (model pixels), what a ratio is taken to.
    ``band``: the ratios that pass, the ``quantiles`` of both splits' ratios widened by ``margin`` (a factor, or one
    below and one above: the low quantile is divided by it, the high one multiplied).
    ``image_size``: the model's input side the values were measured at, recorded where given.
    Images without a value (NaN: no edges, blank) are left out and counted.
    """
    train = np.asarray(train_values, dtype=np.float64).ravel()
    val = np.asarray(val_values, dtype=np.float64).ravel()
    train_ok, val_ok = train[np.isfinite(train)], val[np.isfinite(val)]
    if train_ok.size < 10 or val_ok.size < 10:
        raise ValueError("fit_scale needs at least 10 measured images in each of the training and validation splits")
    below, above = (margin, margin) if isinstance(margin, int | float) else margin
    if not (0 <= quantiles[0] < 0.5 < quantiles[1] <= 1 and below >= 1 and above >= 1):
        raise ValueError(f"fit_scale needs quantiles around the median and margins >= 1, not {quantiles}, {margin}")
    median = float(np.median(train_ok))
    low, high = np.quantile(np.concatenate([train_ok, val_ok]) / median, quantiles)
    percentiles = (1, 5, 50, 95, 99)
    section = {
        "method": METHOD,
        "version": METHOD_VERSION,
        "unit": "cell diameter in model pixels",
        "median": median,
        "train_quantiles": {f"p{p}": float(v) for p, v in zip(percentiles, np.percentile(train_ok, percentiles),
                                                               strict=True)},
        "band": {"low": float(low / below), "high": float(high * above)},
        "quantiles": [float(q) for q in quantiles],
        "margin": {"low": float(below), "high": float(above)},
        "n": {"train": int(train_ok.size), "val": int(val_ok.size),
              "unmeasured": int(train.size - train_ok.size + val.size - val_ok.size)},
        "fitted_on": {"median": "train", "band": "train+val"},
    }  # fmt: skip
    if image_size is not None:
        section["image_size"] = int(image_size)
    return section


def nice_ratio(ratio: float) -> str:
    """``ratio`` as a figure a person would say: the nearest of 1.25, 1.5, 2, 2.5, 3, 4, ... (or 0.8, 0.7, 0.5, ...)."""
    nearest = min(_NICE_RATIOS, key=lambda nice: abs(math.log(ratio / nice)))
    return f"{nearest:g}"


@dataclass(frozen=True)
class ScaleResult:
    diameter: float  # the cells' typical diameter in model pixels (NaN: not measurable)
    ratio: float  # diameter / the training images' median (NaN: not measurable)
    reason: str | None  # why to refer, with what to do about it; None: the scale is like the training images'


@dataclass(frozen=True)
class ScaleCheck:
    """The magnification check, from the model card's ``scale`` section (see ``fit_scale``)."""

    median: float
    low: float
    high: float

    @classmethod
    def from_section(cls, section: dict | None) -> ScaleCheck | None:
        """None for a card without the section; ValueError for one measured by another method or version."""
        if not section:
            return None
        if section.get("method") != METHOD or section.get("version") != METHOD_VERSION:
            raise ValueError(
                f"The model card's scale calibration was measured with {section.get('method')} version "
                f"{section.get('version')}; this app measures with {METHOD} version {METHOD_VERSION}."
            )
        return cls(float(section["median"]), float(section["band"]["low"]), float(section["band"]["high"]))

    def ratio(self, diameter: float) -> float:
        return diameter / self.median if math.isfinite(diameter) else float("nan")

    def reason(self, diameter: float) -> str | None:
        """Why to refer an image whose cells measure ``diameter`` model pixels; None within the band, and None
        when there is nothing to measure (a blank field: the image checks refer it)."""
        ratio = self.ratio(diameter)
        if not math.isfinite(ratio) or self.low <= ratio <= self.high:
            return None
        sizes = f"typical cell {diameter:.0f} pixels across at the model's input size, expected about {self.median:.0f}"
        if ratio > self.high:
            return (
                f"the cells look about {nice_ratio(ratio)}x larger than in the images this model knows ({sizes}): "
                "the field is magnified more than the training images were; use the same objective as the training "
                "images (see the Model tab), no digital zoom, and photograph the whole field of view"
            )
        return (
            f"the cells look about {nice_ratio(1 / ratio)}x smaller than in the images this model knows ({sizes}): "
            "the field is magnified less than the training images were; use the same objective as the training "
            "images (see the Model tab), and photograph one field as it is, not a reduced or combined picture"
        )

    def check(self, pixels: np.ndarray) -> ScaleResult:
        """Measure one model-sized image (``field_scale``) and judge it."""
        diameter = field_scale(pixels)
        return ScaleResult(diameter, self.ratio(diameter), self.reason(diameter))
