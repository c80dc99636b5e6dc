"""The app in a real browser: Debian's chromium driven by Playwright against the app started by its launcher.

Starts the app on a free port with a tiny int8 bundle of its own, uploads a smear, reads the class
and the confidence off the page, uploads a corrupt file and sees its error line, and saves a
screenshot (copied to $SMEARSCOPE_ARTIFACTS when set). A case of three fields is printed: its report
is downloaded, printed to PDF by chromium (``page.pdf``, what "Save as PDF" in the print dialog makes),
and the sample ID and the case verdict are read back from the PDF's text (pypdf). A page can answer 200 and
still fail, so the page itself is checked: no Streamlit exception box, no console or script errors, and no
request leaving the app's own address (the app is meant to run offline).

Skips with its reason where chromium (/usr/bin/chromium or on PATH) or Playwright is missing.
Playwright only drives the system chromium: never `playwright install`. The check itself
(``check_in_browser``) is in tests/factories.py, the tiny bundles (``tiny_models``) and the browser in
tests/conftest.py: the desktop executable's test (tests/test_desktop_build.py) runs the same flow.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from edge_app.cases import case_verdict, summarize
from edge_app.screening import Screener
from tests.browser import find_chromium, streamlit_app
from tests.factories import (
    OUR_MODEL,
    PROJECT_ROOT,
    TIMEOUT_MS,
    PageWatch,
    assert_page_healthy,
    check_in_browser,
    choose_model,
    io_png,
    page_state,
    save_artifact,
    smears,
    wait_until_idle,
)

pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)")

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium (/usr/bin/chromium or on PATH): apt-get install chromium (.ci/run does)"
    ),
]


class App(NamedTuple):
    url: str
    log: Path


@pytest.fixture(scope="module")
def app(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """`python -m edge_app.launcher` on a free port, on the test bundles, with its history in a tmp folder."""
    work = tmp_path_factory.mktemp("e2e-app")
    env = os.environ | {"SMEARSCOPE_MODELS": str(tiny_models), "SMEARSCOPE_DATA": str(work / "data")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = work / "server.log"
    try:
        with streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, log) as url:
            yield App(url, log)
    except RuntimeError as error:
        pytest.fail(str(error))
    finally:
        save_artifact(log)


def test_upload_in_a_real_browser(browser: Browser, app: App, tiny_models: Path, tmp_path: Path) -> None:
    expected = Screener(tiny_models / OUR_MODEL).screen_bytes(io_png(smears(900, 1)[0]), "smear.png")
    assert not expected.inconclusive, expected.reasons  # the page must show a class and its confidence
    verdict = check_in_browser(browser, app.url, app.log, tiny_models / OUR_MODEL, tmp_path, choose=OUR_MODEL)
    assert verdict == "Pre-B ALL"  # the class our bundle's bias favours: read off the page, not the first class


def test_a_case_of_three_fields_prints_to_pdf(browser: Browser, app: App, tiny_models: Path, tmp_path: Path) -> None:
    """Sample ID typed in the sidebar, three fields uploaded, the case's printable report downloaded and printed
    to PDF in chromium offline; the PDF's text holds the sample ID, the case verdict and the signature line."""
    pypdf = pytest.importorskip("pypdf", reason="pypdf is not installed (pip install -r requirements-dev.txt)")
    fields = [io_png(image) for image in smears(960, 3)]
    screener = Screener(tiny_models / OUR_MODEL)
    verdict = case_verdict(summarize([screener.screen_bytes(data, f"field-{i}.png") for i, data in enumerate(fields)]))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    watch = PageWatch(page, app.url)
    try:
        page.goto(app.url, wait_until="domcontentloaded")
        wait_until_idle(page)
        choose_model(page, OUR_MODEL)
        wait_until_idle(page)
        sample = page.get_by_role("textbox", name="Sample ID (accession number)")
        sample.fill("E2E-CASE-0042")
        sample.press("Enter")
        wait_until_idle(page)
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Smear images")
        uploader.locator("input[type=file]").set_input_files(
            [{"name": f"field-{i}.png", "mimeType": "image/png", "buffer": data} for i, data in enumerate(fields)]
        )
        page.get_by_text("Fields of this case (3)").wait_for()
        page.get_by_text(f"Case verdict: {verdict.text}").wait_for()
        wait_until_idle(page)
        assert_page_healthy(page, watch)
        with page.expect_download() as download:
            page.get_by_role("button", name="Printable report (HTML)").click()
        report = Path(download.value.path()).read_text(encoding="utf-8")
        assert "E2E-CASE-0042" in report
    except BaseException:
        print(page_state(page, app.log))
        raise
    finally:
        page.close()

    printer = browser.new_page()
    requests: list[str] = []
    printer.on("request", lambda request: requests.append(request.url))
    printer.set_content(report, wait_until="load")
    pdf = tmp_path / "smearscope-E2E-CASE-0042.pdf"
    printer.pdf(path=str(pdf), format="A4", print_background=True)
    printer.close()
    save_artifact(pdf)
    assert not [url for url in requests if not url.startswith(("data:", "about:"))], requests  # self-contained
    reader = pypdf.PdfReader(pdf)
    # NFKC: the PDF's fonts set "fi" as one ligature glyph, which text extraction returns as such
    text = unicodedata.normalize("NFKC", " ".join(" ".join((p.extract_text() or "").split()) for p in reader.pages))
    print(f"\ncase report PDF: {len(reader.pages)} pages, verdict {verdict.text!r}")
    assert "E2E-CASE-0042" in text and f"Case verdict: {verdict.text}" in text
    assert "Signature" in text and "field-2.png" in text and "not a diagnostic device" in text
