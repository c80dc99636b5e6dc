"""Five browser sessions classifying on one app at the same time all get the right answers.

Runs bench.sessions' routine (the benchmark ``python -m bench.sessions`` reports the latencies into
bench/results): the shipped default model, real test images each session uploads in turn, and each
result banner compared with the inference core's own answer for that image. Prints the latencies
seen; asserts only correctness (timing is the benchmark's business on a noisy machine).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from bench.sessions import DEFAULT_BUNDLE, concurrent_sessions, confident_uploads, summary
from tests.browser import find_chromium, streamlit_app
from tests.factories import PROJECT_ROOT, REAL_DATA

pytest.importorskip("playwright.async_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)")
CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.real_data,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (/usr/bin/chromium or on PATH): apt-get install chromium"),
    pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"the real dataset is not at {REAL_DATA}"),
]
SESSIONS, PER_SESSION = 5, 2


def test_five_sessions_at_once_get_correct_results(tmp_path: Path) -> None:
    uploads = confident_uploads(DEFAULT_BUNDLE, REAL_DATA, SESSIONS * PER_SESSION)
    assert len({u.label for u in uploads}) > 1 or len(uploads) == 1  # not one answer for all: a swap would show
    env = os.environ | {"SMEARSCOPE_DATA": str(tmp_path / "data")}
    env.pop("SMEARSCOPE_MODELS", None)
    log = tmp_path / "app.log"
    with streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, log) as url:
        outcomes = asyncio.run(concurrent_sessions(url, uploads, SESSIONS, PER_SESSION, CHROMIUM))
    report = summary(outcomes, PER_SESSION)
    print(json.dumps({k: v for k, v in report.items() if k != "per_session"}, indent=1))
    assert report["problems"] == [], report["problems"]
    assert report["correct"] == SESSIONS * PER_SESSION
    assert "Traceback" not in log.read_text(errors="replace")
