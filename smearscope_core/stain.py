"""Site colour mapping: one microscope's colour mapped onto the training images' colour, before the model.

A clinic's stain batch, lamp, camera white balance and gamma shift every image's colour the same way,
and colour is most of the gap between labs (issue 12). So a site calibration fits one fixed colour
transform from the pooled statistics of all the site's images (its microscope's colour, not one image's
content) onto the training split's statistics, stored in the base card's ``colour_reference`` section;
the app applies it to every image of that site before the model and before the unfamiliarity checks.
Fitted per site, not per image: an image's own content (a field full of blasts, or nearly empty) must
not change how it is recoloured.

``COLOUR_MAPPINGS`` is the one table of methods, and one routine serves them all:
- ``none``: the identity (a site whose colour already matches, or a base card without a reference);
- ``reinhard-lab``: Reinhard et al. 2001 colour transfer, each CIE L*a*b* channel's pooled mean and
  standard deviation matched to the reference's (sRGB D65 <-> Lab in numpy);
- ``macenko``: Macenko et al. 2009 stain vectors in optical density, OD = -log((I + 1) / (white + 1)):
  pixels with |OD| < 0.15 (bare glass) dropped, the plane of the two largest singular vectors, the
  1st/99th angle percentiles in it as the two stain vectors (the one absorbing more red first, the usual
  "H first" rule), concentrations by least squares, each stain's 99th-percentile concentration scaled to
  the reference's and recomposed with the reference's stain vectors. Three changes to the textbook
  method, each measured necessary below: the white point is each channel's 95th percentile of the pooled
  pixels, not 255 (a camera's white balance otherwise reads as stain); the site's stains are paired with
  the reference's by direction (the ordering rule flips between microscopes); and the OD outside the
  stain plane is kept (with the other two, dropping it cost 1 to 19 points of accuracy per site).
Both are one fixed per-pixel function once fitted (precomputed in ``ColourMapping.from_section``):
about 2 ms (Reinhard) and 1 ms (Macenko) for a 224 x 224 image on one core.

Measured for issue 12 (the table is in docs/model-card.md, ``colour_reference``):
reference from 500 train images, 300 real test images through four simulated other microscopes (two
stain/camera entries of train/microscopes.py, an HED stain shift, other_lab_1.4x) and unchanged, each
mapping fitted on 30 images per class and scored on the other 180 with the float default model.
``macenko`` held up best: accuracy 0.972-0.994 on every site, at most two images below the unmapped
accuracy (Reinhard fell from 0.967 to 0.906 on the weaker, cooler JPEG site), and the colour statistics
closest to the training set's on three of the five; both lifted the HED-shifted site from 0.922 to
0.98-0.99 and its ALL images called benign from 11 to 1. The textbook Macenko (255 white, rule order,
residual dropped) fell to 0.22-0.33 on two sites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from smearscope_core.errors import InputError

SAMPLE_PIXELS = 2_000_000  # pooled statistics come from at most this many pixels, spread evenly over the images
TRANSPARENT_OD = 0.15  # Macenko: pixels whose optical-density vector is shorter than this (nearly glass): not stain
STAIN_PERCENTILE = 1.0  # Macenko: the stain vectors are the 1st and 99th percentile angles in the OD plane
CONCENTRATION_PERCENTILE = 99.0  # Macenko: the "maximum" concentration of each stain
MIN_STAINED_PIXELS = 100  # Macenko: fewer stained pixels than this cannot give two stain vectors
WHITE_PERCENTILE = 95.0  # Macenko: each channel's white point (the glass), from the pooled pixels

CHUNK_PIXELS = 65_536  # pixels per step: small 3 x 3 products stay fast (one large one took 30x as long here)
_GOLDEN = 0.6180339887498949  # low-discrepancy pixel sampling without row aliasing, and deterministic
_DIGITS = 6  # statistics rounded in the card


class ColourMappingError(InputError):
    """A colour mapping that cannot be fitted or a card section that cannot be used: one sentence."""


# ---------------------------------------------------------------- sRGB <-> CIE L*a*b* (D65)

_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = _RGB_TO_XYZ.sum(axis=1)  # D65 as the matrix's own white: sRGB white is exactly L* 100, a* b* 0
_DELTA = 6.0 / 29.0
_F_TO_LAB = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])  # Lab = F @ f + offset
_LAB_OFFSET = np.array([-16.0, 0.0, 0.0])


def _decode(codes: np.ndarray) -> np.ndarray:
    """sRGB code values 0..1 -> linear light."""
    return np.where(codes <= 0.04045, codes / 12.92, ((codes + 0.055) / 1.055) ** 2.4)


def _encode_exact(linear: np.ndarray) -> np.ndarray:
    """Linear light -> the nearest sRGB uint8 code (out of gamut clips to 0 or 255)."""
    linear = np.clip(linear, 0.0, 1.0)
    codes = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(codes * 255.0).astype(np.uint8)


_LINEAR = _decode(np.arange(256) / 255.0)  # uint8 -> linear light, exact by lookup
_ENCODE_STEPS = 65535  # linear light -> uint8 by a lookup this fine: within 0.03 of a code level before rounding
_ENCODE = _encode_exact(np.arange(_ENCODE_STEPS + 1) / _ENCODE_STEPS)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _f_inverse(f: np.ndarray) -> np.ndarray:
    return np.where(f > _DELTA, f * f * f, 3 * _DELTA**2 * (f - 4.0 / 29.0))


def _encode(linear: np.ndarray) -> np.ndarray:
    """Linear light -> uint8 sRGB by the lookup table (10x faster than searching the 255 rounding points)."""
    return _ENCODE[(np.clip(linear, 0.0, 1.0) * _ENCODE_STEPS + 0.5).astype(np.uint16)]


def _rows(matrix: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``matrix`` transposed for pixel rows (``rows @ _rows(m)`` is ``m`` applied to each pixel), C-contiguous:
    numpy's product with a transposed view was 20x to 100x slower here."""
    return np.ascontiguousarray(np.asarray(matrix).T, dtype=dtype)


