"""Cold start and first classification of the desktop executable: ``python build/measure_start.py``.

Cold start: from launching the executable to the first HTTP 200 on its page (``--runs`` times; the
first run after a build is the coldest). First classification: in Debian's chromium (Playwright,
as the browser test), from handing the uploader a smear-like image made in memory to the verdict
on the page, once the page is up. Run it with the test environment's Python (.venv: Playwright);
``--results DIR`` writes ``start-<date>.json`` and ``.md``. Targets: start <= 2 s, classification <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edge_app.launcher import free_port, smear_image  # noqa: E402 - the project is not installed
from tests.browser import CHROMIUM_FLAGS, VERDICT, find_chromium  # noqa: E402

DEFAULT_EXECUTABLE = ROOT / "dist" / "smearscope" / "smearscope"
START_TARGET_S, CLASSIFY_TARGET_S = 2.0, 1.0


def start(executable: Path, port: int, data: Path) -> tuple[subprocess.Popen, float]:
    """Launch and poll the page until it answers 200; returns the process and the seconds it took."""
    env = {"SMEARSCOPE_DATA": str(data), "PATH": "/usr/bin:/bin", "HOME": str(data)}
    started = time.perf_counter()
    process = subprocess.Popen([str(executable), "--port", str(port), "--no-browser"], env=env, cwd=data,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while time.perf_counter() - started < 60:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process, time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            time.sleep(0.01)
    process.kill()
    raise RuntimeError("the page did not answer within 60 s")


def shut(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=20)


def first_classification(url: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        began = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Smear images")
        uploader.locator("input[type=file]").wait_for(state="attached")
        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
        page_up = time.perf_counter() - began
        began = time.perf_counter()
        uploader.locator("input[type=file]").set_input_files(
            [{"name": "smear.png", "mimeType": "image/png", "buffer": smear_image()}]
        )
        page.locator('[data-testid="stAlert"]').filter(has_text=VERDICT).first.wait_for()
        classified = time.perf_counter() - began
        browser.close()
    return {"page_up_s": round(page_up, 3), "first_classification_s": round(classified, 3)}


def measure(executable: Path, runs: int) -> dict:
    starts, browser_runs = [], []
    with tempfile.TemporaryDirectory() as work:
        for index in range(runs):
            data = Path(work) / f"run{index}"
            data.mkdir()
            process, seconds = start(executable, free_port(), data)
            starts.append(round(seconds, 3))
            shut(process)
        if find_chromium():
            for index in range(min(runs, 3)):
                data = Path(work) / f"browser{index}"
                data.mkdir()
                port = free_port()
                process, _ = start(executable, port, data)
                try:
                    browser_runs.append(first_classification(f"http://127.0.0.1:{port}"))
                finally:
                    shut(process)
    classify = [r["first_classification_s"] for r in browser_runs]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "executable": str(executable),
        "start_to_first_200_s": starts,
        "start_median_s": statistics.median(starts),
        "start_max_s": max(starts),
        "browser": browser_runs,
        "first_classification_median_s": statistics.median(classify) if classify else None,
        "first_classification_max_s": max(classify) if classify else None,
        "targets": {"start_s": START_TARGET_S, "first_classification_s": CLASSIFY_TARGET_S},
    }


def markdown(data: dict) -> str:
    lines = [
        f"# Desktop executable start-up ({data['date']})",
        "",
        "| measure | runs (s) | median (s) | max (s) | target (s) |",
        "|---|---|---:|---:|---:|",
        f"| launch to first HTTP 200 | {', '.join(map(str, data['start_to_first_200_s']))} | "
        f"{data['start_median_s']:.3f} | {data['start_max_s']:.3f} | {START_TARGET_S} |",
    ]
    if data["browser"]:
        lines.append(
            f"| first classification in the browser, page up | "
            f"{', '.join(str(r['first_classification_s']) for r in data['browser'])} | "
            f"{data['first_classification_median_s']:.3f} | {data['first_classification_max_s']:.3f} | "
            f"{CLASSIFY_TARGET_S} |"
        )
        lines.append(
            f"| (page load to uploader ready, for reference) | "
            f"{', '.join(str(r['page_up_s']) for r in data['browser'])} | | | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executable", type=Path, default=DEFAULT_EXECUTABLE)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--results", type=Path, help="write start-<date>.json and .md here")
    args = parser.parse_args(argv)
    data = measure(args.executable, args.runs)
    print(markdown(data))
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        day = data["date"][:10]
        (args.results / f"start-{day}.json").write_text(json.dumps(data, indent=2) + "\n")
        (args.results / f"start-{day}.md").write_text(markdown(data))
    met = data["start_max_s"] <= START_TARGET_S and (data["first_classification_max_s"] or 0) <= CLASSIFY_TARGET_S
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
