"""Shared fixtures and helpers: small synthetic smear-like datasets made on the fly (no real images committed),
and the listening-socket checks of the app's server (tests/test_server_security.py, tests/test_streamlit_config.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smearscope_core.paths import DEFAULT_DATASET

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = DEFAULT_DATASET
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port``, from Linux's /proc/net/tcp and tcp6 (hex, as the kernel
    writes them: 0100007F is 127.0.0.1, 00000000 and 32 zeros are every interface)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == TCP_LISTEN:
                found.append(address)
    return found


def other_local_addresses() -> list[str]:
    """This computer's IPv4 addresses other than loopback (from ``ip``), to try the port on."""
    try:
        done = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    addresses = [line.split()[3].split("/")[0] for line in done.stdout.splitlines() if len(line.split()) > 3]
    return [a for a in addresses if not a.startswith("127.")]


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


@pytest.fixture(autouse=True, scope="session")
def production_streamlit_settings():
    """AppTest runs the page in this process, where Streamlit reads no config file: give it the launcher's table.

    The page refuses to serve on a non-loopback address or with usage statistics on (edge_app/app.py), so every
    AppTest runs under the same settings as `make app`; a test that needs others patches them on top.
    """
    from streamlit.testing.v1.util import patch_config_options

    from edge_app.launcher import settings

    with patch_config_options({k: v for k, v in settings(8501).items() if k != "global.developmentMode"}):
        yield


# ---------------------------------------------------------------- convert/ (tests/test_convert_*.py)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real (if weak) MobileNetV3Small run folder written by train.run at 32 px; (run folder, dataset).

    Trained once per session: tests/test_convert_quantize.py and tests/test_convert_conversion.py share it.
    """
    from train.run import TrainConfig, train

    root = tmp_path_factory.mktemp("convert")
    data = make_dataset(root / "data", per_class=20)
    classes = {"Beta": {"malignant": True, "severity": 2}, "Gamma": {"malignant": True, "severity": 3}}
    (data / "classes.json").write_text(json.dumps({"classes": classes}))  # screening metrics need a malignant class
    train(TrainConfig(data=data, out=root / "run", image_size=32, epochs=2, batch_size=16, seed=3))
    return root / "run", data
