"""The app's image decoding: every readable format and mode to RGB, clear sentences for the rest."""

from __future__ import annotations

import io
import logging

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


# ---------------------------------------------------------------- reduced decoding of camera-size JPEGs (issue 13)


def _camera_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """A noisy smear-like field of ``width`` x ``height`` (noise at full resolution: the hard case for a reduced
    decode), as a JPEG with that EXIF orientation."""
    field = smear_like(7, (120, 40, 140), max(width, height) // 12, size=max(width, height))
    left, top = (field.width - width) // 2, (field.height - height) // 2
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(field.crop((left, top, left + width, top + height)), "JPEG", quality=92, exif=exif.tobytes())


@pytest.mark.parametrize(
    ("size", "orientation", "decoded"),
    [
        ((1600, 1200), 1, (400, 300)),  # 1/4: 1/8 would leave 150 px, under 5 x 32
        ((1600, 1200), 6, (300, 400)),  # turned by its EXIF orientation after the reduced decode
        ((1200, 1600), 3, (300, 400)),
        ((1604, 1200), 1, (802, 600)),  # the square's offset (202) is not a multiple of 4: 1/2
        ((1602, 1200), 1, (1602, 1200)),  # nor of 2: decoded in full
        ((1200, 1200), 1, (300, 300)),
    ],
)
def test_a_camera_jpeg_is_decoded_reduced_and_the_model_sees_the_same_pixels(
    size: tuple[int, int], orientation: int, decoded: tuple[int, int]
) -> None:
    data = _camera_jpeg(*size, orientation)
    full, reduced = open_image(data, "camera.jpg"), open_image(data, "camera.jpg", min_side=32)
    assert reduced.size == decoded and reduced.mode == "RGB"
    assert full.size == (size if orientation in (1, 3) else size[::-1])
    difference = np.abs(model_pixels(reduced, 32).astype(int) - model_pixels(full, 32).astype(int))
    # up to 3 levels where this field's noisy background passes 255: a full decode clips each pixel before the
    # resize averages them, the reduced decode averages first (1 level at most on the enlarged test split)
    assert difference.max() <= 3 and difference.mean() < 0.5, (difference.max(), difference.mean())


@pytest.mark.parametrize(("size", "min_side"), [((224, 224), 128), ((224, 224), 32), ((1000, 750), 128)])
def test_images_not_far_larger_than_the_model_are_decoded_in_full(size: tuple[int, int], min_side: int) -> None:
    """The training images (224 px, the 128 px model) and anything under 10x the model's side: the exact pixels
    of a full decode, so the app sees what training saw."""
    data = _camera_jpeg(*size)
    reduced = open_image(data, "field.jpg", min_side=min_side)
    assert np.array_equal(np.asarray(reduced), np.asarray(open_image(data, "field.jpg")))


def test_other_formats_are_decoded_in_full() -> None:
    field = smear_like(3, (120, 40, 140), 60, size=1600)
    for fmt in ("PNG", "TIFF"):
        assert open_image(_encode(field, fmt), "field", min_side=32).size == (1600, 1600)


def test_errors_keep_their_sentences_with_a_reduced_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _camera_jpeg(1600, 1200)
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(data[: len(data) // 2], "cut.jpg", min_side=32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # the guard judges the full size, before decoding
    with pytest.raises(ImageError, match="too large to open safely"):
        open_image(data, "huge.jpg", min_side=32)


def test_an_80_megapixel_camera_jpeg_is_accepted_and_decoded_reduced() -> None:
    """The bomb guard stays at Pillow's default (89,478,485 pixels); an 80 MP camera frame is under it."""
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    data = _encode(Image.new("L", (10328, 7760), 200), "JPEG", quality=90)
    image = open_image(data, "phase-one.jpg", min_side=128)
    assert image.size == (2582, 1940) and image.mode == "RGB"  # 1/4: the square's offset is not a multiple of 8


def test_model_pixels_of_a_decoded_image_turn_it_by_its_exif_orientation() -> None:
    """model_pixels takes an RGB image as it is (no copy), but still turns one whose EXIF says so."""
    upright = Image.new("RGB", (60, 40), (250, 250, 250))
    upright.paste((0, 0, 0), (0, 0, 60, 20))  # dark top half
    turned = upright.transpose(Image.Transpose.ROTATE_90)  # stored turned, EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.open(io.BytesIO(_encode(turned, "PNG", exif=exif.tobytes())))
    pixels = model_pixels(stored, 20)
    assert pixels[:5].mean() < 60 and pixels[-5:].mean() > 200
    assert np.array_equal(model_pixels(upright, 20), pixels)


def test_a_damaged_file_gets_a_sentence_and_the_decoder_detail_goes_to_the_log(caplog: pytest.LogCaptureFixture):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 100, 150)).save(buffer, format="PNG")
    with caplog.at_level(logging.INFO, logger="smearscope.imaging"), pytest.raises(ImageError) as raised:
        open_image(buffer.getvalue()[:-40], "cut.png")
    assert str(raised.value) == "cut.png is damaged or truncated and cannot be decoded."
    assert any("cut.png" in record.getMessage() and "Error" in record.getMessage() for record in caplog.records)
