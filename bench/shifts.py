"""The image shifts of ``python -m bench.outoflab``: one table (``SHIFTS``), one routine (``apply_shift``).

Each shift changes a real image where the change happens physically:
- ``ORIGINAL``: the image as the camera gave it, before the app's resize (``model_pixels``): a zoom (a
  centre crop resized back to the original size: a higher magnification of a smaller field), a larger
  camera frame of the same field (bicubic upsample), flips and quarter turns, JPEG re-encoding;
- ``MODEL``: the model-sized pixels, for the simulated other microscopes (train/microscopes.py's table
  and its routine) and harder changes of our own (much stronger stain, hue turned, heavy blur, dark,
  grayscale);
- ``GENERATED``: not a smear at all, drawn here from the seed (a blank slide, noise, a gradient, a text
  page, a checkerboard, a photo-like outdoor scene); never a dataset image.

Each shift belongs to a group with its own target (issue 11, section 5): the test images ``AS_IS``, the
``SAME_SMEAR`` photographed differently (must not be refused), ``OTHER_MICROSCOPE`` (zoom or another
setup: may be referred, must not be answered wrongly) and ``MUST_REFER`` (no right answer exists).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from smearscope_core.imaging import model_pixels
from train.microscopes import MICROSCOPES, Microscope, simulate

AS_IS = "as is"
SAME_SMEAR = "same smear"
OTHER_MICROSCOPE = "zoom & other microscope"
MUST_REFER = "must refer"
GROUPS = (AS_IS, SAME_SMEAR, OTHER_MICROSCOPE, MUST_REFER)

ORIGINAL = "original image"
MODEL = "model pixels"
GENERATED = "generated"


@dataclass(frozen=True)
class Shift:
    group: str
    description: str
    level: str = ORIGINAL
    zoom: float = 1.0  # ORIGINAL: centre crop of 1/zoom of each side, resized back to the original size
    frame: float = 1.0  # ORIGINAL: the same field in a camera frame this many times larger (bicubic)
    turn: Image.Transpose | None = None  # ORIGINAL: a flip or a quarter turn
    jpeg_quality: int | None = None  # ORIGINAL: re-encoded as JPEG
    microscope: Microscope | None = None  # MODEL: train/microscopes.py's simulation
    hue_degrees: float = 0.0  # MODEL: every colour's hue turned by this angle
    grayscale: bool = False  # MODEL: colour removed
    scene: str = ""  # GENERATED: a name in SCENES

    @property
    def has_truth(self) -> bool:
        """Whether the image's class is still the real image's (a generated scene has no class)."""
        return self.level != GENERATED


def _turn(name: str, turn: Image.Transpose) -> Shift:
    return Shift(SAME_SMEAR, f"the original {name}", turn=turn)


def _microscope(name: str) -> Shift:
    scope = MICROSCOPES[name]
    return Shift(OTHER_MICROSCOPE, f"train/microscopes.py `{name}`: {scope.description}", MODEL, microscope=scope)


def _own(group: str, description: str, **changes) -> Shift:
    return Shift(group, description, MODEL, microscope=Microscope(description, **changes))


SHIFTS: dict[str, Shift] = {
    "as is": Shift(AS_IS, "the image unchanged"),
    "flipped left-right": _turn("mirrored left to right", Image.Transpose.FLIP_LEFT_RIGHT),
    "flipped top-bottom": _turn("mirrored top to bottom", Image.Transpose.FLIP_TOP_BOTTOM),
    "turned 90": _turn("turned 90 degrees", Image.Transpose.ROTATE_90),
    "turned 180": _turn("turned 180 degrees", Image.Transpose.ROTATE_180),
    "turned 270": _turn("turned 270 degrees", Image.Transpose.ROTATE_270),
    "camera frame 2x": Shift(SAME_SMEAR, "the same field in a camera frame 2x larger (bicubic)", frame=2.0),
    "camera frame 3x": Shift(SAME_SMEAR, "the same field in a camera frame 3x larger (bicubic)", frame=3.0),
    "camera frame 4x": Shift(SAME_SMEAR, "the same field in a camera frame 4x larger (bicubic)", frame=4.0),
    "JPEG q75": Shift(SAME_SMEAR, "the original re-encoded as JPEG, quality 75", jpeg_quality=75),
    "zoom 1.25x": Shift(OTHER_MICROSCOPE, "centre crop of 1/1.25 of each side, resized back (bicubic)", zoom=1.25),
    "zoom 1.5x": Shift(OTHER_MICROSCOPE, "centre crop of 1/1.5 of each side, resized back (bicubic)", zoom=1.5),
    "zoom 2x": Shift(OTHER_MICROSCOPE, "centre crop of half of each side, resized back (bicubic)", zoom=2.0),
    "zoom 3x": Shift(OTHER_MICROSCOPE, "centre crop of a third of each side, resized back (bicubic)", zoom=3.0),
    **{f"microscope: {name}": _microscope(name) for name in MICROSCOPES},
    "microscope: stain 1.3x": _own(OTHER_MICROSCOPE, "stain 30% stronger (optical density)", od_scale=(1.3,) * 3),
    "microscope: gamma 0.8": _own(OTHER_MICROSCOPE, "camera gamma 0.8", gamma=0.8),
    "microscope: warm white balance": _own(OTHER_MICROSCOPE, "white balance red +8%, blue -10%",
                                           white_balance=(1.08, 1.0, 0.9)),
    "microscope: blur 1px": _own(OTHER_MICROSCOPE, "slightly out of focus (Gaussian radius 1 model pixel)", blur=1.0),
    "microscope: JPEG q50": _own(OTHER_MICROSCOPE, "model pixels as JPEG quality 50", jpeg_quality=50),
    "microscope: zoom 1.2x": _own(OTHER_MICROSCOPE, "mild zoom: 1.2x of the model pixels", zoom=1.2),
    "stain 2.5x": _own(MUST_REFER, "stain 2.5x stronger (optical density): a far darker, saturated smear",
                       od_scale=(2.5,) * 3),
    "hue +90": Shift(MUST_REFER, "every colour's hue turned by 90 degrees (another dye)", MODEL, hue_degrees=90.0),
    "hue 180": Shift(MUST_REFER, "every colour's hue turned by 180 degrees (another dye)", MODEL, hue_degrees=180.0),
    "heavy blur": _own(MUST_REFER, "far out of focus (Gaussian radius 3 model pixels)", blur=3.0),
    "dark": _own(MUST_REFER, "under-exposed: 30% of the light", white_balance=(0.3,) * 3),
    "grayscale": Shift(MUST_REFER, "colour removed (a monochrome camera)", MODEL, grayscale=True),
    "blank slide": Shift(MUST_REFER, "generated: an empty bright field with sensor noise", GENERATED, scene="blank"),
    "noise": Shift(MUST_REFER, "generated: uniform colour noise", GENERATED, scene="noise"),
    "gradient": Shift(MUST_REFER, "generated: a smooth gradient between two random colours", GENERATED,
                      scene="gradient"),
    "text page": Shift(MUST_REFER, "generated: a page of printed text", GENERATED, scene="text"),
    "checkerboard": Shift(MUST_REFER, "generated: a two-colour checkerboard", GENERATED, scene="checkerboard"),
    "photo": Shift(MUST_REFER, "generated: a photo-like outdoor scene (sky, sun, buildings, ground)", GENERATED,
                   scene="photo"),
}  # fmt: skip


def apply_shift(shift: Shift, image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """``image`` (8-bit RGB, as decoded) changed by ``shift``; ``size`` is the model's input size (MODEL level:
    the result is the shifted model pixels, which the app's resize leaves as they are), ``rng`` draws scenes."""
    if shift.level == GENERATED:
        return SCENES[shift.scene](image.size, rng)
    if shift.level == MODEL:
        pixels = model_pixels(image, size)
        if shift.microscope is not None:
            pixels = simulate(pixels[None], shift.microscope)[0]
        picture = Image.fromarray(pixels)
        if shift.hue_degrees:
            hue, saturation, value = picture.convert("HSV").split()
            step = round(shift.hue_degrees / 360.0 * 256)
            hue = hue.point(lambda h: (h + step) % 256)
            picture = Image.merge("HSV", (hue, saturation, value)).convert("RGB")
        if shift.grayscale:
            picture = picture.convert("L").convert("RGB")
        return picture
    width, height = image.size
    if shift.zoom != 1.0:
        crop_w, crop_h = width / shift.zoom, height / shift.zoom
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        image = image.resize((width, height), Image.Resampling.BICUBIC, box=box)
    if shift.frame != 1.0:
        image = image.resize((round(width * shift.frame), round(height * shift.frame)), Image.Resampling.BICUBIC)
    if shift.turn is not None:
        image = image.transpose(shift.turn)
    if shift.jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=shift.jpeg_quality)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


