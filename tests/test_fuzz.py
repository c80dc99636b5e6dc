"""Fuzzing the inference core and the upload page with generated bad files (Hypothesis).

The property, for every file of tests/badfiles.py (truncated, bit-flipped, empty, renamed text and
executables, decompression bombs, 1x1, 16-bit, CMYK, palette with transparency, animated,
multi-page, broken EXIF orientation): screening gives a valid result (finite probabilities that
sum to 1, a known class) or refuses with one sentence naming the file. Any other exception fails,
and so does a crash: the core runs in a child process (tests/fuzz_worker.py) under a memory limit,
so a segfault or an out-of-memory kill is seen, counted and its file saved for reproduction.

The upload path drives the real page (Streamlit AppTest) with batches mixing bad and good files:
each bad file gets its own error line, the good ones their results, the page raises nothing, and
the session still screens a good file afterwards.

Runs are reproducible (derandomized, no example database). ``SMEARSCOPE_FUZZ=full`` runs the long
campaign; the default ("quick", what CI runs) still puts 1,000 files through the core. ``pytest -s``
prints the counts per family.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smearscope_core.imaging import ImageError, model_pixels, open_image
from tests.badfiles import MAX_PIXELS, BadFile, named
from tests.factories import PROJECT_ROOT, io_png, smears, write_bundle

PROFILE = os.environ.get("SMEARSCOPE_FUZZ", "quick")
# files through the core, and upload batches (each 1-5 bad files plus 2 good ones) through the page
BUDGETS = {"quick": {"core": 1000, "upload_batches": 100}, "full": {"core": 10_000, "upload_batches": 500}}
if PROFILE not in BUDGETS:
    raise ValueError(f"SMEARSCOPE_FUZZ must be one of {sorted(BUDGETS)}, not {PROFILE!r}")
BUDGET = BUDGETS[PROFILE]
WORKER_MEMORY_MB = 3072  # the worker's address-space limit: far above what a refused bomb may cost
FILE_TIMEOUT_S = 60  # a file taking longer is a hang, counted as a crash
BOMB_SECONDS = 1.0  # a refused bomb must be refused at the header, long before this
LARGE_IMAGE_RSS_MB = 1200  # measured 0.7 GB for the image of test_large_sixteen_bit_image_stays_within_memory

for name, budget in BUDGETS.items():
    settings.register_profile(f"smearscope-fuzz-{name}", derandomize=True, database=None, deadline=None,
                              max_examples=budget["core"], print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
FUZZ_SETTINGS = settings.get_profile(f"smearscope-fuzz-{PROFILE}")


class WorkerCrashError(Exception):
    """The worker died or hung on a file."""


class FuzzWorker:
    """A long-lived tests/fuzz_worker.py child; restarted after a crash."""

    def __init__(self, bundle: Path, logs: Path, command: list[str] | None = None):
        self.logs = logs
        self.command = command or [sys.executable, "-m", "tests.fuzz_worker", str(bundle), str(WORKER_MEMORY_MB)]
        self.process: subprocess.Popen | None = None
        self.buffer = b""
        self.classes: list[str] = []
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"worker-{self.starts}.stderr"
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(self.command, cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr)  # fmt: skip
        self.buffer = b""
        ready = json.loads(self.readline(120))
        self.classes = ready["classes"]

    def readline(self, timeout: float) -> bytes:
        assert self.process and self.process.stdout
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerCrashError(f"no answer within {timeout:.0f} s (hang)")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise WorkerCrashError(f"the worker exited with code {self.process.wait()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def screen(self, bad: BadFile) -> dict:
        try:
            if self.process is None or self.process.poll() is not None:
                self.start()
            assert self.process and self.process.stdin
            self.process.stdin.write(json.dumps({"name": bad.name, "size": len(bad.data)}).encode() + b"\n")
            self.process.stdin.write(bad.data)
            self.process.stdin.flush()
            return json.loads(self.readline(FILE_TIMEOUT_S))
        except (WorkerCrashError, BrokenPipeError) as error:
            self.stop()
            stderr = self.log.read_text(errors="replace")[-2000:]
            return {"outcome": "crash", "message": f"{error}; worker stderr tail:\n{stderr}"}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                if stream:
                    stream.close()
        self.process = None


def assert_sentence(message: str, name: str) -> None:
    """One clear sentence for the technician: starts with the file's name, one line, ends with a full stop."""
    assert message.startswith(name), f"the message does not start with the file name {name!r}: {message!r}"
    assert message.endswith("."), f"not a sentence: {message!r}"
    assert "\n" not in message and len(message) <= 300, f"not one short sentence: {message!r}"


