"""What leaves the app: CSV rows, a printable per-case HTML report, and the local history.

All three are built from the same ``Result`` fields. The report is one self-contained HTML file
(the thumbnail embedded as base64, no external links), so it prints and archives offline.
The history is SQLite in WAL mode with one transaction per result: a crash or power cut loses at
most the result being written, and a read-only or full disk only disables history (a warning),
never classification.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from edge_app.classify import Result

DISCLAIMER = (
    "SmearScope is a research screening aid, not a diagnostic device. Results must be reviewed by a "
    "qualified person and never replace a hematologist's reading or confirmatory tests."
)
CSV_FIELDS = (
    "time", "source", "verdict", "inconclusive", "class", "confidence", "p_malignant", "severity",
    "reasons", "model", "model_sha256",
)  # fmt: skip


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def csv_row(result: Result, when: str) -> dict:
    return {
        "time": when,
        "source": result.source,
        "verdict": result.verdict,
        "inconclusive": result.inconclusive,
        "class": result.label,
        "confidence": f"{result.confidence:.4f}",
        "p_malignant": f"{result.p_malignant:.4f}",
        "severity": result.severity,
        "reasons": "; ".join(result.reasons),
        "model": result.model_name,
        "model_sha256": result.model_sha256,
    }


def results_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _thumbnail_data_uri(image: Image.Image, side: int = 320) -> str:
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def case_report_html(result: Result, image: Image.Image, when: str, model_version: str = "") -> str:
    """One self-contained printable page for a case."""
    e = html.escape
    bars = "".join(
        f"<tr><td>{e(p.display_name)}</td><td class='bar'><div style='width:{p.probability * 100:.1f}%'></div></td>"
        f"<td>{p.probability:.1%}</td></tr>"
        for p in result.probabilities
    )
    reasons = "".join(f"<li>{e(r)}</li>" for r in result.reasons)
    verdict_class = "refer" if result.inconclusive else ("malignant" if result.malignant else "benign")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SmearScope report: {e(result.source)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 50em; }}
.verdict {{ font-size: 1.6em; font-weight: 600; }}
.refer {{ color: #6a1b9a; }} .malignant {{ color: #c62828; }} .benign {{ color: #2e7d32; }}
.severity {{ display: inline-block; padding: .2em .6em; border-radius: .3em; color: white;
  background: {result.severity_colour}; }}
table {{ border-collapse: collapse; }} td {{ padding: .25em .6em; }}
td.bar {{ width: 16em; }} td.bar div {{ background: #5c6bc0; height: .9em; }}
.disclaimer {{ border: 1px solid #999; padding: .8em; margin-top: 2em; font-size: .9em; }}
</style></head><body>
<h1>SmearScope screening report</h1>
<p><img src="{_thumbnail_data_uri(image)}" alt="the screened image"></p>
<p class="verdict {verdict_class}">{e(result.verdict)}</p>
{"<ul>" + reasons + "</ul>" if reasons else ""}
<p>Model's top class: <b>{e(result.display_label)}</b> ({result.confidence:.1%});
probability of malignancy {result.p_malignant:.1%};
severity <span class="severity">{result.severity} ({e(result.severity_word)})</span></p>
<p>{e(result.description)}</p>
<table>{bars}</table>
<p>Image: {e(result.source)}<br>Time (UTC): {e(when)}<br>
Model: {e(result.model_name)} {e(model_version)}<br>Model sha256: <code>{e(result.model_sha256)}</code></p>
<p class="disclaimer">{e(DISCLAIMER)}</p>
</body></html>
"""


def data_dir() -> Path:
    """Where the history lives: $SMEARSCOPE_DATA, else the platform's per-user data folder."""
    if os.environ.get("SMEARSCOPE_DATA"):
        return Path(os.environ["SMEARSCOPE_DATA"])
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "SmearScope"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "smearscope"


class History:
    """Append-only local history of results; every failure becomes ``self.warning``, never an exception."""

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "history.sqlite"
        self.warning: str | None = None
        self.available = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, "
                    "source TEXT, verdict TEXT, inconclusive INTEGER, class TEXT, confidence REAL, "
                    "p_malignant REAL, severity INTEGER, reasons TEXT, model TEXT, model_sha256 TEXT, data TEXT)"
                )
            self.available = True
        except (OSError, sqlite3.Error) as error:
            self.warning = f"History is off: {self.path} cannot be written ({error}). Results are still shown."

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction: committed on success, rolled back on error, always closed."""
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            connection.execute("PRAGMA synchronous=FULL")
            with connection:
                yield connection
        finally:
            connection.close()

    def add(self, result: Result, when: str) -> bool:
        if not self.available:
            return False
        row = csv_row(result, when)
        try:
            with self._connect() as db:  # one transaction per result
                db.execute(
                    "INSERT INTO results (time, source, verdict, inconclusive, class, confidence, p_malignant, "
                    "severity, reasons, model, model_sha256, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (when, row["source"], row["verdict"], int(result.inconclusive), row["class"], result.confidence,
                     result.p_malignant, result.severity, row["reasons"], row["model"], row["model_sha256"],
                     json.dumps(result.as_dict())),
                )  # fmt: skip
            return True
        except (OSError, sqlite3.Error) as error:
            self.warning = f"History could not save the last result ({error}). Results are still shown."
            return False

    def recent(self, limit: int = 200) -> list[dict]:
        if not self.available:
            return []
        try:
            with self._connect() as db:
                db.row_factory = sqlite3.Row
                rows = db.execute("SELECT * FROM results ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        except (OSError, sqlite3.Error):
            return []
        return [{k: row[k] for k in CSV_FIELDS if k != "class"} | {"class": row["class"]} for row in rows]
