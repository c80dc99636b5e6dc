"""The history survives what a lab computer does to it: a killed process, a full disk, a read-only folder.

- SIGKILL in the middle of a batch (tests/history_worker.py in a child process): every result the
  child reported as committed is in the database with every field intact, the one in flight is
  either wholly there or wholly absent, ``PRAGMA integrity_check`` says ok, and the history opens
  and takes new results afterwards. Once with the kill landing inside an open transaction
  (deterministic), and in rounds at arbitrary moments of a running batch.
- A full disk (a real tmpfs filled up, as root; and SQLite's own SQLITE_FULL through
  ``max_page_count`` everywhere) and a folder that turns read-only after the history was opened:
  History.add returns None with a warning, classification still works, earlier results are kept,
  and the page shows the warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.records import History, now
from edge_app.screening import Screener
from tests.factories import PROJECT_ROOT, io_png, smears, write_bundle

KILL_ROUNDS = (3, 11, 26, 40)  # results reported before each free-running kill
FIELDS = ("source", "image_sha256", "verdict", "class", "confidence", "p_malignant", "severity", "model_sha256")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: bytes) -> Path:
    return write_bundle(tmp_path_factory.mktemp("durability") / "models" / "tiny", tiny_tflite)


class Child:
    """tests/history_worker.py screening a batch into ``db``; reads its committed-row reports."""

    def __init__(self, bundle: Path, db: Path, count: int, seed: int, stall_at: int | None = None):
        args = [str(bundle), str(db), str(count), str(seed), *([str(stall_at)] if stall_at else [])]
        self.process = subprocess.Popen([sys.executable, "-m", "tests.history_worker", *args], cwd=PROJECT_ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.committed: list[dict] = []
        ready = self.next_line()
        assert ready.get("ready"), ready

    def next_line(self) -> dict:
        assert self.process.stdout
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the child exited early: {self.process.wait()} {self.process.stderr.read()[-2000:]}")
        return json.loads(line)

    def read_until(self, rows: int) -> dict | None:
        """Collect committed rows until ``rows`` are reported, or until the child stalls (returns that line)."""
        while len(self.committed) < rows:
            line = self.next_line()
            if "stalled" in line:
                return line
            assert line["id"] is not None, line
            self.committed.append(line)
        return None

    def kill(self) -> None:
        """SIGKILL, then collect the reports the child wrote before it died (each one was committed)."""
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL
        assert self.process.stdout
        for line in self.process.stdout:
            if line.endswith("\n"):  # a report cut by the kill is not a report
                self.committed.append(json.loads(line))
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


def rows_of(db: Path) -> dict[int, sqlite3.Row]:
    """Open the database as the app would after a crash; integrity first."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.row_factory = sqlite3.Row
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return {row["id"]: row for row in connection.execute("SELECT * FROM results")}


def assert_intact(row: sqlite3.Row, reported: dict) -> None:
    """Every field of the saved row is what the child had when it committed it."""
    result = reported["result"]
    saved = json.loads(row["data"])
    assert saved == result, f"row {row['id']}: stored JSON differs from the committed result"
    finding = {"class": result["label"], "confidence": result["confidence"], "p_malignant": result["p_malignant"],
               "severity": result["severity"]}  # fmt: skip
    if result["inconclusive"]:  # a referral is not a diagnosis: no class, confidence, malignancy or severity saved
        finding = dict.fromkeys(finding)
    expected = {"source": result["source"], "image_sha256": result["image_sha256"], "verdict": result["verdict"],
                **finding, "model_sha256": result["model_sha256"]}  # fmt: skip
    assert {k: row[k] for k in FIELDS} == expected, f"row {row['id']} is not intact"
    assert row["time"] == reported["time"] and row["inconclusive"] == int(result["inconclusive"])


def assert_whole(row: sqlite3.Row) -> None:
    """A row nobody reported (committed just before the kill): complete and self-consistent."""
    saved = json.loads(row["data"])
    assert row["source"] == saved["source"] and row["image_sha256"] == saved["image_sha256"]
    if saved["inconclusive"]:
        assert row["class"] is None and row["confidence"] is None and row["severity"] is None
    else:
        assert row["class"] == saved["label"] and row["confidence"] == saved["confidence"]
        assert all(row[k] is not None for k in FIELDS)


@pytest.mark.slow
def test_sigkill_inside_a_transaction_loses_nothing_committed(bundle: Path, tmp_path: Path) -> None:
    db = tmp_path / "data" / "history.sqlite"
    child = Child(bundle, db, count=50, seed=1000, stall_at=13)
    stalled = child.read_until(50)
    assert stalled and stalled["in_transaction"], stalled  # the 13th insert ran; its transaction is open
    child.kill()
    rows = rows_of(db)
    print(f"\nSIGKILL inside the transaction of result 13: {len(child.committed)} committed and reported, "
          f"{len(rows)} in the database, {len(child.committed) - len(set(rows) & {r['id'] for r in child.committed})} "
          "lost")  # fmt: skip
    assert sorted(rows) == [r["id"] for r in child.committed]  # all 12 committed ones; the 13th wholly absent
    for reported in child.committed:
        assert_intact(rows[reported["id"]], reported)
    assert_usable_afterwards(db, bundle)


