"""Builders and helpers shared by several test modules (and by the tests' child processes): synthetic images
and datasets, model cards, tiny bundles for the app, checks of the app's server and launcher, the page driven in
a real browser, crafted inputs and helpers that run a stage's command line.

No pytest fixtures here (they are in tests/conftest.py, and may call these) and no test module imports another:
shared code lives here. One section per subject; add a builder to its section, or a new section.
Heavy imports (TensorFlow, Playwright) stay inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from edge_app import launcher
from edge_app.runtime import TFLiteModel
from edge_app.screening import Screener
from smearscope_core.embedding_ood import fit_embedding_ood
from smearscope_core.files import sha256_of
from smearscope_core.imaging import model_pixels
from smearscope_core.model_card import SCHEMA_VERSION
from smearscope_core.ood import fit_ood, image_features
from smearscope_core.paths import DEFAULT_DATASET
from smearscope_core.scale import field_scale, fit_scale
from tests.browser import BANNER, log_tail, stop, wait_until_healthy

if TYPE_CHECKING:
    import pytest
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

    from edge_app.classify import Result

# ---------------------------------------------------------------- paths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = DEFAULT_DATASET

# ---------------------------------------------------------------- synthetic smears and datasets
# Smear-like images made on the fly (no real images committed): train/, smearscope_core and the app's tests.

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


# ---------------------------------------------------------------- model cards
# A card that passes the schema (tests/test_core_model_card.py); the bundles below and convert/ start from it.


def valid_card() -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "test-model",
        "created": "2026-11-24T10:00:00+00:00",
        "classes": [
            {"id": 0, "name": "Benign", "display_name": "Benign", "malignant": False, "severity": 0, "description": ""},
            {"id": 1, "name": "Pro", "display_name": "Pro-B ALL", "malignant": True, "severity": 3, "description": "x"},
        ],
        "input": {
            "height": 128,
            "width": 128,
            "channels": 3,
            "color_order": "RGB",
            "pixel_range": [0, 255],
            "dtype": "float32",
        },
        "preprocessing": {
            "crop": "center_square",
            "interpolation": "bilinear",
            "antialias": True,
            "exif_transpose": True,
            "normalization": "inside the model",
        },
        "output": {"kind": "logits", "probabilities": "softmax(logits / T)"},
        "training": {
            "architecture": "MobileNetV3Small",
            "image_size": 128,
            "epochs_run": 3,
            "seed": 1,
            "dataset": {
                "name": "d",
                "citation": ["c"],
                "manifest_sha256": "a" * 64,
                "split_counts": {"train": {"Benign": 3}, "val": {"Benign": 1}, "test": {"Benign": 1}},
            },
        },
        "metrics": {
            "float_test": {
                "n": 5,
                "accuracy": 0.8,
                "macro": {"precision": 1, "recall": 1, "f1": 1},
                "confusion_matrix": {},
            }
        },
        "calibration": {"temperature": 1.3, "abstain_threshold": 0.6, "fitted_on": "val"},
        "added_by_a_later_stage": {"anything": True},
    }


# ---------------------------------------------------------------- the app's tiny bundles
# A three-class int8 model at 48 px and the bundle folders the app loads (tests/test_edge_*.py and the
# app's reliability tests; tests/conftest.py's tiny_tflite and tiny_models fixtures build them).

SIZE = 48
CLASSES = [
    {"id": 0, "name": "Benign", "display_name": "Benign", "malignant": False, "severity": 0,
     "description": "Normal cells of the test"},
    {"id": 1, "name": "Pre", "display_name": "Pre-B ALL", "malignant": True, "severity": 2,
     "description": "Pre-B blasts of the test"},
    {"id": 2, "name": "Pro", "display_name": "Pro-B ALL", "malignant": True, "severity": 3,
     "description": "Pro-B blasts of the test"},
]  # fmt: skip


def finding_texts_in(text: str) -> list[str]:
    """The pieces of a finding that ``text`` shows: class names, class descriptions, severity, a percentage.

    A referred result must show none of them (a referral is not a diagnosis); for the tiny test classes.
    """
    pieces = [c["display_name"] for c in CLASSES] + [c["description"] for c in CLASSES]
    found = [piece for piece in pieces if piece in text]
    found += [word for word in ("severity", "malignancy") if word in text.lower()]
    return found + re.findall(r"\d+(?:\.\d+)?%", text)


def smears(start: int, count: int) -> list[Image.Image]:
    return [smear_like(start + i, (150 - i % 40, 60, 160), 5 + i % 5, 96) for i in range(count)]


def tiny_int8_model(folder: Path, logit_bias: tuple[float, ...] | None = None) -> bytes:
    """An untrained MobileNetV3Small for CLASSES at SIZE px, converted to int8 (its SavedModel under ``folder``);
    ``logit_bias`` sets the output bias, to make one class the likely one."""
    from convert.quantize import convert_int8, export_saved_model
    from train.model import build_model, with_embedding

    model = build_model(len(CLASSES), SIZE)
    if logit_bias is not None:
        model.get_layer("logits").bias.assign(np.array(logit_bias, dtype=np.float32))
    saved = export_saved_model(with_embedding(model), SIZE, folder / "saved")  # logits and embedding, as shipped
    return convert_int8(saved, np.stack([model_pixels(im, SIZE) for im in smears(0, 16)]))


def write_bundle(folder: Path, tflite: bytes, card_changes: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(tflite)
    card = valid_card()
    card["classes"] = copy.deepcopy(CLASSES)
    card["input"] |= {"height": SIZE, "width": SIZE}
    card["tflite"] = {"sha256": sha256_of(tflite)}
    train = np.array([image_features(model_pixels(im, SIZE)) for im in smears(100, 80)])
    val = np.array([image_features(model_pixels(im, SIZE)) for im in smears(500, 40)])
    card["ood"] = fit_ood(train, val)
    train_scales, val_scales = ([field_scale(model_pixels(im, SIZE)) for im in smears(start, count)]
                                for start, count in ((100, 80), (500, 40)))  # fmt: skip
    card["ood"]["field_scale"] = fit_scale(np.array(train_scales), np.array(val_scales), image_size=SIZE)
    if embedding := embedding_calibration(folder, tflite):
        card["embedding_ood"] = embedding
    card |= card_changes or {}
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def embedding_calibration(folder: Path, tflite: bytes) -> dict | None:
    """The embedding check's card section for a test bundle, its reference file written into ``folder``, as
    conversion does (smearscope_core.embedding_ood.fit_embedding_ood) on the tiny model's own embeddings;
    None for bytes that are not a model with an embedding output (the tests of broken bundles)."""
    try:
        model = TFLiteModel(content=tflite, num_threads=1)
    except (ValueError, RuntimeError):
        return None
    if not model.has_embedding:
        return None

    def embeddings(start: int, count: int) -> np.ndarray:
        return np.stack([model.run_all(model_pixels(im, SIZE))["embedding"] for im in smears(start, count)])

    section, reference = fit_embedding_ood(embeddings(100, 80), embeddings(500, 40))
    np.save(folder / section["reference"]["file"], reference, allow_pickle=False)
    section["reference"]["sha256"] = sha256_of(folder / section["reference"]["file"])
    return section


def io_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- the app's server
# Its listening sockets (tests/test_server_security.py, tests/test_streamlit_config.py).

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


# ---------------------------------------------------------------- the launcher
# A clean stop on a signal, from source (tests/test_launcher.py) and the executable (tests/test_desktop_build.py).


def assert_stops_cleanly(command: list[str], signal_name: str, tmp_path: Path, cwd: Path, env: dict[str, str]) -> None:
    """Start ``command --port FREE --no-browser`` (data folder in tmp), send the signal: exit 0 within
    seconds, no traceback, port given back, the stop written to the log file in the data folder."""
    port = launcher.free_port()
    log = tmp_path / "app.log"
    env = env | {"SMEARSCOPE_DATA": str(tmp_path / "data")}
    with open(log, "wb") as output:
        process = subprocess.Popen([*command, "--port", str(port), "--no-browser"], cwd=cwd, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log, timeout=60)
        process.send_signal(getattr(signal, signal_name))
        assert process.wait(timeout=15) == 0, log_tail(log)
    finally:
        stop(process)
    assert launcher.port_is_free(port)
    assert "SmearScope stopped" in (tmp_path / "data" / "logs" / "smearscope.log").read_text()
    assert "Traceback" not in log_tail(log, 100_000)


# ---------------------------------------------------------------- the page in a real browser
# The page driven by Playwright, from source (tests/test_browser_e2e.py) and the executable
# (tests/test_desktop_build.py). Playwright is imported inside the functions: the modules using them skip
# where it is missing (tests/conftest.py's browser fixture).

TIMEOUT_MS = 120_000  # generous: CI has two slow cores shared with other jobs
TITLE = "SmearScope: ALL screening of blood smear images"
BAD_FILE_LINE = "bad.jpg is not an image this app can read (JPEG, PNG, TIFF or BMP)."
REFERRAL = "Inconclusive - refer for manual review"
OUR_MODEL = "e2e-tiny"  # sorts after the decoy, so the test has to pick it in the sidebar
NEVER_UNSURE = {"temperature": 1.0, "abstain_threshold": 0.0, "fitted_on": "val"}  # a calibration never "unsure"


def save_artifact(path: Path) -> None:
    """Copy a file into $SMEARSCOPE_ARTIFACTS when set (CI keeps it)."""
    target = os.environ.get("SMEARSCOPE_ARTIFACTS")
    if target and path.is_file():
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / path.name)


class PageWatch:
    """What the page said besides its content: console errors, script errors, failed requests, and
    requests to any other address than the app's (the app runs offline)."""

    def __init__(self, page: Page, origin: str):
        self.origin = origin
        self.problems: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("request", self.request)
        page.on("requestfailed", self.request_failed)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def request(self, request: Request) -> None:
        if not request.url.startswith((self.origin, "data:", "blob:")):
            self.problems.append(f"request to another address: {request.url}")

    def request_failed(self, request: Request) -> None:
        if request.failure != "net::ERR_ABORTED":  # cancelled by a rerun replacing the element: harmless
            self.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")


