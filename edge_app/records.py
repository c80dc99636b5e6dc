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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from edge_app.classify import Result

DISCLAIMER = (
    "SmearScope is a research screening aid, not a diagnostic device. Results must be reviewed by a "
    "qualified person and never replace a hematologist's reading or confirmatory tests."
)
CSV_FIELDS = (
    "time", "source", "image_sha256", "verdict", "outcome", "inconclusive", "class", "confidence", "p_malignant",
    "severity", "reasons", "model", "model_sha256", "review", "note",
)  # fmt: skip
# Left empty on a referred row: a referral is not a diagnosis (the model's raw scores stay in the history's data).
FINDING_FIELDS = ("class", "confidence", "p_malignant", "severity")
REVIEW_CHOICES = ("", "confirmed", "overridden: benign", "overridden: malignant", "overridden: not assessable")
# Early Pre-B, Pre-B and Pro-B are immunophenotypic categories (flow cytometry), not morphological ones: wherever
# a result names a malignant subtype (screen, report, FHIR, Model tab) this one sentence goes with it.
SUBTYPE_NOTE = (
    "The subtype is only a research suggestion, to be confirmed by flow cytometry; "
    "the screening result is the malignant-vs-benign call."
)


def has_subtypes(malignant: Iterable[bool]) -> bool:
    """Whether a model's classes (their ``malignant`` flags) split malignancy into subtypes: two or more."""
    return sum(bool(flag) for flag in malignant) > 1


def subtype_note(result: Result) -> str:
    """``SUBTYPE_NOTE`` where the result names a malignant subtype, else "": never on a benign result, nor on a
    referred one (a referral is not a diagnosis and names no class)."""
    named = result.malignant and not result.inconclusive
    return SUBTYPE_NOTE if named and has_subtypes(p.malignant for p in result.probabilities) else ""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def csv_row(result: Result, when: str, review: str = "", note: str = "") -> dict:
    """The one row shape of every export (CSV, history, batch command); finding fields empty when referred."""
    finding = result.finding
    return {
        "time": when,
        "source": result.source,
        "image_sha256": result.image_sha256,
        "verdict": result.verdict,
        "outcome": result.outcome,
        "inconclusive": result.inconclusive,
        "class": finding.label if finding else "",
        "confidence": f"{finding.confidence:.4f}" if finding else "",
        "p_malignant": f"{finding.p_malignant:.4f}" if finding else "",
        "severity": finding.severity if finding else "",
        "reasons": "; ".join(result.reasons),
        "model": result.model_name,
        "model_sha256": result.model_sha256,
        "review": review,
        "note": note,
    }


def results_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _thumbnail_data_uri(image: Image.Image, side: int = 320) -> str:
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _finding_html(result: Result) -> str:
    """The report's finding: class, description, malignancy, severity and every class's probability; for a
    referred image one sentence instead (a referral is not a diagnosis)."""
    e, finding = html.escape, result.finding
    if finding is None:
        return (
            "<p class='nofinding'>No class, subtype, severity or probability of malignancy is reported for a "
            "referred image: it needs a manual review.</p>"
        )
    bars = "".join(
        f"<tr><td>{e(p.display_name)}</td><td class='bar'><div style='width:{p.probability * 100:.1f}%'></div></td>"
        f"<td>{p.probability:.1%}</td></tr>"
        for p in result.probabilities
    )
    subtype = subtype_note(result)
    return f"""<p>Class: <b>{e(finding.display_label)}</b> ({finding.confidence:.1%});
probability of malignancy {finding.p_malignant:.1%}; severity
<span class="severity" style="background: {finding.severity_colour}">{finding.severity}
({e(finding.severity_word)})</span></p>
<p>{e(finding.description)}</p>
{"<p class='subtype'>" + e(subtype) + "</p>" if subtype else ""}
<table>{bars}</table>"""


