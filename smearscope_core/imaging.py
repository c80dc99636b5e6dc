"""Image decoding and the resize policy: the one implementation, used by every stage.

Training, conversion and the app must feed the model the same pixels, so this module is the
single place the policy lives. It needs only Pillow and numpy. The model card records the policy
as ``preprocessing`` (see docs/model-card.md).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

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


class ImageError(InputError):
    """An image that cannot be used; the message is one sentence for the technician."""


def open_image(data: bytes, name: str = "the file") -> Image.Image:
    """Decode uploaded bytes into 8-bit RGB, or raise ImageError saying why not.

    Pillow's decompression-bomb guard stays on (and its warning counts as an error), so a
    crafted file with huge dimensions is refused before it can exhaust memory. Multi-frame files
    (animated GIF, multi-page TIFF) use their first frame.
    """
    if not data:
        raise ImageError(f"{name} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.seek(0)
            return load_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large to open safely (more than {Image.MAX_IMAGE_PIXELS:,} pixels).") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image this app can read ({SUPPORTED_FORMATS}).") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure (OSError, SyntaxError, struct.error, ...)
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({error}).") from None


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


def model_pixels(source: str | Path | Image.Image, size: int) -> np.ndarray:
    """What the model sees: uint8 RGB array [size, size, 3]."""
    return np.asarray(resize_for_model(load_rgb(source), size), dtype=np.uint8)
