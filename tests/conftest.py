"""Shared pytest fixtures, and only fixtures: the builders and helpers they call are in tests/factories.py.

Small synthetic smear-like datasets made on the fly (no real images committed), tiny int8 bundles for the app,
a browser for the real-browser tests, and a tiny trained run for convert/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

# Helpers that assert (assert_stops_cleanly, check_in_browser): pytest's assertion messages there too.
pytest.register_assert_rewrite("tests.factories")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from tests.browser import CHROMIUM_FLAGS, find_chromium  # noqa: E402
from tests.factories import (  # noqa: E402
    CLASSES,
    NEVER_UNSURE,
    OUR_MODEL,
    make_dataset,
    smear_like,
    tiny_int8_model,
    write_bundle,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser


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


# ---------------------------------------------------------------- the app (tests/test_edge_*.py, reliability tests)


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An untrained three-class int8 model at 48 px (tests/factories.py CLASSES, SIZE), built once per module."""
    return tiny_int8_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder of two tiny bundles: a decoy listed first, and ours (OUR_MODEL), whose logits favour Pre-B ALL.

    As tiny_tflite, with the output bias set so the page shows a malignant class that is not the first one, at a
    confidence other than 1/number of classes. Built once per session: tests/test_browser_e2e.py and the desktop
    executable's test (tests/test_desktop_build.py) share it.
    """
    work = tmp_path_factory.mktemp("e2e-model")
    folder = work / "models"
    tflite = tiny_int8_model(work, logit_bias=(0.0, 1.5, 0.0))
    decoy = [{**c, "display_name": f"Decoy {c['id']}"} for c in CLASSES]
    write_bundle(folder / "a-decoy", tflite, {"name": "e2e-decoy", "classes": decoy, "calibration": NEVER_UNSURE})
    write_bundle(folder / OUR_MODEL, tflite, {"name": "e2e-tiny-model", "calibration": NEVER_UNSURE})
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium driven by Playwright, headless and offline (never a downloaded browser); skips where
    Playwright or chromium is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)"
    )
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium (/usr/bin/chromium or on PATH): apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


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
    # No weight average (the default's 0.99): over two epochs of 3 steps it keeps the weights near their random start
    # (with it, this run's int8 model split into 3 XNNPACK partitions where the test expects 1; the real default's
    # has 1, docs/conversion.md). Standard augmentation: these tests are about conversion, not the training defaults.
    config = TrainConfig(
        data=data, out=root / "run", image_size=32, epochs=2, batch_size=16, seed=3, ema_momentum=0.0,
        augmentation_preset="standard",
    )  # fmt: skip
    train(config)
    return root / "run", data