def case_report_html(result: Result, image: Image.Image, when: str, model_version: str = "") -> str:
    """One self-contained printable page for a case."""
    e = html.escape
    reasons = "".join(f"<li>{e(r)}</li>" for r in result.reasons)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SmearScope report: {e(result.source)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 50em; }}
.verdict {{ font-size: 1.6em; font-weight: 600; }}
.refer {{ color: #6a1b9a; }} .malignant {{ color: #c62828; }} .benign {{ color: #2e7d32; }}
.severity {{ display: inline-block; padding: .2em .6em; border-radius: .3em; color: white; }}
table {{ border-collapse: collapse; }} td {{ padding: .25em .6em; }}
td.bar {{ width: 16em; }} td.bar div {{ background: #5c6bc0; height: .9em; }}
.disclaimer {{ border: 1px solid #999; padding: .8em; margin-top: 2em; font-size: .9em; }}
</style></head><body>
<h1>SmearScope screening report</h1>
<p><img src="{_thumbnail_data_uri(image)}" alt="the screened image"></p>
<p class="verdict {result.outcome}">{e(result.verdict)}</p>
{"<ul>" + reasons + "</ul>" if reasons else ""}
{_finding_html(result)}
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
    """Local history of results and reviews; every failure becomes ``self.warning``, never an exception.

    One row per screened image: the result, the image's sha256, the model's hash, and the
    technician's optional review (confirm/override) and note. The image itself is stored only
    when the user opts in (``keep_images``), as a file beside the database named by its sha256.
    """

    COLUMNS = (
        "time TEXT NOT NULL, source TEXT, image_sha256 TEXT, verdict TEXT, inconclusive INTEGER, class TEXT, "
        "confidence REAL, p_malignant REAL, severity INTEGER, reasons TEXT, model TEXT, model_sha256 TEXT, "
        "review TEXT DEFAULT '', note TEXT DEFAULT '', image_file TEXT, data TEXT, outcome TEXT"
    )

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "history.sqlite"
        self.images = self.path.parent / "images"
        self.warning: str | None = None
        self.available = False
        self.unsaved = 0  # results screened but not saved (full disk, folder turned read-only, ...)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, {self.COLUMNS})")
                if "outcome" not in {column["name"] for column in db.execute("PRAGMA table_info(results)")}:
                    db.execute("ALTER TABLE results ADD COLUMN outcome TEXT")  # a history from before outcomes
            self.available = True
        except (OSError, sqlite3.Error) as error:
            self.warning = f"History is off: {self.path} cannot be written ({error}). Results are still shown."

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection, one transaction: committed on success, rolled back on error, always closed."""
        connection = sqlite3.connect(self.path, timeout=10)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA synchronous=FULL")
            with connection:
                yield connection
        finally:
            connection.close()

    def _failed(self, what: str, error: Exception) -> None:
        self.warning = f"History could not {what} ({error}). Results are still shown."

    def add(self, result: Result, when: str, image_bytes: bytes | None = None) -> int | None:
        """Save one result in its own transaction; return its id, or None (and a warning) on failure."""
        if not self.available:
            return None
        row = csv_row(result, when)
        image_file = None
        try:
            if image_bytes is not None and result.image_sha256:
                self.images.mkdir(exist_ok=True)
                image_file = f"{result.image_sha256}{Path(result.source).suffix.lower()[:6]}"
                (self.images / image_file).write_bytes(image_bytes)
            with self._connect() as db:
                cursor = db.execute(
                    "INSERT INTO results (time, source, image_sha256, verdict, outcome, inconclusive, class, "
                    "confidence, p_malignant, severity, reasons, model, model_sha256, image_file, data) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (when, row["source"], result.image_sha256, row["verdict"], row["outcome"], int(result.inconclusive),
                     *_finding_columns(result), row["reasons"],
                     row["model"], row["model_sha256"], image_file, json.dumps(result.as_dict())),
                )  # fmt: skip
                return int(cursor.lastrowid)
        except (OSError, sqlite3.Error) as error:
            self.unsaved += 1
            if image_file:  # the row that would name it was not written
                with suppress(OSError):
                    (self.images / image_file).unlink(missing_ok=True)
            self.warning = (
                f"History could not save {result.source or 'the last result'} ({error}); {self.unsaved} "
                f"result{'s are' if self.unsaved > 1 else ' is'} not in the history. Results are still shown."
            )
            return None

    def review(self, result_id: int, review: str, note: str) -> bool:
        """Record the technician's confirm/override and note for a saved result."""
        if not self.available or review not in REVIEW_CHOICES:
            return False
        try:
            with self._connect() as db:
                db.execute("UPDATE results SET review = ?, note = ? WHERE id = ?", (review, note, result_id))
            return True
        except (OSError, sqlite3.Error) as error:
            self._failed("save the review", error)
            return False

    def recent(
        self, limit: int = 500, verdict: str = "", only_referred: bool = False, text: str = "", since: str = ""
    ) -> list[dict]:
        """Newest first, filtered by class/verdict, referral, a text in name or note, and a start date."""
        if not self.available:
            return []
        clauses, values = [], []
        if verdict:
            clauses.append("(class = ? OR verdict = ?)")
            values += [verdict, verdict]
        if only_referred:
            clauses.append("inconclusive = 1")
        if text:
            clauses.append("(source LIKE ? OR note LIKE ?)")
            values += [f"%{text}%", f"%{text}%"]
        if since:
            clauses.append("time >= ?")
            values.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query, parameters = f"SELECT * FROM results {where} ORDER BY id DESC LIMIT ?", (*values, limit)
        try:
            with self._connect() as db:
                return self._rows(db, query, parameters)
        except (OSError, sqlite3.Error) as error:
            try:
                return self._read_unwritable(query, parameters)
            except (OSError, sqlite3.Error):
                self._failed("be read", error)
                return []

    def _read_unwritable(self, query: str, parameters: tuple) -> list[dict]:
        """Read on a full or read-only disk, where SQLite cannot create the WAL's side files to open normally.

        Safe only when no write-ahead log is pending (absent or empty: the last connection folded it
        into the database file, as SQLite does on close): then the database file alone is complete.
        """
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise sqlite3.OperationalError("a write-ahead log is pending")
        connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            return self._rows(connection, query, parameters)
        finally:
            connection.close()

    @staticmethod
    def _rows(connection: sqlite3.Connection, query: str, parameters: tuple) -> list[dict]:
        """The query's rows as dicts of the id and the CSV fields (the one shape history rows leave in).

        Rows saved before referred results were kept free of findings are cleaned here, as they leave.
        """
        rows = []
        for r in connection.execute(query, parameters):
            row = {"id": r["id"], **{k: r[k] for k in CSV_FIELDS if k != "outcome"}}
            referred = bool(r["inconclusive"])
            row["inconclusive"] = referred  # as the session's CSV writes it
            if referred:
                row |= dict.fromkeys(FINDING_FIELDS, "")
            else:  # the precision the session's CSV gives
                row |= {key: f"{r[key]:.4f}" for key in ("confidence", "p_malignant") if r[key] is not None}
            row["outcome"] = r["outcome"] or ("refer" if referred else _saved_outcome(r["data"]))
            rows.append(row)
        return rows


def _finding_columns(result: Result) -> tuple:
    """The history's class, confidence, p_malignant and severity columns: NULL for a referred result."""
    finding = result.finding
    if finding is None:
        return (None,) * len(FINDING_FIELDS)
    return finding.label, finding.confidence, finding.p_malignant, finding.severity


def _saved_outcome(data: str | None) -> str:
    """The outcome of a row saved before the history had an outcome column, from its stored result."""
    try:
        return "malignant" if json.loads(data or "{}").get("malignant") else "benign"
    except ValueError:
        return ""