_TO_F = _rows(_RGB_TO_XYZ / _WHITE[:, None])  # linear RGB -> X/Xn, Y/Yn, Z/Zn
_FROM_F = _rows(np.linalg.inv(_RGB_TO_XYZ) * _WHITE)
_LAB = _rows(_F_TO_LAB)
_FROM_LAB = _rows(np.linalg.inv(_F_TO_LAB))


def _starts(rows: np.ndarray) -> range:
    return range(0, len(rows), CHUNK_PIXELS)


def _in_chunks(function: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, dtype: type) -> np.ndarray:
    """``function`` over [..., 3] pixels CHUNK_PIXELS rows at a time (speed, and memory for large images)."""
    rows = pixels.reshape(-1, 3)
    out = np.empty(rows.shape, dtype=dtype)
    for start in _starts(rows):
        out[start : start + CHUNK_PIXELS] = function(rows[start : start + CHUNK_PIXELS])
    return out.reshape(pixels.shape)


def _product(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rows @ matrix`` for many pixel rows, in chunks."""
    matrix = np.ascontiguousarray(matrix)
    return np.concatenate([rows[s : s + CHUNK_PIXELS] @ matrix for s in _starts(rows)])


def rgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """uint8 sRGB [..., 3] -> float64 CIE L*a*b* [..., 3] (D65)."""
    return _in_chunks(
        lambda rows: _f(_LINEAR[rows] @ _TO_F) @ _LAB + _LAB_OFFSET, np.asarray(pixels, dtype=np.uint8), np.float64
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* [..., 3] -> uint8 sRGB [..., 3], out-of-gamut colours clipped."""
    return _in_chunks(
        lambda rows: _encode(_f_inverse((rows - _LAB_OFFSET) @ _FROM_LAB) @ _FROM_F),
        np.asarray(lab, dtype=np.float64),
        np.uint8,
    )


# ---------------------------------------------------------------- the methods

Statistics = dict[str, np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]  # uint8 [P, 3] -> uint8 [P, 3]


def _lab_statistics(pixels: np.ndarray) -> Statistics:
    lab = rgb_to_lab(pixels)
    return {"mean": lab.mean(axis=0), "std": lab.std(axis=0)}


def _lab_transform(source: Statistics, target: Statistics) -> Transform:
    """Lab' = (Lab - mean_s) * std_t / std_s + mean_t. Lab is affine in f(X/Xn, Y/Yn, Z/Zn), so the whole
    transfer is one 3 x 3 matrix and offset on f: cube root in, cube out, three small products per pixel."""
    gain = target["std"] / source["std"]
    to_f = np.linalg.inv(_F_TO_LAB)
    matrix = _rows(to_f @ np.diag(gain) @ _F_TO_LAB, np.float32)
    shift = (to_f @ (gain * (_LAB_OFFSET - source["mean"]) + target["mean"] - _LAB_OFFSET)).astype(np.float32)
    linear, forward, backward = _LINEAR.astype(np.float32), _TO_F.astype(np.float32), _FROM_F.astype(np.float32)

    def transform(pixels: np.ndarray) -> np.ndarray:  # float32: within a code level of float64 (tests)
        return _encode(_f_inverse(_f(linear[pixels] @ forward) @ matrix + shift) @ backward)

    return transform


_DENSITY = -np.log((np.arange(256) + 1.0) / 256.0)  # uint8 -> optical density against a 255 white, by lookup


def _white_density(white: np.ndarray) -> np.ndarray:
    """The optical density of the white point itself: subtracted, it makes the glass 0 whatever the camera."""
    return -np.log((np.asarray(white, dtype=np.float64) + 1.0) / 256.0)


def _macenko_statistics(pixels: np.ndarray) -> Statistics:
    white = np.percentile(pixels, WHITE_PERCENTILE, axis=0)
    density = _DENSITY[pixels] - _white_density(white)
    stained = density[np.sqrt((density * density).sum(axis=1)) >= TRANSPARENT_OD]
    if len(stained) < MIN_STAINED_PIXELS:
        raise ColourMappingError(
            f"The images have only {len(stained)} stained pixels (optical density {TRANSPARENT_OD} or more), too "
            f"few for Macenko stain vectors; use the reinhard-lab mapping."
        )
    gram = sum(stained[s : s + CHUNK_PIXELS].T @ stained[s : s + CHUNK_PIXELS] for s in _starts(stained))
    _, vectors = np.linalg.eigh(gram / len(stained))  # the right singular vectors of the OD, ascending
    plane = vectors[:, [2, 1]] * np.where(vectors[:, [2, 1]].sum(axis=0) < 0, -1.0, 1.0)  # the first one positive
    projected = _product(stained, plane)
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [STAIN_PERCENTILE, 100.0 - STAIN_PERCENTILE])
    first, second = (plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high))
    stains = np.array([first, second] if first[0] > second[0] else [second, first])  # H (more red absorbed) first
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    concentrations = _product(density, np.linalg.pinv(stains))
    return {
        "stain_matrix": stains,
        "max_concentrations": np.percentile(concentrations, CONCENTRATION_PERCENTILE, axis=0),
        "white": white,
    }


