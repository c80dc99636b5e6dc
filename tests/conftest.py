"""Shared fixtures: small synthetic smear-like datasets made on the fly (no real images committed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smearscope_core.paths import DEFAULT_DATASET

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = DEFAULT_DATASET

# Each synthetic class has its own "cell" colour and size on a pale background.
CLASS_STYLES = {
    "Alpha": ((150, 60, 160), 6),
    "Beta": ((60, 60, 170), 10),
    "Gamma": ((170, 70, 90), 14),
}


def smear_like(seed: int, colour: tuple[int, int, int], radius: int, size: int = 72) -> Image.Image:
    """A pale field with uneven staining and a few round 'cells' of the class's colour and size.

    The uneven background makes every image perceptually distinct (plain fields with one blob
    would hash alike and be grouped as near-duplicates).
    """
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.array((235, 215, 225), dtype=np.float64) + (np.asarray(coarse, dtype=np.float64) - 128) * 0.5
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.integers(radius // 2, size - radius // 2, size=2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = colour
    image += rng.normal(0, 10, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_dataset(root: Path, per_class: int = 20, size: int = 72, seed: int = 0) -> Path:
    for index, (name, (colour, radius)) in enumerate(CLASS_STYLES.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            smear_like(seed * 10_000 + index * 1000 + i, colour, radius, size).save(folder / f"{name}-{i:03d}.png")
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def dataset_with_problems(tmp_path: Path) -> Path:
    """Planted duplicates (exact, re-encoded, rotated), a corrupt file, a too-small image, odd modes."""
    root = make_dataset(tmp_path / "data", per_class=12)
    alpha, beta = root / "Alpha", root / "Beta"
    shutil.copy(alpha / "Alpha-000.png", alpha / "Alpha-000-copy.png")
    Image.open(alpha / "Alpha-001.png").save(alpha / "Alpha-001-reencoded.jpg", quality=90)
    Image.open(beta / "Beta-002.png").transpose(Image.Transpose.ROTATE_90).save(beta / "Beta-002-rotated.png")
    (beta / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.new("RGB", (8, 8), (200, 50, 50)).save(beta / "tiny.png")
    (beta / "notes.txt").write_text("not an image")
    base = smear_like(99, (120, 40, 140), 14)
    gamma = root / "Gamma"
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(gamma / "palette.png")
    base.convert("RGBA").save(gamma / "rgba.png")
    base.convert("CMYK").save(gamma / "cmyk.jpg")
    base.convert("L").save(gamma / "gray.png")
    sixteen = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(gamma / "sixteen.png")
    return root
