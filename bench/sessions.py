"""``python -m bench.sessions``: several browser sessions classifying on one app at the same time.

A clinic may open the app in more than one browser tab or on more than one PC of a small network.
Every session shares the one loaded model, so this checks that each session gets the answer the
inference core gives for its own image, and measures the latency each one saw: first one session
alone (the baseline), then all sessions at once, in the same run, so the ratio is what to compare.

Latency is from handing the file to the page's uploader to the result banner for that file being on
the page: upload, decoding, the image checks, the model, and drawing the result card.

Needs Playwright and Debian's chromium (dev requirements; never ``playwright install``) and the
real test images (../shared/datasets/all-4class): writes bench/results/<date>-<host>-sessions.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path

from bench.measure import PROJECT_ROOT, machine_facts, percentiles
from edge_app.screening import Screener
from smearscope_core.console import logger
from smearscope_core.errors import DatasetError, ExitCode, SmearScopeError, report
from smearscope_core.paths import DEFAULT_DATASET
from tests.browser import BANNER, CHROMIUM_FLAGS, VERDICT, find_chromium, streamlit_app

DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"
TIMEOUT_MS = 180_000  # five sessions on two slow cores: generous

log = logger("bench")


@dataclass(frozen=True)
class Upload:
    """One image and the answer the inference core gives for it, which the page must show."""

    name: str
    data: bytes
    label: str
    percent: int


@dataclass
class SessionOutcome:
    session: int
    page_load_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    correct: int = 0
    wrong: list[str] = field(default_factory=list)
    error: str = ""


def confident_uploads(bundle: Path, data: Path, count: int) -> list[Upload]:
    """``count`` real images, taking each class folder in turn, that the core answers without referring
    (the page then shows a class and a confidence to compare), each with its expected banner."""
    screener = Screener(bundle, num_threads=1)
    folders = [sorted(folder.glob("*.jpg")) for folder in sorted(data.iterdir()) if folder.is_dir()]
    uploads = []
    for path in (p for row in zip_longest(*folders) for p in row if p is not None):
        result = screener.screen_bytes(path.read_bytes(), path.name)
        if not result.inconclusive:
            uploads.append(Upload(path.name, path.read_bytes(), result.display_label, round(result.confidence * 100)))
        if len(uploads) == count:
            return uploads
    raise DatasetError(f"Fewer than {count} images under {data} get a confident result.")


async def run_session(browser, url: str, session: int, uploads: list[Upload]) -> SessionOutcome:
    """One browser context (its own Streamlit session): open the page, upload each image in turn and
    wait for its result card; anything else than the expected banner is recorded as wrong."""
    outcome = SessionOutcome(session)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        started = time.perf_counter()
        await page.goto(url, wait_until="domcontentloaded")
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Smear images")
        await uploader.locator("input[type=file]").wait_for(state="attached")
        outcome.page_load_s = time.perf_counter() - started
        banners = page.locator('[data-testid="stAlert"]').filter(has_text=VERDICT)
        for done, upload in enumerate(uploads, start=1):
            started = time.perf_counter()
            await uploader.locator("input[type=file]").set_input_files(
                [{"name": upload.name, "mimeType": "image/jpeg", "buffer": upload.data}]
            )
            await banners.nth(done - 1).wait_for()  # one result card per uploaded file so far
            outcome.latencies_s.append(time.perf_counter() - started)
        # every card's banner against the core's answers for this session's files (as multisets: the
        # page lists cards in upload order, the check does not depend on it)
        expected = [(u.label, u.percent) for u in uploads]
        for text in await banners.all_inner_texts():
            found = BANNER.match(text.strip())
            key = (found["label"], int(found["percent"])) if found else None
            match = next((u for u in uploads if (u.label, u.percent) == key), None)
            if match is None:
                outcome.wrong.append(f"the page said {text.strip()!r}; the core said {expected}")
            else:
                outcome.correct += 1
                uploads = [u for u in uploads if u is not match]
        exceptions = await page.locator('[data-testid="stException"]').all_inner_texts()
        outcome.wrong += [f"Streamlit exception: {text[:300]}" for text in exceptions]
    except Exception as error:  # noqa: BLE001 - a session that fails is the finding, reported with the others
        outcome.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        await context.close()
    return outcome


async def concurrent_sessions(
    url: str, uploads: list[Upload], sessions: int, per_session: int, chromium: str
) -> list[SessionOutcome]:
    """``sessions`` sessions at once, each uploading ``per_session`` images (different ones per session
    where there are enough, so no session can pass by reading another's answer)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            plans = [
                [uploads[(s * per_session + k) % len(uploads)] for k in range(per_session)] for s in range(sessions)
            ]
            return list(await asyncio.gather(*(run_session(browser, url, s, plans[s]) for s in range(sessions))))
        finally:
            await browser.close()