def _macenko_transform(source: Statistics, target: Statistics) -> Transform:
    """OD' = OD + (C * max_t / max_s) @ S_t - C @ S_s with C = OD @ pinv(S_s): the stains swapped and rescaled,
    what lies outside the stain plane kept; one 3 x 3 matrix on optical density, by lookup in and exp out."""
    stains, maxima = source["stain_matrix"], source["max_concentrations"]
    similarity = np.abs(stains @ target["stain_matrix"].T)
    if similarity[0, 1] + similarity[1, 0] > similarity[0, 0] + similarity[1, 1]:  # the ordering rule flipped
        stains, maxima = stains[::-1], maxima[::-1]
    unmix = np.linalg.pinv(stains)
    swap = unmix @ np.diag(target["max_concentrations"] / maxima) @ target["stain_matrix"]
    matrix = np.ascontiguousarray(np.eye(3) - unmix @ stains + swap, dtype=np.float32)
    density = (_DENSITY[:, None] - _white_density(source["white"])).astype(np.float32)  # [256, 3]: per channel
    channels = np.arange(3)
    white = (np.asarray(target["white"]) + 1.0).astype(np.float32)

    def transform(pixels: np.ndarray) -> np.ndarray:
        light = np.exp(-(density[pixels, channels] @ matrix)) * white - 1.0
        return np.clip(np.rint(light), 0, 255).astype(np.uint8)

    return transform