def assert_page_healthy(page: Page, watch: PageWatch) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"Streamlit exception on the page: {exceptions.all_inner_texts()}"
    assert not watch.problems, watch.problems


def screenshot(page: Page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main section, so grow the viewport to its height first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 0")
    if height > page.viewport_size["height"]:
        page.set_viewport_size({"width": page.viewport_size["width"], "height": min(int(height), 8000)})
        page.wait_for_timeout(500)  # re-layout
    page.screenshot(path=path, full_page=True, timeout=30_000)


def wait_until_idle(page: Page) -> None:
    """Until the app's script run is over (Streamlit marks its root with the script state)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")


def choose_model(page: Page, name: str) -> None:
    """Pick our bundle in the sidebar's model selector (shown only when more than one bundle is listed)."""
    from playwright import sync_api

    combobox = page.get_by_role("combobox", name="Model")
    option = page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} \("))
    for attempt in range(3):  # a rerun can close the list just opened
        combobox.click()
        try:
            option.click(timeout=20_000)
            break
        except sync_api.TimeoutError:
            if attempt == 2:
                raise
    sync_api.expect(combobox).to_have_value(re.compile(rf"^{re.escape(name)} \("), timeout=TIMEOUT_MS)


def page_state(page: Page, log: Path) -> str:
    """For a failure message: the app's run and connection state, the page's text, the server's log."""
    from playwright import sync_api

    try:
        root = page.locator('[data-testid="stApp"]')
        state = f"{root.get_attribute('data-test-script-state', timeout=5000)}, "
        state += f"{root.get_attribute('data-test-connection-state', timeout=5000)}"
        text = page.locator("body").inner_text(timeout=5000)[:3000]
    except sync_api.Error as error:
        state, text = f"unreadable ({error})", ""
    return f"script/connection state: {state}\npage text:\n{text}\nserver log:\n{log_tail(log)}"


def shown_verdict(page: Page, expected: Result) -> str:
    """Wait for the uploaded smear's verdict and check it is the core's: class and confidence, or the referral."""
    if expected.inconclusive:
        alert = page.locator('[data-testid="stAlert"]').filter(has_text=REFERRAL)
        alert.first.wait_for()
        wait_until_idle(page)
        return REFERRAL
    banner = page.locator('[data-testid="stAlert"]').filter(has_text=re.compile(r"% confidence\)"))
    banner.first.wait_for()
    wait_until_idle(page)
    found = BANNER.match(banner.first.inner_text().strip())
    assert found, banner.first.inner_text()
    label, percent = found["label"], int(found["percent"])
    assert 0 < percent <= 100
    assert (label, percent) == (expected.display_label, round(expected.confidence * 100))
    return label


def check_in_browser(
    browser: Browser, url: str, log: Path, bundle: Path, tmp_path: Path, choose: str | None = None
) -> str:
    """The whole check against an app at ``url`` (from source or the desktop executable); returns the verdict shown.

    ``bundle`` is the model the page is expected to use (the core's answer on the same smear is what
    the page must show); ``choose`` is its name in the sidebar's model selector, when one is shown.
    Upload a smear, read its verdict off the page, upload a corrupt file among good ones and see its
    line, see the Model tab describe the bundle; throughout, no exception box, no console or script
    error and no request leaving the app's address. Saves a screenshot ($SMEARSCOPE_ARTIFACTS).
    """
    from playwright import sync_api

    smear = io_png(smears(900, 1)[0])
    screener = Screener(bundle)
    expected = screener.screen_bytes(smear, "smear.png")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    watch = PageWatch(page, url)
    shot = tmp_path / f"browser-e2e-{bundle.name}.png"
    try:
        response = page.goto(url, wait_until="domcontentloaded")
        assert response is not None and response.ok
        page.get_by_role("heading", name=TITLE).wait_for()
        wait_until_idle(page)
        if choose:
            choose_model(page, choose)
        page.get_by_text(screener.bundle.name).first.wait_for(state="attached")  # in the Model tab: ours is loaded
        wait_until_idle(page)
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Smear images")
        uploader.locator("input[type=file]").set_input_files(
            [{"name": "smear.png", "mimeType": "image/png", "buffer": smear}]
        )
        verdict = shown_verdict(page, expected)
        assert_page_healthy(page, watch)

        # a corrupt file among good ones: its error line, and the rest of the batch still screened
        batch = [{"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": b"this is text, not a JPEG"}]
        real = sorted(REAL_DATA.glob("*/*.jpg"))[:1] if REAL_DATA.is_dir() else []
        batch += [{"name": p.name, "mimeType": "image/jpeg", "buffer": p.read_bytes()} for p in real]
        uploader.locator("input[type=file]").set_input_files(batch)
        page.locator('[data-testid="stAlert"]').filter(has_text=BAD_FILE_LINE).wait_for()
        if real:  # a real photograph: screened too (a result or a referral, depending on the model)
            page.get_by_text("Fields of this case (2)").wait_for()  # the case's table: the smear and the photograph
            page.locator('[data-testid="stImageCaption"]', has_text=real[0].name).wait_for()
        wait_until_idle(page)
        if not expected.inconclusive:
            banner = page.locator('[data-testid="stAlert"]').filter(has_text=re.compile(r"% confidence\)"))
            assert BANNER.match(banner.first.inner_text().strip()), "the good image's result is gone"
        assert_page_healthy(page, watch)
        screenshot(page, shot)

        # a referred image's card: the verdict and its reasons, and no class, severity or percentage
        grey = io_png(smears(900, 1)[0].convert("L").convert("RGB"))  # no stain: the image checks refer it
        assert screener.screen_bytes(grey, "grey.png").inconclusive
        uploader.locator("input[type=file]").set_input_files([{"name": "grey.png", "mimeType": "image/png",
                                                               "buffer": grey}])  # fmt: skip
        caption = page.locator('[data-testid="stImageCaption"]', has_text="grey.png")
        caption.wait_for()
        wait_until_idle(page)
        blocks = page.locator('[data-testid="stVerticalBlock"]').filter(has=caption)
        card = blocks.filter(has_text="Technician review").last.inner_text()  # the innermost: the grey image's card
        assert REFERRAL in card and "Model details (not a result)" in card
        assert finding_texts_in(card) == [], card
        assert_page_healthy(page, watch)

        # the Model tab describes the bundle in use
        page.get_by_role("tab", name="Model").click()
        page.get_by_text(screener.bundle.name).first.wait_for()
        assert_page_healthy(page, watch)
    except BaseException:
        print(page_state(page, log))  # shown by pytest with the failure
        failure = tmp_path / f"browser-e2e-{bundle.name}-failure.png"
        with contextlib.suppress(sync_api.Error):
            screenshot(page, failure)
            save_artifact(failure)
        raise
    finally:
        page.close()
    assert shot.stat().st_size > 10_000
    save_artifact(shot)
    return verdict


# ---------------------------------------------------------------- convert/ (tests/test_convert_*.py)

DEFAULT_RUN = PROJECT_ROOT / "runs" / "default"


def run_convert(*args: str) -> subprocess.CompletedProcess:
    """``python -m convert ARGS`` in a subprocess, from the project root; ``--features none`` unless ARGS choose a
    feature extractor (converting EfficientNet-Lite0 takes about a minute: tests/test_convert_features.py covers it)."""
    features = () if "--features" in args else ("--features", "none")
    return subprocess.run(
        [sys.executable, "-m", "convert", *args, *features],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def crafted_drift(
    agreement: float = 1.0,
    accuracy: tuple[float, float] = (0.95, 0.95),
    recalls: dict[str, tuple[float, float]] | None = None,
    n: int = 400,
) -> dict:
    """The fields of convert.drift.compare's result that the gate reads (float, int8 pairs)."""
    recalls = recalls or {"Benign": (0.96, 0.96), "Pro": (0.94, 0.94)}
    return {
        "n": n,
        "agreement": agreement,
        "disagreement_count": round((1 - agreement) * n),
        "accuracy": {"float": accuracy[0], "int8": accuracy[1], "delta_points": (accuracy[1] - accuracy[0]) * 100},
        "per_class_recall": {
            name: {"float": f, "int8": i, "delta_points": (i - f) * 100} for name, (f, i) in recalls.items()
        },
    }


# ---------------------------------------------------------------- the card's shortcuts section
# What train/shortcuts.py writes (schemas/model_card.schema.json `shortcuts`): the Model tab's colour-robust and
# colour-only figures (tests/test_edge_model_page.py).


def shortcuts_section(int8: bool = True) -> dict:
    """A ``shortcuts`` card section with distinct, recognisable figures: colour-robust test accuracy 0.6125
    (int8 0.5875), colour-only baseline 0.8375."""

    def robust(accuracy: float) -> dict:
        return {"n": 80, "accuracy": accuracy, "macro_f1": 0.5432, "sensitivity": 0.7, "specificity": 0.6}

    colour_robust = {"val": robust(0.65), "test": robust(0.6125)} | ({"int8_test": robust(0.5875)} if int8 else {})
    return {
        "colour_target": {"mean": [200.0, 170.0, 190.0], "std": [30.0, 35.0, 28.0]},
        "baselines": {
            "colour": {"features": "mean and standard deviation of R, G, B of the whole image (6 numbers)",
                       "accuracy": 0.8375, "macro_f1": 0.81, "malignant_vs_benign_accuracy": 0.9125},
            "corners": {"features": "mean and standard deviation of R, G, B in each corner (24 numbers)",
                        "accuracy": 0.7625, "macro_f1": 0.74, "malignant_vs_benign_accuracy": 0.875},
            "file": {"features": "file size, width, height and format (4 numbers)", "accuracy": 0.4125,
                     "macro_f1": 0.38, "malignant_vs_benign_accuracy": 0.7},
            "majority_class": {"features": "none: always the most frequent training class", "accuracy": 0.3375},
        },
        "colour_robust": colour_robust,
        "note": "colour-robust: the same test images with each image's colour standardised",
    }  # fmt: skip


# A training run folder's files (tests/test_train_cli.py, tests/test_train_finetune.py)
RUN_FILES = {
    "model.keras",
    "manifest.csv",
    "dataset_report.json",
    "dataset_report.md",
    "metrics.json",
    "confusion_matrix.png",
    "confusion_matrix.json",
    "curves.png",
    "history.json",
    "model_card.json",
}


def open_page(bundle: Path, data: Path, monkeypatch: pytest.MonkeyPatch):
    """The page under AppTest, with ``bundle``'s folder as the models folder and ``data`` as its data folder."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(bundle.parent))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(data))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", data / "no-default")
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception, [e.value for e in app.exception]
    return app