def assert_valid_result(answer: dict, classes: list[str]) -> None:
    probabilities = answer["probabilities"]
    assert answer["label"] in classes, answer
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probabilities), answer
    assert abs(sum(probabilities) - 1.0) < 1e-6, answer
    assert answer["confidence"] == max(probabilities) and math.isfinite(answer["p_malignant"]), answer


def save_for_reproduction(bad: BadFile, folder: Path) -> Path:
    """Keep a crashing file (and copy it to $SMEARSCOPE_ARTIFACTS when set) so it can be replayed."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{len(list(folder.iterdir())):04d}-{bad.family}-{bad.name}"
    path.write_bytes(bad.data)
    if os.environ.get("SMEARSCOPE_ARTIFACTS"):
        target = Path(os.environ["SMEARSCOPE_ARTIFACTS"]) / "fuzz-crashes"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.name)
    return path


class Tally:
    """Counts per family and outcome, printed with ``pytest -s``."""

    def __init__(self, title: str):
        self.title = title
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.damage: Counter = Counter()
        self.distinct: set[int] = set()
        self.slowest = 0.0
        self.max_rss_mb = 0.0

    def add(self, bad: BadFile, outcome: str, seconds: float = 0.0, rss: float = 0.0) -> None:
        self.outcomes[bad.family][outcome] += 1
        self.damage[bad.damage] += 1
        self.distinct.add(hash(bad.data))
        self.slowest, self.max_rss_mb = max(self.slowest, seconds), max(self.max_rss_mb, rss)

    @property
    def files(self) -> int:
        return sum(sum(c.values()) for c in self.outcomes.values())

    def count(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.outcomes.values())

    def report(self) -> str:
        lines = [f"{self.title} ({PROFILE}): {self.files} files ({len(self.distinct)} distinct), "
                 f"{self.count('crash')} crashes, {self.count('other_error')} unexpected exceptions"]  # fmt: skip
        lines.append(f"  {'family':<22}{'files':>7}{'result':>8}{'refused':>9}{'crash':>7}{'other':>7}")
        for family, counts in sorted(self.outcomes.items()):
            lines.append(f"  {family:<22}{sum(counts.values()):>7}{counts['result']:>8}{counts['image_error']:>9}"
                         f"{counts['crash']:>7}{counts['other_error']:>7}")  # fmt: skip
        lines.append(f"  extra damage: {dict(self.damage)}")
        if self.slowest:
            lines.append(f"  slowest file {self.slowest:.2f} s, worker peak RSS {self.max_rss_mb:.0f} MB")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: bytes) -> Path:
    return write_bundle(tmp_path_factory.mktemp("fuzz") / "models" / "tiny", tiny_tflite)


@pytest.mark.slow
def test_core_survives_bad_files(fuzz_bundle: Path, tmp_path: Path) -> None:
    """Screener.screen_bytes on every bad file: a valid result or a one-sentence refusal; never a crash."""
    worker = FuzzWorker(fuzz_bundle, tmp_path)
    tally = Tally("core fuzz (Screener.screen_bytes in a child process)")
    problems: list[str] = []

    @FUZZ_SETTINGS
    @given(named())
    def screen(bad: BadFile) -> None:
        answer = worker.screen(bad)
        tally.add(bad, answer["outcome"], answer.get("seconds", 0.0), answer.get("max_rss_mb", 0.0))
        where = ""
        if answer["outcome"] in ("crash", "other_error"):
            where = f" (file saved as {save_for_reproduction(bad, tmp_path / 'crashes')})"
            problems.append(f"{bad!r}: {answer['outcome']}: {answer['message'][:300]}{where}")
        assert answer["outcome"] in ("result", "image_error"), f"{bad!r}: {answer}{where}"
        if answer["outcome"] == "result":
            assert_valid_result(answer, worker.classes)
        else:
            assert_sentence(answer["message"], bad.name)
        if bad.claimed_pixels > MAX_PIXELS:
            assert "too large to open safely" in answer.get("message", ""), f"{bad!r}: a bomb was opened: {answer}"
            assert answer["seconds"] < BOMB_SECONDS, f"{bad!r}: a bomb took {answer['seconds']:.2f} s to refuse"

    try:
        screen()
    finally:
        worker.stop()
        print("\n" + tally.report())
    assert not problems, problems
    assert tally.count("crash") == 0
    assert tally.files >= BUDGET["core"] * 0.95, f"only {tally.files} files reached the core"


@st.composite
def upload_batch(draw: st.DrawFn) -> list[BadFile]:
    """1-5 bad files with unique names, and two good smears among them."""
    bad = [draw(named(index)) for index in range(draw(st.integers(1, 5)))]
    seed = draw(st.integers(0, 10_000))
    good = [BadFile("good", f"good-{seed}-{i}.png", io_png(image)) for i, image in enumerate(smears(seed, 2))]
    return draw(st.permutations(bad + good))


def expected_refusal(bad: BadFile) -> str | None:
    """The core's own answer for this file, in this process: its sentence, or None when it decodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            open_image(bad.data, bad.name)
        except ImageError as error:
            return str(error)
    return None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on corrupt EXIF/TIFF tags: expected here