def _identity(source: Statistics, target: Statistics) -> Transform:
    return lambda pixels: pixels.copy()


@dataclass(frozen=True)
class ColourMethod:
    """One row of ``COLOUR_MAPPINGS``: what its statistics are and how a (source, target) pair maps colours."""

    description: str
    shapes: dict[str, tuple[int, ...]]  # the statistics' fields and shapes (checked when a section is read)
    statistics: Callable[[np.ndarray], Statistics] | None  # pooled uint8 [P, 3] pixels -> statistics
    transform: Callable[[Statistics, Statistics], Transform]
    positive: tuple[str, ...] = ()  # fields that must be above zero


COLOUR_MAPPINGS: dict[str, ColourMethod] = {
    "none": ColourMethod("no colour mapping", {}, None, _identity),
    "reinhard-lab": ColourMethod(
        "Reinhard et al. 2001: pooled mean and standard deviation of each CIE L*a*b* channel matched to the "
        "training images'",
        {"mean": (3,), "std": (3,)}, _lab_statistics, _lab_transform, positive=("std",),
    ),
    "macenko": ColourMethod(
        "Macenko et al. 2009: two stain vectors in optical density against the pooled white point, concentrations "
        "normalised to the training images' 99th percentile and recomposed with their stain vectors",
        {"stain_matrix": (2, 3), "max_concentrations": (2,), "white": (3,)}, _macenko_statistics,
        _macenko_transform, positive=("max_concentrations", "white"),
    ),
}  # fmt: skip
FITTED = tuple(name for name, method in COLOUR_MAPPINGS.items() if method.statistics is not None)


# ---------------------------------------------------------------- fitting


