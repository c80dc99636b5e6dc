"""Bad image files for the fuzz tests (tests/test_fuzz.py), as Hypothesis strategies.

Every family of issue 7 is built from a real Pillow image (so the damage lands in realistic
structure, not in noise the decoders reject on the first byte): truncated and bit-flipped
JPEG/PNG/TIFF/BMP/GIF, empty files, text and executables renamed ``.jpg``, decompression bombs
(headers claiming huge dimensions), 1x1 images, 16-bit and 32-bit/float, CMYK, palettes with
transparency, animated GIF/PNG, multi-page TIFF and EXIF orientation tags with wrong values or
types. Most families also get a second layer of damage (truncation or bit flips) on top.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import strategies as st
from PIL import Image

MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's bomb guard; the app keeps it at the default
EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff", "bmp")  # what the upload widget accepts
FORMAT_EXTENSION = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "BMP": "bmp", "GIF": "jpg", "MPO": "jpg"}
# modes each writer accepts (measured with Pillow 13)
MODES = {
    "JPEG": ("L", "RGB", "CMYK", "YCbCr", "1"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"),
    "TIFF": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I;16", "I;16B", "I", "F"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "GIF": ("L", "P", "RGB"),
}


@dataclass(frozen=True)
class BadFile:
    """One generated file: its family (for the counts), the damage on top, and the bytes."""

    family: str
    name: str
    data: bytes
    damage: str = "none"
    claimed_pixels: int = 0  # width x height a bomb's header claims (0: not a bomb)

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep them short
        return f"BadFile({self.family}/{self.damage}, {self.name!r}, {len(self.data)} bytes, head={self.data[:16]!r})"


def picture(seed: int, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smear-ish picture (pale field, a few dark blobs, noise) in the given mode."""
    rng = np.random.default_rng(seed)
    field = np.empty((height, width, 3))
    field[:] = rng.integers(150, 250, 3)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(0, 4))):
        cy, cx, r = rng.integers(0, max(height, 1)), rng.integers(0, max(width, 1)), rng.integers(1, 20)
        field[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(40, 180, 3)
    field += rng.normal(0, 12, field.shape)
    image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    return convert(image, mode, rng)


def convert(image: Image.Image, mode: str, rng: np.random.Generator) -> Image.Image:
    """RGB to ``mode``; 16/32-bit and float modes get their full range (and NaN/inf for float)."""
    if mode in ("I;16", "I;16B", "I;16L"):
        wide = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        return Image.fromarray(wide).convert(mode) if mode != "I;16" else Image.fromarray(wide)
    if mode == "I":
        values = np.asarray(image.convert("L"), dtype=np.int32) * int(rng.choice([1, 257, 65793, -1000]))
        return Image.fromarray(values.astype(np.int32), "I")
    if mode == "F":
        values = np.asarray(image.convert("L"), dtype=np.float32) * float(rng.choice([1 / 255, 1.0, 1e6, -3.0]))
        flat = values.reshape(-1)
        for special in (np.nan, np.inf, -np.inf):
            if flat.size and rng.random() < 0.3:
                flat[rng.integers(0, flat.size)] = special
        return Image.fromarray(values, "F")
    if mode in ("P", "PA"):
        palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(2, 256)))
        return palette if mode == "P" else palette.convert("PA")
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# -- building blocks ---------------------------------------------------------------------------

sizes = st.one_of(st.integers(1, 64), st.integers(65, 400))
seeds = st.integers(0, 2**32 - 1)
formats = st.sampled_from(sorted(MODES))


@st.composite
def valid_file(draw: st.DrawFn, fmt: str | None = None, mode: str | None = None, side: int | None = None) -> bytes:
    """A well-formed file: any writer, any mode it accepts, any size (the base for damage)."""
    fmt = fmt or draw(formats)
    mode = mode or draw(st.sampled_from(MODES[fmt]))
    width, height = (side, side) if side else (draw(sizes), draw(sizes))
    image = picture(draw(seeds), width, height, mode)
    options: dict = {}
    if fmt == "JPEG":
        options = {"quality": draw(st.integers(5, 100)), "progressive": draw(st.booleans())}
    elif fmt == "TIFF":
        options = {"compression": draw(st.sampled_from(["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"]))}
    elif fmt == "PNG" and mode == "P" and draw(st.booleans()):
        options = {"transparency": draw(st.integers(0, 255))}
    return encode(image, fmt, **options)