@pytest.mark.slow
def test_sigkill_mid_batch_loses_no_committed_result(bundle: Path, tmp_path: Path) -> None:
    """Rounds of a running batch killed at arbitrary moments, all into one database."""
    db = tmp_path / "data" / "history.sqlite"
    jitter = random.Random(7)
    reported: dict[int, dict] = {}
    unreported_rows = 0
    for round_index, rows_before_kill in enumerate(KILL_ROUNDS):
        child = Child(bundle, db, count=500, seed=2000 + 1000 * round_index)
        child.read_until(rows_before_kill)
        # let the child run on for a moment, so the kill lands anywhere in screening or writing
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=jitter.uniform(0.0, 0.05))
        child.kill()
        reported |= {r["id"]: r for r in child.committed}
        rows = rows_of(db)
        missing = set(reported) - set(rows)
        assert not missing, f"round {round_index}: committed results lost: {sorted(missing)}"
        for row_id, row in rows.items():
            if row_id in reported:
                assert_intact(row, reported[row_id])
            else:
                assert_whole(row)
        unreported_rows = len(rows) - len(reported)
        assert unreported_rows <= round_index + 1  # at most the one in flight per kill
    print(f"\nSIGKILL mid-batch, {len(KILL_ROUNDS)} rounds: {len(reported)} results reported as committed, "
          f"0 lost, {unreported_rows} more committed just before a kill (whole)")  # fmt: skip
    assert_usable_afterwards(db, bundle)


def assert_usable_afterwards(db: Path, bundle: Path) -> None:
    history = History(db)
    assert history.available and history.warning is None
    before = len(history.recent(limit=10_000))
    result = Screener(bundle).screen_bytes(io_png(smears(77, 1)[0]), "after-crash.png")
    assert history.add(result, now()) is not None
    assert len(history.recent(limit=10_000)) == before + 1


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (root only); skips with the reason where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill it needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write until the filesystem says ENOSPC (unbuffered, so closing has nothing left to write)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


def saved_sources(history: History) -> list[str]:
    return [r["source"] for r in history.recent(limit=10_000)][::-1]


def test_full_disk_only_warns(bundle: Path, tmp_path: Path) -> None:
    screener = Screener(bundle)
    results = [screener.screen_bytes(io_png(image), f"full-{i}.png") for i, image in enumerate(smears(300, 4))]
    with tmpfs(tmp_path / "small", "512k") as folder:
        history = History(folder / "history.sqlite")
        assert history.add(results[0], now()) and history.add(results[1], now())
        filler = fill(folder)
        assert history.add(results[2], now(), image_bytes=io_png(smears(300, 1)[0])) is None
        assert history.warning and "History could not save full-2.png" in history.warning, history.warning
        assert "No space left on device" in history.warning or "database or disk is full" in history.warning
        print(f"\nfull disk: {history.warning}")
        # classification is unaffected
        assert screener.screen_bytes(io_png(smears(301, 1)[0]), "still.png").probabilities
        assert saved_sources(history) == ["full-0.png", "full-1.png"]
        assert not list((folder / "images").glob("*"))  # no orphan image from the failed save
        filler.unlink()  # space again: history resumes
        assert history.add(results[3], now()) is not None
        assert saved_sources(history) == ["full-0.png", "full-1.png", "full-3.png"]
        assert rows_of(folder / "history.sqlite")


def test_sqlite_full_only_warns(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_FULL from SQLite itself (max_page_count), through History's own connections; needs no root."""
    screener = Screener(bundle)
    history = History(tmp_path / "history.sqlite")
    first = screener.screen_bytes(io_png(smears(310, 1)[0]), "first.png")
    assert history.add(first, now())
    with contextlib.closing(sqlite3.connect(history.path)) as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    real_connect = sqlite3.connect

    def capped(*args, **kwargs) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", capped)
    big = screener.screen_bytes(io_png(smears(311, 1)[0]), "big.png")
    big.reasons = ["x" * 20_000]  # needs new pages
    assert history.add(big, now()) is None
    assert history.warning and "database or disk is full" in history.warning
    print(f"\nSQLITE_FULL: {history.warning}")
    monkeypatch.undo()
    assert saved_sources(history) == ["first.png"]


def test_folder_turning_read_only_keeps_earlier_results(bundle: Path, tmp_path: Path) -> None:
    screener = Screener(bundle)
    results = [screener.screen_bytes(io_png(image), f"ro-{i}.png") for i, image in enumerate(smears(400, 3))]
    with tmpfs(tmp_path / "ro", "4m") as folder:
        history = History(folder / "history.sqlite")
        assert history.add(results[0], now()) and history.add(results[1], now())
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        try:
            assert history.add(results[2], now()) is None
            assert history.warning and "History could not save ro-2.png" in history.warning
            print(f"\nread-only: {history.warning}")
            assert screener.screen_bytes(io_png(smears(401, 1)[0]), "still.png").probabilities
            assert saved_sources(history) == ["ro-0.png", "ro-1.png"]  # still listed while read-only
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        assert saved_sources(history) == ["ro-0.png", "ro-1.png"]
        assert rows_of(folder / "history.sqlite")


def test_page_shows_the_history_warning_and_still_screens(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page on a full data folder: the result is shown, and so is the warning."""
    import streamlit as streamlit_module
    from streamlit.testing.v1 import AppTest

    with tmpfs(tmp_path / "appdata", "512k") as folder:
        monkeypatch.setenv("SMEARSCOPE_MODELS", str(bundle.parent))
        monkeypatch.setenv("SMEARSCOPE_DATA", str(folder))
        monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
        streamlit_module.cache_resource.clear()  # the history is cached per process: use this folder
        app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
        assert not app.exception and not app.warning  # the history opened fine
        fill(folder)
        files = [(f"page-{i}.png", io_png(image), "image/png") for i, image in enumerate(smears(500, 2))]
        app.file_uploader[0].set_value(files).run()
        assert not app.exception
        assert any("| page-0.png |" in m.value for m in app.markdown) and any(
            "| page-1.png |" in m.value for m in app.markdown
        )
        warnings = [w.value for w in app.warning if "History could not save" in w.value]
        assert warnings and "2 results are not in the history" in warnings[0], [w.value for w in app.warning]
        streamlit_module.cache_resource.clear()