def summary(outcomes: list[SessionOutcome], per_session: int) -> dict:
    latencies = [seconds for o in outcomes for seconds in o.latencies_s]
    return {
        "sessions": len(outcomes),
        "classifications": len(outcomes) * per_session,
        "correct": sum(o.correct for o in outcomes),
        "problems": [p for o in outcomes for p in [*o.wrong, *([o.error] if o.error else [])]],
        "failed_sessions": sum(bool(o.error) for o in outcomes),
        "latency": percentiles(latencies) | {"max_ms": max(latencies) * 1000} if latencies else None,
        "page_load": percentiles([o.page_load_s for o in outcomes if o.page_load_s]) if outcomes else None,
        "per_session": [asdict(o) for o in outcomes],
    }


def markdown(results: dict) -> str:
    lines = [
        f"# Concurrent browser sessions {results['created']}",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. Command: `{results['command']}`.",
        "Latency: from handing the file to the uploader to its result banner on the page.",
        "",
        "| sessions at once | classifications | correct | failed sessions | latency p50 | p95 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in (results["alone"], results["together"]):
        lat = run["latency"] or {}
        cells = [f"{lat[k]:.0f} ms" if k in lat else "-" for k in ("p50_ms", "p95_ms", "max_ms")]
        lines.append(
            f"| {run['sessions']} | {run['classifications']} | {run['correct']} | {run['failed_sessions']} | "
            + " | ".join(cells)
            + " |"
        )
    if results["alone"]["latency"] and results["together"]["latency"]:
        ratio = results["together"]["latency"]["p50_ms"] / results["alone"]["latency"]["p50_ms"]
        lines += ["", f"p50 latency with {results['together']['sessions']} sessions at once: {ratio:.1f}x alone."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--per-session", type=int, default=3, help="images each session uploads, one after another")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        together = measure_sessions(args, sys.argv[1:] if argv is None else argv)
    except SmearScopeError as error:
        return report(error)
    return ExitCode.OK if together["correct"] == together["classifications"] else ExitCode.GATE_FAILED


def measure_sessions(args: argparse.Namespace, argv: list[str]) -> dict:
    """One session alone, then all at once; write the results as JSON and Markdown; return the concurrent run's."""
    chromium = find_chromium()
    if chromium is None:
        raise SmearScopeError("No chromium (apt-get install chromium).")
    uploads = confident_uploads(DEFAULT_BUNDLE, args.data, args.sessions * args.per_session)
    with tempfile.TemporaryDirectory() as work:
        env = os.environ | {"SMEARSCOPE_DATA": str(Path(work) / "data")}  # the page serves the bundled default
        with streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, Path(work) / "app.log") as url:
            alone = asyncio.run(concurrent_sessions(url, uploads, 1, args.per_session, chromium))
            together = asyncio.run(concurrent_sessions(url, uploads, args.sessions, args.per_session, chromium))
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.sessions " + " ".join(argv),
        "machine": machine_facts(),
        "alone": summary(alone, args.per_session),
        "together": summary(together, args.per_session),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{results['machine']['host'] or 'host'}-sessions"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    log.info(f"wrote {args.out / stem}.json and .md")
    return results["together"]


if __name__ == "__main__":
    sys.exit(main())