# ---------------------------------------------------------------- generated non-smears


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> np.ndarray:
    return rng.integers(low, high, 3).astype(np.float64)


def _blank(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    field = _colour(rng, 215, 250) + rng.normal(0.0, 2.0, (height, width, 3))
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def _noise(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _gradient(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    angle = rng.uniform(0.0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    along = x * np.cos(angle) + y * np.sin(angle)
    t = ((along - along.min()) / max(np.ptp(along), 1e-9))[..., None]
    field = (1 - t) * _colour(rng) + t * _colour(rng)
    return Image.fromarray(field.round().astype(np.uint8))


WORDS = (
    "the sample was received in good order and stored at room temperature until analysis results are reported "
    "to the requesting clinician please sign and date every page"
)


def _text(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    page = Image.new("RGB", size, tuple(int(c) for c in _colour(rng, 235, 256)))
    draw = ImageDraw.Draw(page)
    points = max(8, height // int(rng.integers(14, 22)))
    font = ImageFont.load_default(size=points)
    ink = tuple(int(c) for c in _colour(rng, 0, 60))
    y = int(rng.integers(2, points))
    while y < height:
        line = " ".join(rng.choice(WORDS.split(), int(rng.integers(4, 12))))
        draw.text((int(rng.integers(2, max(3, width // 10))), y), line, fill=ink, font=font)
        y += int(points * 1.4)
    return page


def _checkerboard(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    square = int(rng.integers(6, 33))
    y, x = np.mgrid[0:height, 0:width]
    odd = ((x // square + y // square) % 2).astype(bool)[..., None]
    field = np.where(odd, _colour(rng), _colour(rng))
    return Image.fromarray(field.astype(np.uint8))


def _photo(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Sky getting paler towards a horizon, a sun, a row of buildings with windows, ground: photo-like,
    with sensor noise and a slight blur."""
    width, height = size
    horizon = int(height * rng.uniform(0.45, 0.7))
    t = np.linspace(0.0, 1.0, horizon)[:, None, None]
    sky = (1 - t) * np.array([70.0, 120.0, 200.0]) + t * np.array([190.0, 215.0, 235.0])
    field = np.empty((height, width, 3))
    field[:horizon] = sky
    field[horizon:] = _colour(rng, 40, 140) * np.array([0.8, 1.0, 0.6])
    picture = Image.fromarray(field.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    sun = int(rng.integers(width // 14 + 2, width // 7 + 3))
    centre = (int(rng.integers(sun, max(sun + 1, width - sun))), int(rng.integers(sun, max(sun + 1, horizon // 2))))
    draw.ellipse((centre[0] - sun, centre[1] - sun, centre[0] + sun, centre[1] + sun), fill=(255, 240, 190))
    x = 0
    while x < width:
        wide, tall = int(rng.integers(width // 10 + 2, width // 4 + 3)), int(rng.integers(height // 8, horizon))
        wall = tuple(int(c) for c in _colour(rng, 60, 200))
        draw.rectangle((x, horizon - tall, x + wide, horizon), fill=wall)
        for wy in range(horizon - tall + 4, horizon - 6, 9):
            for wx in range(x + 3, x + wide - 4, 8):
                draw.rectangle((wx, wy, wx + 3, wy + 4), fill=(40, 50, 70) if rng.random() < 0.7 else (250, 230, 150))
        x += wide + int(rng.integers(0, width // 12 + 1))
    noisy = np.asarray(picture, dtype=np.float64) + rng.normal(0.0, 4.0, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))


SCENES: dict[str, Callable[[tuple[int, int], np.random.Generator], Image.Image]] = {
    "blank": _blank,
    "noise": _noise,
    "gradient": _gradient,
    "text": _text,
    "checkerboard": _checkerboard,
    "photo": _photo,
}
