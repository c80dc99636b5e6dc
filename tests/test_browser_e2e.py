"""The app in a real browser: Debian's chromium driven by Playwright against the app started by its launcher.

Starts the app on a free port with a tiny int8 bundle of its own, uploads a smear, reads the class
and the confidence off the page, uploads a corrupt file and sees its error line, and saves a
screenshot (copied to $SMEARSCOPE_ARTIFACTS when set). A page can answer 200 and still fail, so
the page itself is checked: no Streamlit exception box, no console or script errors, and no
request leaving the app's own address (the app is meant to run offline).

Skips with its reason where chromium (/usr/bin/chromium or on PATH) or Playwright is missing.
Playwright only drives the system chromium: never `playwright install`. The check itself
(``check_in_browser``) is in tests/factories.py, the tiny bundles (``tiny_models``) and the browser in
tests/conftest.py: the desktop executable's test (tests/test_desktop_build.py) runs the same flow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from edge_app.screening import Screener
from tests.browser import find_chromium, streamlit_app
from tests.factories import OUR_MODEL, PROJECT_ROOT, check_in_browser, io_png, save_artifact, smears

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
