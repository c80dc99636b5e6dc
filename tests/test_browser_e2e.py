"""The app in a real browser: Debian's chromium driven by Playwright against the app started by its launcher.

Starts the app on a free port with a tiny int8 bundle of its own, uploads a smear, reads the class
and the confidence off the page, uploads a corrupt file and sees its error line, and saves a
screenshot (copied to $SMEARSCOPE_ARTIFACTS when set). A page can answer 200 and still fail, so
the page itself is checked: no Streamlit exception box, no console or script errors, and no
request leaving the app's own address (the app is meant to run offline).

Skips with its reason where chromium (/usr/bin/chromium or on PATH) or Playwright is missing.
Playwright only drives the system chromium: never `playwright install`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pytest

from edge_app.classify import Result
from edge_app.screening import Screener
from smearscope_core.imaging import model_pixels
from tests.browser import BANNER, CHROMIUM_FLAGS, find_chromium, log_tail, streamlit_app
from tests.conftest import PROJECT_ROOT, REAL_DATA
from tests.test_edge_core import CLASSES, SIZE, io_png, smears, write_bundle

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)"
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium (/usr/bin/chromium or on PATH): apt-get install chromium (.ci/run does)"
    ),
]

TIMEOUT_MS = 120_000  # generous: CI has two slow cores shared with other jobs
TITLE = "SmearScope: ALL screening of blood smear images"
BAD_FILE_LINE = "bad.jpg is not an image this app can read (JPEG, PNG, TIFF or BMP)."
REFERRAL = "Inconclusive - refer for manual review"
OUR_MODEL = "e2e-tiny"  # sorts after the decoy, so the test has to pick it in the sidebar
CALIBRATION = {"temperature": 1.0, "abstain_threshold": 0.0, "fitted_on": "val"}  # never "unsure"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models(tmp_path_factory)


def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two tiny bundles: a decoy listed first, and ours, whose logits favour Pre-B ALL.

    Built as in tests/test_edge_core.py (tiny_tflite), with the output bias set so the page shows a
    malignant class that is not the first one, at a confidence other than 1/number of classes.
    Built once per session: the desktop executable's test (tests/test_desktop_build.py) uses it too.
    """
    folder = tmp_path_factory.getbasetemp() / "e2e-model" / "models"
    if (folder / OUR_MODEL / "model.tflite").is_file():
        return folder
    from convert.quantize import convert_int8, export_saved_model
    from train.model import build_model

    work = folder.parent
    model = build_model(len(CLASSES), SIZE)
    model.get_layer("logits").bias.assign(np.array([0.0, 1.5, 0.0], dtype=np.float32))
    saved = export_saved_model(model, SIZE, work / "saved")
    tflite = convert_int8(saved, np.stack([model_pixels(im, SIZE) for im in smears(0, 16)]))
    decoy = [{**c, "display_name": f"Decoy {c['id']}"} for c in CLASSES]
    write_bundle(folder / "a-decoy", tflite, {"name": "e2e-decoy", "classes": decoy, "calibration": CALIBRATION})
    write_bundle(folder / OUR_MODEL, tflite, {"name": "e2e-tiny-model", "calibration": CALIBRATION})
    return folder


class App(NamedTuple):
    url: str
    log: Path


@pytest.fixture(scope="module")
def app(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """`python -m edge_app.launcher` on a free port, on the test bundles, with its history in a tmp folder."""
    work = tmp_path_factory.mktemp("e2e-app")
    env = os.environ | {"SMEARSCOPE_MODELS": str(models), "SMEARSCOPE_DATA": str(work / "data")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = work / "server.log"
    try:
        with streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, log) as url:
            yield App(url, log)
    except RuntimeError as error:
        pytest.fail(str(error))
    finally:
        save_artifact(log)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


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
            page.get_by_text(re.compile(r"^2 images screened")).wait_for()
            page.locator('[data-testid="stImageCaption"]', has_text=real[0].name).wait_for()
        wait_until_idle(page)
        if not expected.inconclusive:
            banner = page.locator('[data-testid="stAlert"]').filter(has_text=re.compile(r"% confidence\)"))
            assert BANNER.match(banner.first.inner_text().strip()), "the good image's result is gone"
        assert_page_healthy(page, watch)
        screenshot(page, shot)

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


def test_upload_in_a_real_browser(browser: Browser, app: App, models: Path, tmp_path: Path) -> None:
    expected = Screener(models / OUR_MODEL).screen_bytes(io_png(smears(900, 1)[0]), "smear.png")
    assert not expected.inconclusive, expected.reasons  # the page must show a class and its confidence
    verdict = check_in_browser(browser, app.url, app.log, models / OUR_MODEL, tmp_path, choose=OUR_MODEL)
    assert verdict == "Pre-B ALL"  # the class our bundle's bias favours: read off the page, not the first class
