"""Image decoding and the resize policy: the one implementation, used by every stage.

Training, conversion and the app must feed the model the same pixels, so this module is the
single place the policy lives. It needs only Pillow and numpy. The model card records the policy
as ``preprocessing`` (see docs/model-card.md).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from smearscope_core.errors import InputError

RESIZE_POLICY = {
    "crop": "center_square",
    "interpolation": "bilinear",
    "antialias": True,
    "library": "Pillow",
    "exif_transpose": True,
    "color": "RGB, alpha flattened onto white, 16-bit scaled to 8-bit",
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SUPPORTED_FORMATS = "JPEG, PNG, TIFF or BMP"
_BLOCK_PIXELS = 1 << 20  # rows converted to 8 bits at a time (see _to_8_bit)
# A JPEG is decoded reduced (1/2, 1/4, 1/8) only while its shorter side stays at least this many times the model's
# side: the model pixels then agree with a full decode to 1 grey level (bench/memory.py, docs/performance.md).
# At 4x, 1/8 (libjpeg keeps only each block's mean) differed by up to 6 levels.
REDUCED_DECODE_MARGIN = 5


class ImageError(InputError):
    """An image that cannot be used; the message is one sentence for the technician."""


def open_image(data: bytes, name: str = "the file", min_side: int | None = None) -> Image.Image:
    """Decode uploaded bytes into 8-bit RGB, or raise ImageError saying why not.

    Pillow's decompression-bomb guard stays on (and its warning counts as an error), so a
    crafted file with huge dimensions is refused before it can exhaust memory. Multi-frame files
    (animated GIF, multi-page TIFF) use their first frame.

    ``min_side``: the largest model input side the caller takes from this image. A JPEG far larger than that
    is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg (Pillow's draft mode), keeping its shorter side at
    least ``REDUCED_DECODE_MARGIN`` times ``min_side``: a 12-megapixel photo then takes 2 MB instead of 36 MB,
    and ``model_pixels`` of the result agree with a full decode's. Without it, every file is decoded in full.
    """
    if not data:
        raise ImageError(f"{name} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.seek(0)
            if min_side:
                _reduce_jpeg(image, min_side)
            return load_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large to open safely (more than {Image.MAX_IMAGE_PIXELS:,} pixels).") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image this app can read ({SUPPORTED_FORMATS}).") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure (OSError, SyntaxError, struct.error, ...)
        # the decoder's own words ("image file is truncated (50 bytes not processed)") help an engineer, not the
        # technician: they go to the log, the sentence to the screen
        logging.getLogger("smearscope.imaging").info(f"{name}: {type(error).__name__}: {error}")
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded.") from None


def _reduce_jpeg(image: Image.Image, min_side: int) -> int:
    """Ask libjpeg for a reduced decode of a JPEG much larger than ``min_side`` (before it is loaded); the scale.

    Only a scale whose blocks tile the image and the full decode's centre square exactly (both sides and the
    square's offsets are multiples of it; camera sizes are multiples of 8 or 16): ``resize_for_model`` then
    crops the same field in any EXIF orientation, after any per-pixel step such as a site's colour mapping.
    A crop off by half a block moved the model pixels by up to 34 grey levels. Other formats, and JPEGs with
    no such scale, are decoded in full: 1.
    """
    if min_side < 1 or not isinstance(image, JpegImagePlugin.JpegImageFile):
        return 1
    width, height = image.size
    side = min(width, height)
    for scale in (8, 4, 2):
        tiles = not (width % scale or height % scale or (width - side) % (2 * scale) or (height - side) % (2 * scale))
        if tiles and side // scale >= REDUCED_DECODE_MARGIN * min_side:
            image.draft(None, (width // scale, height // scale))
            return scale if image.size == (width // scale, height // scale) else 1
    return 1


def load_rgb(source: str | Path | Image.Image) -> Image.Image:
    """Open an image and return it as 8-bit RGB, whatever its mode and EXIF orientation.

    Transparency is flattened onto white (a slide background), 16-bit and float images are
    scaled to 8 bits by their type's range, CMYK and palette images are converted.
    """
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image.load()
    try:
        if image.getexif().get(ExifTags.Base.Orientation) in range(2, 9):  # else a transpose is only a copy
            image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block (found by tests/test_fuzz.py): pixels as stored
        pass
    if image.mode in (*_SIXTEEN_BIT_MODES, "I", "F"):
        image = _to_8_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    rgb.info.pop("exif", None)  # orientation is applied: calling this again must not turn (or parse) it twice
    return rgb


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float image to 8 bits by its type's range, a block of rows at a time.

    Blocks keep the float64 working copy small: converting the whole image at once cost 2.4 GB of
    memory for a 170 kB 16-bit PNG of 9400 x 9400 pixels (just under the bomb guard's limit).
    """
    array = np.asarray(image)
    top = 65535.0 if image.mode in _SIXTEEN_BIT_MODES or array.max() > 255 else 255.0
    out = np.empty(array.shape, dtype=np.uint8)
    rows = max(1, _BLOCK_PIXELS // max(array.shape[1], 1))
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows].astype(np.float64)
        out[start : start + rows] = np.clip(block / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def resize_for_model(image: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square on the shorter side, then Pillow bilinear resize to ``size``.

    Cropping keeps cell shapes undistorted; Pillow's bilinear filter antialiases when shrinking.
    """
    width, height = image.size
    side = min(width, height)
    if (width, height) != (side, side):
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def _ready(source: str | Path | Image.Image) -> bool:
    """An RGB image with nothing to turn: ``load_rgb`` would only copy it (36 MB for 12 megapixels)."""
    if not isinstance(source, Image.Image) or source.mode != "RGB":
        return False
    try:
        return source.getexif().get(ExifTags.Base.Orientation) not in range(2, 9)
    except Exception:  # noqa: BLE001 - a broken EXIF block: let load_rgb decide, as before
        return False


def model_pixels(source: str | Path | Image.Image, size: int) -> np.ndarray:
    """What the model sees: uint8 RGB array [size, size, 3]."""
    image = source if _ready(source) else load_rgb(source)
    return np.asarray(resize_for_model(image, size), dtype=np.uint8)