def test_upload_page_survives_bad_batches(fuzz_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page (AppTest): every bad file gets its own error line, the good ones a result, no exception."""
    import streamlit as streamlit_module
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(fuzz_bundle.parent))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
    streamlit_module.cache_resource.clear()  # the history is cached per process: use this test's folder
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=300).run()
    assert not app.exception
    tally = Tally("upload fuzz (the page, AppTest)")

    @settings(FUZZ_SETTINGS, max_examples=BUDGET["upload_batches"])
    @given(upload_batch())
    def upload(batch: list[BadFile]) -> None:
        app.file_uploader[0].set_value([(b.name, b.data, "application/octet-stream") for b in batch]).run()
        assert not app.exception, [e.value for e in app.exception]
        errors = file_errors(app)
        table = " ".join(m.value for m in app.markdown)
        for bad in batch:
            refusal = expected_refusal(bad)
            if bad.family == "good":
                assert refusal is None and f"| {bad.name} |" in table, f"{bad.name} has no result on the page"
                continue
            tally.add(bad, "result" if refusal is None else "image_error")
            if refusal is None:
                assert f"| {bad.name} |" in table, f"{bad!r} decodes but has no result on the page"
            else:
                assert errors.count(refusal) == 1, f"{bad!r}: expected its own line {refusal!r}, page: {errors}"
                assert_sentence(refusal, bad.name)
        assert len(errors) == sum(expected_refusal(b) is not None for b in batch), errors

    try:
        upload()
    finally:
        print("\n" + tally.report())
    # the session is still usable: good files afterwards get their results
    good = [(f"after-{i}.png", io_png(image), "image/png") for i, image in enumerate(smears(4242, 2))]
    app.file_uploader[0].set_value(good).run()
    assert not app.exception and not file_errors(app)
    assert all(f"| {name} |" in " ".join(m.value for m in app.markdown) for name, _, _ in good)


def file_errors(app) -> list[str]:
    """The page's per-file error lines (a malignant verdict banner is an st.error too, in bold)."""
    return [e.value for e in app.error if not e.value.startswith("**")]


def test_the_harness_sees_a_crash(tmp_path: Path) -> None:
    """A worker that dies (here: SIGSEGV on the first file) is reported as a crash, not as a pass."""
    segfault = ("import json, os, signal, sys; print(json.dumps({'ready': True, 'classes': []}), flush=True); "
                "sys.stdin.buffer.readline(); os.kill(os.getpid(), signal.SIGSEGV)")  # fmt: skip
    worker = FuzzWorker(tmp_path, tmp_path, command=[sys.executable, "-c", segfault])
    answer = worker.screen(BadFile("tiny_1x1", "x.png", b"\x89PNG"))
    worker.stop()
    assert answer["outcome"] == "crash" and "-11" in answer["message"], answer


def test_broken_exif_block_is_ignored_not_fatal() -> None:
    """Found by the fuzz: a cut EXIF block decoded once, then failed on the second pass (screen_image)."""
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00"  # the IFD offset is cut short
    buffer = BytesIO()
    smears(7, 1)[0].save(buffer, format="JPEG", exif=exif)
    image = open_image(buffer.getvalue(), "cut-exif.jpg")
    assert model_pixels(image, 48).shape == (48, 48, 3)


@pytest.mark.slow
def test_large_sixteen_bit_image_stays_within_memory(fuzz_bundle: Path, tmp_path: Path) -> None:
    """A 170 kB 16-bit PNG of 9400 x 9400 pixels (just under the bomb limit) once cost 2.4 GB to convert."""
    buffer = BytesIO()
    Image.fromarray(np.zeros((9400, 9400), dtype=np.uint16)).save(buffer, format="PNG")
    worker = FuzzWorker(fuzz_bundle, tmp_path)
    try:
        answer = worker.screen(BadFile("16_bit", "large-16bit.png", buffer.getvalue()))
    finally:
        worker.stop()
    print(f"\nlarge 16-bit PNG ({len(buffer.getvalue()) / 1e3:.0f} kB): {answer['outcome']} in "
          f"{answer.get('seconds', 0):.1f} s, worker peak RSS {answer.get('max_rss_mb', 0):.0f} MB")  # fmt: skip
    assert answer["outcome"] == "result", answer
    assert answer["max_rss_mb"] < LARGE_IMAGE_RSS_MB, answer
