"""The app's image decoding: every readable format and mode to RGB, clear sentences for the rest."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from smearscope_core.imaging import ImageError, model_pixels, open_image
from tests.factories import smear_like


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "JPEG"), ("RGB", "PNG"), ("RGB", "TIFF"), ("RGB", "BMP"), ("RGBA", "PNG"), ("P", "PNG"),
     ("L", "JPEG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("RGB", "GIF")],
)  # fmt: skip
def test_readable_files_become_rgb(mode: str, fmt: str) -> None:
    base = smear_like(5, (120, 40, 140), 12)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    else:
        image = base.convert(mode)
    decoded = open_image(_encode(image, fmt), "x")
    assert decoded.mode == "RGB" and decoded.size == base.size


def test_first_frame_of_a_multi_frame_file() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert open_image(buffer.getvalue()).getpixel((5, 5))[0] > 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"hello, this is a text file renamed .jpg", "not an image this app can read"),
        (b"MZ\x90\x00" + bytes(200), "not an image this app can read"),
    ],
)
def test_unreadable_bytes_get_a_sentence(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        open_image(data, "scan.jpg")


def test_truncated_file_is_reported() -> None:
    data = _encode(smear_like(1, (120, 40, 140), 12, size=128), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2], "cut.jpg")


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (400, 400)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # the guard stays on; lowered to test it
    with pytest.raises(ImageError, match="too large to open safely"):
        open_image(data, "huge.png")


def test_model_pixels_follow_the_resize_policy() -> None:
    wide = Image.new("RGB", (300, 200), (10, 10, 10))
    wide.paste((240, 240, 240), (50, 0, 250, 200))  # bright centre square
    pixels = model_pixels(wide, 64)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert pixels.min() > 200
