"""Uploads over the 50 MB limit are refused with a clear message, everywhere a file can come in.

- The page itself (AppTest): a file over the limit in a batch gets its own sentence and the good
  files are screened (defence in depth: Streamlit started without the launcher's settings takes 200 MB).
- The folder path: a file over the limit in the folder gets the same sentence.
- The real server and browser (Debian chromium + Playwright): the uploader refuses the file with
  Streamlit's own message before sending it, and the server refuses an upload request over the limit
  (HTTP 413) that is otherwise valid (the same request with a small file is accepted).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM_FLAGS, find_chromium, streamlit_app
from tests.factories import PROJECT_ROOT, io_png, smears, write_bundle

LIMIT_BYTES = 50 * 1024 * 1024
TOO_LARGE = "huge.jpg is larger than 50 MB and was skipped."


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: bytes) -> Path:
    folder = tmp_path_factory.mktemp("limit") / "models"
    write_bundle(folder / "tiny", tiny_tflite)
    return folder


def page(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import streamlit as streamlit_module
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(models))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
    streamlit_module.cache_resource.clear()  # the history is cached per process: use this test's folder
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception
    return app


def test_page_refuses_an_oversized_upload_and_screens_the_rest(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = page(models, tmp_path, monkeypatch)
    good = [(f"good-{i}.png", io_png(image), "image/png") for i, image in enumerate(smears(600, 2))]
    app.file_uploader[0].set_value([good[0], ("huge.jpg", b"\xff" * (LIMIT_BYTES + 1), "image/jpeg"), good[1]]).run()
    assert not app.exception
    assert [e.value for e in app.error if not e.value.startswith("**")] == [TOO_LARGE]
    table = " ".join(m.value for m in app.markdown)
    assert "| good-0.png |" in table and "| good-1.png |" in table


def test_folder_path_refuses_an_oversized_file(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "good.png").write_bytes(io_png(smears(610, 1)[0]))
    with open(folder / "huge.jpg", "wb") as handle:  # sparse: takes no disk space
        handle.truncate(LIMIT_BYTES + 1)
    app = page(models, tmp_path, monkeypatch)
    app.text_input[0].set_value(str(folder)).run()
    app.button[0].click().run()
    assert not app.exception
    assert [e.value for e in app.error if not e.value.startswith("**")] == [TOO_LARGE]


CHROMIUM = find_chromium()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (/usr/bin/chromium or on PATH): apt-get install chromium")
def test_browser_and_server_refuse_an_oversized_upload(models: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    env = os.environ | {"SMEARSCOPE_MODELS": str(models), "SMEARSCOPE_DATA": str(tmp_path / "data")}
    huge = b"\xff" * (LIMIT_BYTES + 1)
    with (
        streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, tmp_path / "server.log") as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            view = browser.new_page()
            view.set_default_timeout(120_000)
            uploads: list = []
            view.on("request", lambda r: uploads.append(r) if "/_stcore/upload_file/" in r.url else None)
            view.goto(url)
            chooser = view.locator('[data-testid="stFileUploader"] input[type="file"]')
            chooser.wait_for(state="attached")
            (tmp_path / "huge.jpg").write_bytes(huge)  # Playwright takes buffers only up to 50 MB: a file
            (tmp_path / "good.png").write_bytes(io_png(smears(620, 1)[0]))
            chooser.set_input_files([tmp_path / "huge.jpg", tmp_path / "good.png"])
            message = view.get_by_text(re.compile(r"File must be .*50.* or smaller"))
            message.wait_for()
            print(f"\nbrowser message for a 50 MB + 1 byte file: {message.inner_text()!r}")
            view.get_by_text("Printable report (HTML)").first.wait_for()  # the good file was screened
            sent = [r for r in uploads if r.method == "PUT"]
            assert len(sent) == 1, [r.url for r in sent]  # only the good file left the browser

            # the server: the same request (session, XSRF token) with an oversized file -> 413
            headers = {"X-Xsrftoken": sent[0].all_headers()["x-xsrftoken"]}
            target = sent[0].url.rsplit("/", 1)[0]
            small = {"file": {"name": "small.png", "mimeType": "image/png", "buffer": io_png(smears(621, 1)[0])}}
            accepted = view.request.put(f"{target}/control-file", multipart=small, headers=headers)
            refused = view.request.put(
                f"{target}/huge-file",
                multipart={"file": {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": huge}},
                headers=headers,
            )
            print(f"server: small upload {accepted.status}, 50 MB + 1 byte upload {refused.status} {refused.text()!r}")
            assert accepted.status == 204, accepted.text()
            assert refused.status == 413, refused.text()
        finally:
            browser.close()