def name_for(family: str, ext: str) -> str:
    return f"{family}.{ext}"


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    """Truncate, flip bits, overwrite a run of bytes, or leave as is."""
    kind = draw(st.sampled_from(["none", "truncated", "bitflip", "overwrite"]))
    if kind == "truncated" and len(data) > 1:
        return data[: draw(st.integers(1, len(data) - 1))], kind
    if kind == "bitflip" and data:
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 16))):
            # bias towards the header, where a flip changes the structure rather than a pixel
            limit = draw(st.sampled_from([min(len(flipped), 256), len(flipped)]))
            flipped[draw(st.integers(0, limit - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped), kind
    if kind == "overwrite" and data:
        start = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        return data[:start] + chunk + data[start + len(chunk) :], kind
    return data, "none"


# -- the families --------------------------------------------------------------------------------


@st.composite
def truncated(draw: st.DrawFn) -> BadFile:
    fmt = draw(st.sampled_from(["JPEG", "PNG", "TIFF", "BMP"]))
    data = draw(valid_file(fmt))
    cut = draw(st.one_of(st.integers(1, min(len(data) - 1, 64)), st.integers(1, len(data) - 1)))
    return BadFile("truncated", name_for("truncated", FORMAT_EXTENSION[fmt]), data[:cut], "truncated")


@st.composite
def bit_flipped(draw: st.DrawFn) -> BadFile:
    fmt = draw(st.sampled_from(["JPEG", "PNG", "TIFF", "BMP"]))
    data = bytearray(draw(valid_file(fmt)))
    for _ in range(draw(st.integers(1, 32))):
        limit = draw(st.sampled_from([min(len(data), 512), len(data)]))
        data[draw(st.integers(0, limit - 1))] ^= 1 << draw(st.integers(0, 7))
    return BadFile("bitflip", name_for("bitflip", FORMAT_EXTENSION[fmt]), bytes(data), "bitflip")


empty = st.builds(
    lambda zeros, ext: BadFile("zero_bytes", name_for("zero-bytes", ext), bytes(zeros)),
    st.sampled_from([0, 0, 1, 16, 4096]),
    st.sampled_from(EXTENSIONS),
)

renamed_text = st.builds(
    lambda text, ext: BadFile("text_renamed", name_for("notes", ext), text.encode("utf-8")),
    st.one_of(st.text(min_size=1, max_size=300), st.just("<html><body>not an image</body></html>")),
    st.sampled_from(EXTENSIONS),
)

EXECUTABLE_HEADS = (
    b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00\x01\x00\x00\x00",  # ELF x86-64 executable
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(46) + b"\x80\x00\x00\x00" + bytes(64) + b"PE\x00\x00",
    b"#!/bin/sh\nrm -rf /tmp/nothing\n",
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # zip
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
)
renamed_executable = st.builds(
    lambda head, tail, ext: BadFile("executable_renamed", name_for("setup", ext), head + tail),
    st.sampled_from(EXECUTABLE_HEADS),
    st.binary(max_size=512),
    st.sampled_from(EXTENSIONS),
)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def claim_size(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """Rewrite a valid file's header so it claims ``width`` x ``height`` (checksums kept valid)."""
    out = bytearray(data)
    if fmt == "PNG":
        ihdr = struct.pack(">II", width, height) + bytes(out[24:29])
        return bytes(out[:8]) + png_chunk(b"IHDR", ihdr) + bytes(out[33:])
    if fmt == "BMP":
        struct.pack_into("<ii", out, 18, width, height)
        return bytes(out)
    if fmt == "GIF":
        struct.pack_into("<HH", out, 6, width, height)
        descriptor = out.find(b"\x2c", 13)
        if descriptor > 0 and descriptor + 9 <= len(out):
            struct.pack_into("<HH", out, descriptor + 5, width, height)
        return bytes(out)
    if fmt == "JPEG":  # walk the segments to the frame header (SOFn); the same bytes can occur in tables
        at = 2
        while at + 9 <= len(out) and out[at] == 0xFF:
            marker, length = out[at + 1], struct.unpack_from(">H", out, at + 2)[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                struct.pack_into(">HH", out, at + 5, height, width)
                return bytes(out)
            at += 2 + length
        raise ValueError("no JPEG frame header found")
    raise ValueError(fmt)


def tiff_claiming(width: int, height: int, strip: bytes) -> bytes:
    """A minimal grayscale TIFF whose tags claim ``width`` x ``height`` over a tiny strip."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]  # fmt: skip
    ifd_size = 2 + 12 * len(entries) + 4
    strip_at = 8 + ifd_size
    body = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = strip_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + body + b"\x00\x00\x00\x00" + strip


@st.composite
def bomb(draw: st.DrawFn) -> BadFile:
    """Huge claimed dimensions: above Pillow's limit (must be refused before any allocation)."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "TIFF"]))
    side_limit = {"JPEG": 65535, "GIF": 65535, "BMP": 2**31 - 1, "PNG": 2**31 - 1, "TIFF": 2**32 - 1}[fmt]
    width = draw(st.one_of(st.sampled_from([100_000, 65_535, 30_000, 9_500]), st.integers(1, side_limit)))
    width = min(width, side_limit)
    minimum = MAX_PIXELS // width + 1
    if minimum > side_limit:
        width, minimum = side_limit, MAX_PIXELS // side_limit + 1
    height = draw(st.one_of(st.just(minimum), st.integers(minimum, side_limit)))
    if draw(st.booleans()):
        width, height = height, width
    if fmt == "TIFF":
        data = tiff_claiming(width, height, bytes(draw(st.integers(1, 256))))
    else:
        data = claim_size(fmt, draw(valid_file(fmt, draw(st.sampled_from(["L", "RGB"])), side=8)), width, height)
    return BadFile("bomb", name_for("bomb", FORMAT_EXTENSION[fmt]), data, "none", width * height)


@st.composite
def tiny(draw: st.DrawFn) -> BadFile:
    fmt = draw(formats)
    mode = draw(st.sampled_from(MODES[fmt]))
    width, height = draw(st.sampled_from([(1, 1), (1, 1), (1, 2), (2, 1), (1, 400), (400, 1), (3, 3)]))
    data = encode(picture(draw(seeds), width, height, mode), fmt)
    data, damage = draw(damaged(data))
    return BadFile("tiny_1x1", name_for("tiny", FORMAT_EXTENSION[fmt]), data, damage)


@st.composite
def sixteen_bit(draw: st.DrawFn) -> BadFile:
    fmt, mode = draw(st.sampled_from([("PNG", "I;16"), ("PNG", "I;16B"), ("TIFF", "I;16"), ("TIFF", "I;16B"),
                                      ("TIFF", "I"), ("TIFF", "F")]))  # fmt: skip
    data, damage = draw(damaged(draw(valid_file(fmt, mode))))
    return BadFile("16_bit", name_for("sixteen", FORMAT_EXTENSION[fmt]), data, damage)


@st.composite
def cmyk(draw: st.DrawFn) -> BadFile:
    fmt = draw(st.sampled_from(["JPEG", "TIFF"]))
    data, damage = draw(damaged(draw(valid_file(fmt, "CMYK"))))
    return BadFile("cmyk", name_for("cmyk", FORMAT_EXTENSION[fmt]), data, damage)


@st.composite
def palette_transparency(draw: st.DrawFn) -> BadFile:
    """Palette images with a transparent index or a tRNS table, and alpha modes (LA, PA, RGBA)."""
    fmt, mode = draw(st.sampled_from([("PNG", "P"), ("GIF", "P"), ("TIFF", "PA"), ("PNG", "LA"),
                                      ("PNG", "RGBA"), ("TIFF", "LA"), ("BMP", "RGBA")]))  # fmt: skip
    image = picture(draw(seeds), draw(sizes), draw(sizes), mode)
    options: dict = {}
    if mode == "P":
        options["transparency"] = draw(
            st.one_of(st.integers(0, 255), st.binary(min_size=1, max_size=256) if fmt == "PNG" else st.nothing())
        )
    data, damage = draw(damaged(encode(image, fmt, **options)))
    return BadFile("palette_transparency", name_for("palette", FORMAT_EXTENSION[fmt]), data, damage)


@st.composite
def animated(draw: st.DrawFn) -> BadFile:
    """Animated GIF (frames of other sizes, disposal, transparency) or APNG."""
    fmt = draw(st.sampled_from(["GIF", "GIF", "PNG"]))
    count = draw(st.integers(2, 6))
    seed = draw(seeds)
    frames = [picture(seed + i, draw(sizes), draw(sizes)) for i in range(count)]
    options = {"save_all": True, "append_images": frames[1:], "duration": draw(st.integers(0, 500)),
               "loop": draw(st.integers(0, 3))}  # fmt: skip
    if fmt == "GIF":
        options |= {"disposal": draw(st.integers(0, 3))}
        if draw(st.booleans()):
            options["transparency"] = draw(st.integers(0, 255))
    data, damage = draw(damaged(encode(frames[0], fmt, **options)))
    return BadFile("animated", name_for("animated", draw(st.sampled_from(["jpg", "png"]))), data, damage)


LITTLE_ENDIAN_TIFF = tuple(m for m in MODES["TIFF"] if m != "I;16B")  # one byte order per file


@st.composite
def multipage_tiff(draw: st.DrawFn) -> BadFile:
    seed = draw(seeds)
    pages = [
        picture(seed + i, draw(sizes), draw(sizes), draw(st.sampled_from(LITTLE_ENDIAN_TIFF)))
        for i in range(draw(st.integers(2, 5)))
    ]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    data, damage = draw(damaged(data))
    return BadFile("multipage_tiff", name_for("pages", draw(st.sampled_from(["tif", "tiff"]))), data, damage)


# EXIF type codes: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 7 UNDEFINED, 9 SLONG, 10 SRATIONAL,
# 12 DOUBLE; 0 and 99 are not types at all.
EXIF_TYPES = (1, 2, 3, 4, 5, 7, 9, 10, 12, 0, 99)


@st.composite
def exif_orientation(draw: st.DrawFn) -> BadFile:
    """JPEG/PNG/TIFF/WebP-less: an EXIF block whose Orientation has a wrong value, type, count or offset."""
    value = draw(st.one_of(st.sampled_from([0, 9, 255, 65535, 2**32 - 1, 1, 6, 8]), st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(EXIF_TYPES))
    count = draw(st.sampled_from([1, 1, 0, 2, 4, 1000, 2**31]))
    inline = struct.pack("<I", value) if kind in (4, 9) else struct.pack("<HH", value & 0xFFFF, 0)
    if draw(st.booleans()) and count > 1:
        inline = struct.pack("<I", draw(st.integers(0, 2**32 - 1)))  # an offset, likely past the end
    ifd = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, kind, count) + inline + b"\x00\x00\x00\x00"
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    if draw(st.booleans()):
        exif = exif[: draw(st.integers(6, len(exif)))]  # a cut EXIF block
    fmt = draw(st.sampled_from(["JPEG", "JPEG", "PNG"]))
    image = picture(draw(seeds), draw(sizes), draw(sizes))
    data, damage = draw(damaged(encode(image, fmt, exif=exif)))
    return BadFile("exif_orientation", name_for("exif", FORMAT_EXTENSION[fmt]), data, damage)


FAMILIES: dict[str, st.SearchStrategy[BadFile]] = {
    "truncated": truncated(),
    "bitflip": bit_flipped(),
    "zero_bytes": empty,
    "text_renamed": renamed_text,
    "executable_renamed": renamed_executable,
    "bomb": bomb(),
    "tiny_1x1": tiny(),
    "16_bit": sixteen_bit(),
    "cmyk": cmyk(),
    "palette_transparency": palette_transparency(),
    "animated": animated(),
    "multipage_tiff": multipage_tiff(),
    "exif_orientation": exif_orientation(),
}
bad_files = st.one_of(*FAMILIES.values())


@st.composite
def named(draw: st.DrawFn, index: int | None = None) -> BadFile:
    """A bad file with a name a technician might use (spaces, accents), unique when ``index`` is given."""
    bad = draw(bad_files)
    stem, ext = bad.name.rsplit(".", 1)
    prefix = draw(st.sampled_from(["", "Patient 12 ", "smear_é_", "scan-"]))
    tag = f"-{index}" if index is not None else ""
    return replace(bad, name=f"{prefix}{stem}{tag}.{ext}")