def _pooled_pixels(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """All the images' pixels as one uint8 [P, 3] sample: at most SAMPLE_PIXELS, the same share from each image."""
    if len(images) == 0:
        raise ColourMappingError("A colour mapping needs at least one image, and none were given.")
    share = max(1, SAMPLE_PIXELS // len(images))
    pooled = []
    for index, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ColourMappingError(
                f"Image {index} is {image.dtype} {list(image.shape)}; a colour mapping takes uint8 RGB "
                "[height, width, 3]."
            )
        flat = image.reshape(-1, 3)
        if len(flat) > share:
            flat = flat[(np.arange(share) * _GOLDEN % 1.0 * len(flat)).astype(np.int64)]
        pooled.append(flat)
    return np.concatenate(pooled)


def _rounded(statistics: Statistics) -> dict[str, list]:
    return {key: np.round(np.asarray(value, dtype=np.float64), _DIGITS).tolist() for key, value in statistics.items()}


def _check_method(method: object) -> ColourMethod:
    if not isinstance(method, str) or method not in COLOUR_MAPPINGS:
        raise ColourMappingError(
            f"Unknown colour mapping method {method!r}; choose one of {', '.join(sorted(COLOUR_MAPPINGS))}."
        )
    return COLOUR_MAPPINGS[method]


def colour_reference(images: np.ndarray) -> dict:
    """The card's ``colour_reference`` section: each method's pooled statistics of the training split's images.

    A method the images cannot give (a Macenko fit on nearly blank images) is left out, not an error: training
    must not fail on it, and a site calibration asking for it then says so.
    """
    pixels = _pooled_pixels(images)
    methods = {}
    for name in FITTED:
        try:
            methods[name] = _rounded(_statistics(name, COLOUR_MAPPINGS[name].statistics(pixels), "reference"))
        except ColourMappingError:
            continue
    return {"fitted_on": "train", "images": len(images), "methods": methods}


def fit_colour_mapping(method: str, site_images: Sequence[np.ndarray], reference: dict | None) -> dict:
    """The site card's ``site.colour_mapping``: the site's pooled statistics (``source``) and the training
    images' (``target``, from the base card's ``colour_reference`` section) for ``method``."""
    chosen = _check_method(method)
    if chosen.statistics is None:
        return {"method": method, "source": {}, "target": {}}
    if not isinstance(reference, dict) or not isinstance(reference.get("methods"), dict):
        raise ColourMappingError(
            "The base model card has no colour_reference section (it was trained before site colour mapping): "
            "refresh it with python -m train --out RUN --calibrate-ood-only and convert again, or use mapping none."
        )
    if method not in reference["methods"]:
        raise ColourMappingError(
            f"The base model card's colour_reference has no {method!r} statistics (its training images could not "
            "give them); use another colour mapping."
        )
    target = _rounded(_statistics(method, reference["methods"][method], "colour_reference"))
    source = _rounded(chosen.statistics(_pooled_pixels(site_images)))
    section = {"method": method, "source": source, "target": target}
    ColourMapping.from_section(section)  # a site too uniform to map (no spread, parallel stains) fails here
    return section


def _statistics(method: str, values: object, where: str) -> Statistics:
    """One side's statistics checked against the method's shapes: float arrays, finite, positive where needed."""
    spec = COLOUR_MAPPINGS[method]
    if not isinstance(values, dict):
        raise ColourMappingError(f"The {method} colour mapping's {where} must be an object of statistics.")
    checked = {}
    for key, shape in spec.shapes.items():
        try:
            array = np.asarray(values[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            array = None
        if array is None or array.shape != shape or not np.all(np.isfinite(array)):
            raise ColourMappingError(
                f"The {method} colour mapping's {where} needs {key!r} as {' x '.join(map(str, shape))} finite numbers."
            )
        if key in spec.positive and not np.all(array > 0):
            raise ColourMappingError(
                f"The {method} colour mapping's {where} has {key!r} {array.tolist()}, which must be above zero "
                "(images with no colour variation cannot be mapped)."
            )
        checked[key] = array
    if "stain_matrix" in checked and np.linalg.matrix_rank(checked["stain_matrix"], tol=1e-3) < 2:
        raise ColourMappingError(f"The {method} colour mapping's {where} has two parallel stain vectors.")
    return checked


# ---------------------------------------------------------------- applying


@dataclass(frozen=True)
class ColourMapping:
    """One site's fixed colour transform; ``apply`` recolours every image of the site the same way."""

    method: str
    _transform: Transform = field(repr=False)

    @classmethod
    def from_section(cls, section: dict | None) -> ColourMapping:
        """The mapping a ``site.colour_mapping`` section describes (None or method ``none``: the identity)."""
        if section is None:
            return cls("none", _identity({}, {}))
        if not isinstance(section, dict):
            raise ColourMappingError("The colour mapping section must be an object with a 'method'.")
        method = _check_method(section.get("method"))
        name = section["method"]
        if method.statistics is None:
            return cls(name, _identity({}, {}))
        source = _statistics(name, section.get("source"), "source")
        target = _statistics(name, section.get("target"), "target")
        return cls(name, method.transform(source, target))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] or [N, H, W, 3] -> the mapped uint8 pixels, same shape."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4) or pixels.shape[-1] != 3:
            raise ColourMappingError(
                f"Colour mapping takes uint8 RGB [height, width, 3] or [images, height, width, 3], not "
                f"{pixels.dtype} {list(pixels.shape)}."
            )
        return _in_chunks(self._transform, pixels, np.uint8)
