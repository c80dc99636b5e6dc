"""What leaves the app: CSV rows, the printable case report, and the local history of cases.

All of them are built from the same ``Result`` fields, and a referred result shows no finding in any of them
(``Result.finding``). The report is one self-contained HTML page (thumbnails and heatmaps embedded as base64,
no external links), so it prints, saves as PDF and archives offline. The CSV has one writer
(``results_csv`` over ``case_rows``) for the session and the history, so both format alike.

The history is SQLite in WAL mode: a ``cases`` table (one row per sample) and a ``results`` table (one row
per screened field, linked to its case; an image is stored once per case, whatever the mode or browser
session). One transaction per result: a crash or power cut loses at most the result being written, and a
read-only or full disk only disables history (a warning), never screening. A history from before cases
migrates when opened: its results keep every column and are listed as "Unassigned (saved before cases)".
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from edge_app.cases import (
    Case,
    CaseInfo,
    Field,
    has_subtypes,
    local_time,
    local_zone,
    propose_sample_id,
    rule_sentence,
    shown_time,
)
from edge_app.classify import SEVERITY_COLOURS, SEVERITY_WORDS, ClassProbability, Result

__all__ = ["has_subtypes"]  # re-exported: the Model tab and older callers import it from here

DISCLAIMER = (
    "SmearScope is a research screening aid, not a diagnostic device. Results must be reviewed by a "
    "qualified person and never replace a hematologist's reading or confirmatory tests."
)
# One field's columns (also the batch command's, after its own ``case`` column: edge_app/screen.py).
CSV_FIELDS = (
    "time", "source", "image_sha256", "verdict", "outcome", "inconclusive", "class", "confidence", "p_malignant",
    "severity", "reasons", "model", "model_sha256", "review", "note",
)  # fmt: skip
# The app's CSV (session and history): the case's identifiers and verdict, the local time, then a field's columns.
EXPORT_FIELDS = ("sample_id", "patient_ref", "operator", "case_verdict", "local_time", *CSV_FIELDS)
# Left empty on a referred row: a referral is not a diagnosis (the model's raw scores stay in the history's data).
FINDING_FIELDS = ("class", "confidence", "p_malignant", "severity")
REVIEW_CHOICES = ("", "confirmed", "overridden: benign", "overridden: malignant", "overridden: not assessable")
# Early Pre-B, Pre-B and Pro-B are immunophenotypic categories (flow cytometry), not morphological ones: wherever
# a result names a malignant subtype (screen, report, FHIR, Model tab) this one sentence goes with it.
SUBTYPE_NOTE = (
    "The subtype is only a research suggestion, to be confirmed by flow cytometry; "
    "the screening result is the malignant-vs-benign call."
)
PREFERENCES_FILE = "preferences.json"  # in data_dir(): what the page remembers (the operator's name)


def subtype_note(result: Result) -> str:
    """``SUBTYPE_NOTE`` where the result names a malignant subtype, else "": never on a benign result, nor on a
    referred one (a referral is not a diagnosis and names no class)."""
    named = result.malignant and not result.inconclusive
    return SUBTYPE_NOTE if named and has_subtypes(p.malignant for p in result.probabilities) else ""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- CSV


def csv_row(result: Result, when: str, review: str = "", note: str = "") -> dict:
    """One field's row (CSV_FIELDS); finding fields empty when referred. The batch command writes these too."""
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


def case_rows(case: Case, fields: Sequence[Field] | None = None) -> list[dict]:
    """The app's export rows (EXPORT_FIELDS) of a case's fields (default: all), for the page, CSV and history."""
    info = case.info
    verdict = "" if info.unassigned else case.verdict.text
    return [
        {
            "sample_id": info.sample_id,
            "patient_ref": info.patient_ref,
            "operator": info.operator,
            "case_verdict": verdict,
            "local_time": _local_iso(f.when, None if info.unassigned else info),
            **csv_row(f.result, f.when, f.review, f.note),
            "id": f.history_id,
        }
        for f in (case.fields if fields is None else fields)
    ]


def _local_iso(when: str, info: CaseInfo | None) -> str:
    """A stored UTC time as local ISO 8601 with its offset; as stored when it cannot be read."""
    try:
        return local_time(when, info).isoformat(timespec="seconds")
    except ValueError:
        return when


def results_csv(rows: Iterable[dict], fields: Sequence[str] = EXPORT_FIELDS) -> str:
    """The one CSV writer (the session's and the history's downloads): "\\n" line ends, unknown keys ignored."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- the printable case report


def image_data_uri(image: Image.Image, side: int | None = None) -> str:
    """A JPEG data: URI of the image (shrunk to ``side`` px first when given), for a self-contained page."""
    picture = image.convert("RGB")
    if side is not None and max(picture.size) > side:
        picture = picture.copy()
        picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _finding_html(result: Result) -> str:
    """A field's finding: class, description, malignancy, severity and every class's probability; for a
    referred field one sentence instead (a referral is not a diagnosis)."""
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
{"<p>" + e(finding.description) + "</p>" if finding.description else ""}
{"<p class='subtype'>" + e(subtype) + "</p>" if subtype else ""}
<table>{bars}</table>"""


def _field_html(number: int, item: Field, info: CaseInfo, heatmap: Image.Image | None) -> str:
    e, result = html.escape, item.result
    picture = (
        f"<img src='{image_data_uri(item.thumbnail, 320)}' alt='field {number}'>"
        if item.thumbnail is not None
        else "<p class='noimage'>(image not kept)</p>"
    )
    if heatmap is not None:
        picture += (
            f"<figure><img src='{image_data_uri(heatmap, 320)}' alt='heatmap of field {number}'><figcaption>"
            "Occlusion heatmap (the square the model sees): bright = hiding this region weakens the result most"
            "</figcaption></figure>"
        )
    reasons = "".join(f"<li>{e(r)}</li>" for r in result.reasons)
    warnings = "".join(f"<p class='warning'>{e(w)}</p>" for w in result.warnings)
    review = e(item.review) if item.review else "not reviewed"
    note = f" &middot; note: {e(item.note)}" if item.note else ""
    also = f" (also added as {e(', '.join(item.also_named))})" if item.also_named else ""
    elsewhere = (
        f"<p class='warning'>This image is also in case {e(', '.join(item.in_other_cases))}.</p>"
        if item.in_other_cases
        else ""
    )
    return f"""<section class="field">
<div class="pictures">{picture}</div>
<div class="text">
<h3>Field {number}: {e(result.source)}{also}</h3>
<p class="verdict {result.outcome}">{e(result.verdict)}</p>
{"<ul>" + reasons + "</ul>" if reasons else ""}
{_finding_html(result)}
{warnings}{elsewhere}
<p class="small">Screened {e(shown_time(item.when, info, seconds=True))} &middot; image sha256
<code>{e(result.image_sha256)}</code></p>
<p class="review">Technician review: <b>{review}</b>{note}</p>
</div>
</section>"""


REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 56em; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.4em; break-after: avoid; } h3 { margin: 0 0 .3em 0; font-size: 1.05em; }
table { border-collapse: collapse; } td, th { padding: .25em .6em; text-align: left; vertical-align: top; }
table.ids th { color: #555; font-weight: normal; }
.case-verdict { font-size: 1.5em; font-weight: 600; margin: .6em 0 .2em 0; }
.verdict { font-size: 1.15em; font-weight: 600; margin: .2em 0; }
.refer { color: #6a1b9a; } .malignant, .suspected { color: #c62828; } .benign, .negative { color: #2e7d32; }
.severity { display: inline-block; padding: .1em .5em; border-radius: .3em; color: white; }
td.bar { width: 12em; } td.bar div { background: #5c6bc0; height: .8em; }
section.field { display: flex; gap: 1.2em; border-top: 1px solid #ccc; padding: .8em 0; break-inside: avoid; }
.pictures img { max-width: 14em; display: block; margin-bottom: .4em; }
figure { margin: 0; } figcaption { font-size: .75em; color: #555; max-width: 18em; }
.small, .noimage { font-size: .8em; color: #555; } code { font-size: .85em; word-break: break-all; }
.warning { color: #8a4b00; font-weight: 600; }
.sign { margin-top: 2.5em; line-height: 2.6em; break-inside: avoid; }
.disclaimer { border: 1px solid #999; padding: .8em; margin-top: 2em; font-size: .9em; }
.screen-only { background: #eef; padding: .5em .8em; }
@media print { .screen-only { display: none; } body { margin: 0; } }
@page { margin: 1.5cm; }
"""


def summary_sentences(case: Case, findings: bool = True) -> list[str]:
    """The case summary in a few plain sentences (the report's; the page shows the same figures). Without
    ``findings``, only the counts: no class and no figure (for the conclusion of an inconclusive case)."""
    summary = case.summary
    lines = [f"Fields screened: {summary.screened}; referred: {summary.referred}; assessed: {summary.assessed}."]
    if summary.per_class and findings:
        lines.append("Assessed fields per class: " + ", ".join(f"{n} {c}" for c, n in summary.per_class) + ".")
    if summary.max_p_malignant is not None and summary.mean_p_malignant is not None and findings:
        lines.append(
            f"Probability of malignancy over assessed fields: highest {summary.max_p_malignant:.1%}, mean "
            f"{summary.mean_p_malignant:.1%}."
        )
    lines.append(f"Technician review: {summary.reviewed} of {summary.screened} fields reviewed"
                 f" ({summary.overridden} overridden).")  # fmt: skip
    return lines


def case_report_html(
    case: Case,
    heatmaps: Mapping[str, Image.Image] | None = None,
    model_versions: Mapping[tuple[str, str], str] | None = None,
    printed: str | None = None,
) -> str:
    """One self-contained printable page for a case: identifiers, verdict, summary, every field, signature line.

    ``heatmaps`` maps a field's key to its heatmap overlay (the page computes those of malignant fields);
    ``model_versions`` maps a model's (name, sha256) to its version (the bundle card's creation time).
    """
    e, info, verdict = html.escape, case.info, case.verdict
    heatmaps, model_versions = heatmaps or {}, model_versions or {}
    status = f"closed {shown_time(info.closed_utc, info)}" if info.closed_utc else "open"
    identifiers = [
        ("Sample ID", info.sample_id),
        ("Patient reference", info.patient_ref or "(none given)"),
        ("Operator", info.operator or "(not given)"),
        ("Opened", shown_time(info.opened_utc, info) if info.opened_utc else "(no field saved)"),
        ("Case", status),
        ("Report printed", shown_time(printed or now(), info)),
    ]
    rows = "".join(f"<tr><th>{e(name)}</th><td>{e(value)}</td></tr>" for name, value in identifiers)
    subtype = f"<p class='subtype'>{e(SUBTYPE_NOTE)}</p>" if verdict.subtype else ""
    summary = "".join(f"<p>{e(line)}</p>" for line in summary_sentences(case))
    fields = "\n".join(
        _field_html(number, item, info, heatmaps.get(item.key)) for number, item in enumerate(case.fields, 1)
    )
    models = {(f.result.model_name, f.result.model_sha256) for f in case.fields}
    model_lines = "".join(
        f"<li>{e(name)} {e(model_versions.get((name, sha), ''))} &middot; sha256 <code>{e(sha)}</code></li>"
        for name, sha in sorted(models)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SmearScope case report: {e(info.sample_id)}</title>
<style>{REPORT_STYLE}</style></head><body>
<p class="screen-only">To keep it as a PDF: print this page (Ctrl+P) and choose "Save as PDF".</p>
<h1>SmearScope case report</h1>
<table class="ids">{rows}</table>
<p class="case-verdict {verdict.outcome}">Case verdict: {e(verdict.text)}</p>
<p>{e(verdict.reason)}</p>
{subtype}
<h2>Summary</h2>
{summary}
<p class="small">{e(rule_sentence())}</p>
<h2>Fields</h2>
{fields}
<div class="sign">
<p>Reviewed by (name): ____________________________ &nbsp; Signature: ____________________________</p>
<p>Date and time: ____________________________</p>
</div>
<h2>Model</h2>
<ul>{model_lines}</ul>
<p class="disclaimer">{e(DISCLAIMER)}</p>
</body></html>
"""


# ---------------------------------------------------------------- where the data lives


def data_dir() -> Path:
    """Where the history lives: $SMEARSCOPE_DATA, else the platform's per-user data folder."""
    if os.environ.get("SMEARSCOPE_DATA"):
        return Path(os.environ["SMEARSCOPE_DATA"])
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "SmearScope"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "smearscope"


def load_preferences(folder: Path | None = None) -> dict:
    """What the page remembers between starts (the operator's name); {} when there is nothing readable."""
    try:
        data = json.loads(((folder or data_dir()) / PREFERENCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_preferences(changes: dict, folder: Path | None = None) -> bool:
    """Merge ``changes`` into the preferences file (written whole, then renamed); False when it cannot be."""
    folder = folder or data_dir()
    path = folder / PREFERENCES_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".json.tmp")
        staged.write_text(json.dumps(load_preferences(folder) | changes, indent=1), encoding="utf-8")
        staged.replace(path)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- results read back


def result_from_data(data: dict) -> Result:
    """A ``Result`` from its stored ``as_dict()`` (keys a newer version added are left out, missing ones take
    their defaults); TypeError or ValueError when a required field is missing."""
    names = {f.name for f in dataclass_fields(Result)}
    values = {key: value for key, value in data.items() if key in names}
    values["probabilities"] = [ClassProbability(**p) for p in values.get("probabilities", [])]
    return Result(**values)


def _result_from_columns(row: Mapping) -> Result:
    """A ``Result`` from a history row's columns alone (a row whose stored JSON is missing or unreadable)."""
    referred = bool(row["inconclusive"])
    outcome = row["outcome"] or ("refer" if referred else _saved_outcome(row["data"]))
    severity = int(row["severity"] or 0)
    return Result(
        source=row["source"] or "",
        label=row["class"] or "",
        display_label="" if referred else row["verdict"] or row["class"] or "",
        confidence=float(row["confidence"] or 0.0),
        probabilities=[],
        p_malignant=float(row["p_malignant"] or 0.0),
        malignant=outcome == "malignant",
        severity=severity,
        severity_word=SEVERITY_WORDS.get(severity, str(severity)),
        severity_colour=SEVERITY_COLOURS.get(severity, "#555555"),
        description="",
        inconclusive=referred,
        reasons=[r for r in (row["reasons"] or "").split("; ") if r],
        model_name=row["model"] or "",
        model_sha256=row["model_sha256"] or "",
        image_sha256=row["image_sha256"] or "",
    )


def _field_of(row: Mapping, whole: bool = True) -> Field:
    """A saved result as a case's field (no thumbnail: the history keeps images only when asked to). ``whole``
    reads the stored result (every class's probability); otherwise its columns suffice (lists, CSV, review)."""
    try:
        result = result_from_data(json.loads(row["data"] or "")) if whole else _result_from_columns(row)
    except (TypeError, ValueError, KeyError):
        result = _result_from_columns(row)
    return Field(
        key=f"history-{row['id']}",
        result=result,
        when=row["time"],
        history_id=int(row["id"]),
        review=row["review"] or "",
        note=row["note"] or "",
        image_file=row["image_file"] or None,
    )


def _info_of(row: Mapping) -> CaseInfo:
    return CaseInfo(
        sample_id=row["sample_id"],
        patient_ref=row["patient_ref"] or "",
        operator=row["operator"] or "",
        opened_utc=row["opened_utc"] or "",
        tz_name=row["tz_name"] or "",
        tz_offset=row["tz_offset"] or "",
        closed_utc=row["closed_utc"] or "",
        case_id=int(row["id"]),
    )


class Opened(NamedTuple):
    """What ``History.open_case`` did: the case's id, and a sentence for the page when it was not plain."""

    case_id: int | None
    joined: bool  # an open case already had this sample ID: the fields go into it
    message: str


class History:
    """Local history of cases, their results and reviews; every failure becomes ``self.warning``, never an exception.

    One row per screened field: the result, the image's sha256, the model's hash, its case and the
    technician's optional review (confirm/override) and note. The image itself is stored only when the
    user opts in (``keep_images``), as a file beside the database named by its sha256.
    """

    SCHEMA_VERSION = 2  # 1: results only (before cases); 2: cases, results.case_id, one image per case
    COLUMNS = (
        "time TEXT NOT NULL, source TEXT, image_sha256 TEXT, verdict TEXT, inconclusive INTEGER, class TEXT, "
        "confidence REAL, p_malignant REAL, severity INTEGER, reasons TEXT, model TEXT, model_sha256 TEXT, "
        "review TEXT DEFAULT '', note TEXT DEFAULT '', image_file TEXT, data TEXT, outcome TEXT, "
        "case_id INTEGER REFERENCES cases(id)"
    )
    CASE_COLUMNS = (
        "sample_id TEXT NOT NULL, patient_ref TEXT NOT NULL DEFAULT '', operator TEXT NOT NULL DEFAULT '', "
        "opened_utc TEXT NOT NULL, tz_name TEXT NOT NULL DEFAULT '', tz_offset TEXT NOT NULL DEFAULT '', "
        "closed_utc TEXT"
    )
    MIGRATIONS = (  # columns added since the first version; each ADDed when an older history lacks it
        ("outcome", "outcome TEXT"),
        ("case_id", "case_id INTEGER REFERENCES cases(id)"),
    )
    INDEXES = (
        # a sample ID names one open case (a closed one may be examined again later under the same ID)
        "CREATE UNIQUE INDEX IF NOT EXISTS cases_open_sample ON cases(sample_id) WHERE closed_utc IS NULL",
        # an image is stored once per case, whatever the mode or browser session; results from before cases
        # (no case) are left as they were, repeats included
        "CREATE UNIQUE INDEX IF NOT EXISTS results_case_image ON results(case_id, image_sha256) "
        "WHERE case_id IS NOT NULL AND image_sha256 IS NOT NULL AND image_sha256 != ''",
        "CREATE INDEX IF NOT EXISTS results_case ON results(case_id)",
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
                self._migrate(db)
            self.available = True
        except (OSError, sqlite3.Error) as error:
            self.warning = f"History is off: {self.path} cannot be written ({error}). Results are still shown."

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create or upgrade the schema in one transaction: a history from any earlier version keeps every row."""
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"CREATE TABLE IF NOT EXISTS cases (id INTEGER PRIMARY KEY AUTOINCREMENT, {self.CASE_COLUMNS})")
        db.execute(f"CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, {self.COLUMNS})")
        present = {column["name"] for column in db.execute("PRAGMA table_info(results)")}
        for name, definition in self.MIGRATIONS:
            if name not in present:
                db.execute(f"ALTER TABLE results ADD COLUMN {definition}")
        for index in self.INDEXES:
            db.execute(index)
        if db.execute("PRAGMA user_version").fetchone()[0] < self.SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

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

    # ------------------------------------------------------------ writing

    def open_case(self, info: CaseInfo) -> Opened:
        """Save a new case (its first field is being added); sets ``info.case_id`` and its opening time.

        An open case with the same sample ID is that sample's case: the technician typed the accession number
        again, so the fields go into it (``joined``). A sample ID the page proposed, taken meanwhile by another
        browser session, is replaced by the next free one instead.
        """
        if not self.available:
            return Opened(None, False, "")
        when = info.opened_utc or now()
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                message = ""
                existing = db.execute("SELECT * FROM cases WHERE sample_id = ? AND closed_utc IS NULL",
                                      (info.sample_id,)).fetchone()  # fmt: skip
                if existing is not None and info.proposed:
                    taken = [r[0] for r in db.execute("SELECT sample_id FROM cases")]
                    day = local_time(when).date()
                    message = f"{info.sample_id} was taken meanwhile by another screen: this case is now "
                    info.sample_id = propose_sample_id([*taken, info.sample_id], day)
                    message += f"{info.sample_id}."
                    existing = None
                if existing is not None:
                    joined = _info_of(existing)
                    info.case_id, info.opened_utc, info.closed_utc = joined.case_id, joined.opened_utc, ""
                    info.tz_name, info.tz_offset = joined.tz_name, joined.tz_offset
                    info.patient_ref = info.patient_ref or joined.patient_ref
                    info.operator = info.operator or joined.operator
                    since = shown_time(joined.opened_utc, joined)
                    message = f"Sample {info.sample_id} was already open (since {since}): the fields go into that case."
                    return Opened(info.case_id, True, message)
                info.tz_name, info.tz_offset = local_zone(when)
                info.opened_utc = when
                cursor = db.execute(
                    "INSERT INTO cases (sample_id, patient_ref, operator, opened_utc, tz_name, tz_offset) "
                    "VALUES (?,?,?,?,?,?)",
                    (info.sample_id, info.patient_ref, info.operator, when, info.tz_name, info.tz_offset),
                )
                info.case_id = int(cursor.lastrowid)
                return Opened(info.case_id, False, message)
        except (OSError, sqlite3.Error) as error:
            self._failed(f"save the case {info.sample_id}", error)
            return Opened(None, False, "")

    def update_case(self, info: CaseInfo) -> str | None:
        """Save a saved case's changed identifiers; the sentence saying why not, or None."""
        if not self.available or info.case_id is None:
            return None
        try:
            with self._connect() as db:
                db.execute("UPDATE cases SET sample_id = ?, patient_ref = ?, operator = ? WHERE id = ?",
                           (info.sample_id, info.patient_ref, info.operator, info.case_id))  # fmt: skip
        except sqlite3.IntegrityError:
            return f"Another open case already has the sample ID {info.sample_id}: continue that one instead."
        except (OSError, sqlite3.Error) as error:
            self._failed("save the case's identifiers", error)
            return self.warning
        return None

    def close_case(self, case_id: int, when: str | None = None) -> bool:
        return self._set_closed(case_id, when or now()) is None

    def reopen_case(self, case_id: int) -> str | None:
        """Open a closed case again to add fields; the sentence saying why not, or None."""
        return self._set_closed(case_id, None)

    def _set_closed(self, case_id: int, when: str | None) -> str | None:
        if not self.available:
            return "History is off."
        try:
            with self._connect() as db:
                db.execute("UPDATE cases SET closed_utc = ? WHERE id = ?", (when, case_id))
        except sqlite3.IntegrityError:
            return "Another case with the same sample ID is open: close it first."
        except (OSError, sqlite3.Error) as error:
            self._failed("save the case", error)
            return self.warning
        return None

    def add(
        self, result: Result, when: str, image_bytes: bytes | None = None, case_id: int | None = None
    ) -> int | None:
        """Save one result in its own transaction; return its id, or None (and a warning) on failure.

        In a case, an image already saved there is not saved again: its existing id is returned.
        """
        if not self.available:
            return None
        row = csv_row(result, when)
        kept = None  # the image file this call wrote (removed again when its row cannot be written)
        image_file = None
        try:
            if case_id is not None and (found := self._saved_in(case_id, result.image_sha256)) is not None:
                return found
            if image_bytes is not None and result.image_sha256:
                self.images.mkdir(exist_ok=True)
                image_file = f"{result.image_sha256}{Path(result.source).suffix.lower()[:6]}"
                if not (self.images / image_file).exists():  # the same image kept for another case: shared
                    kept = self.images / image_file
                    kept.write_bytes(image_bytes)
            with self._connect() as db:
                cursor = db.execute(
                    "INSERT INTO results (time, source, image_sha256, verdict, outcome, inconclusive, class, "
                    "confidence, p_malignant, severity, reasons, model, model_sha256, image_file, data, case_id) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (when, row["source"], result.image_sha256, row["verdict"], row["outcome"], int(result.inconclusive),
                     *_finding_columns(result), row["reasons"],
                     row["model"], row["model_sha256"], image_file, json.dumps(result.as_dict()), case_id),
                )  # fmt: skip
                return int(cursor.lastrowid)
        except sqlite3.IntegrityError:  # another browser session saved the same image in this case just now
            return self._saved_in(case_id, result.image_sha256) if case_id is not None else None
        except (OSError, sqlite3.Error) as error:
            self.unsaved += 1
            if kept is not None:  # the row that would name it was not written
                with suppress(OSError):
                    kept.unlink(missing_ok=True)
            self.warning = (
                f"History could not save {result.source or 'the last result'} ({error}); {self.unsaved} "
                f"result{'s are' if self.unsaved > 1 else ' is'} not in the history. Results are still shown."
            )
            return None

    def _saved_in(self, case_id: int, image_sha256: str) -> int | None:
        """The id of this image's result in the case, if it is saved there."""
        if not image_sha256:
            return None
        with self._connect() as db:
            found = db.execute("SELECT id FROM results WHERE case_id = ? AND image_sha256 = ?",
                               (case_id, image_sha256)).fetchone()  # fmt: skip
        return None if found is None else int(found["id"])

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

    # ------------------------------------------------------------ reading

    def _select(self, query: str, parameters: tuple = ()) -> list[dict]:
        """The query's rows as dicts; on a full or read-only disk, read without writing (see _read_unwritable)."""
        try:
            with self._connect() as db:
                return [dict(row) for row in db.execute(query, parameters)]
        except (OSError, sqlite3.Error):
            return self._read_unwritable(query, parameters)

    def _read(self, what: str, query: str, parameters: tuple = ()) -> list[dict]:
        """``_select``, or [] and a warning when the history cannot be read at all."""
        if not self.available:
            return []
        try:
            return self._select(query, parameters)
        except (OSError, sqlite3.Error) as error:
            self._failed(f"read {what}", error)
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
            return [dict(row) for row in connection.execute(query, parameters)]
        finally:
            connection.close()

    def sample_ids(self) -> list[str]:
        """Every sample ID in the history (for the next proposal)."""
        return [r["sample_id"] for r in self._read("the cases", "SELECT sample_id FROM cases")]

    def open_cases(self, limit: int = 8) -> list[tuple[CaseInfo, int]]:
        """The open cases, newest first, each with its number of fields."""
        rows = self._read(
            "the open cases",
            "SELECT cases.*, (SELECT COUNT(*) FROM results WHERE results.case_id = cases.id) AS fields "
            "FROM cases WHERE closed_utc IS NULL ORDER BY opened_utc DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [(_info_of(row), int(row["fields"])) for row in rows]

    def load_case(self, case_id: int | None, limit: int = 5000) -> Case | None:
        """A saved case with its fields in the order they were added; ``None`` gives the results saved before
        cases, as the unassigned pseudo-case (newest ``limit`` of them). None when there is no such case."""
        if case_id is None:  # columns only: the unassigned list can be long, and it has no verdict to compute
            rows = self._read("the results", "SELECT * FROM results WHERE case_id IS NULL ORDER BY id DESC LIMIT ?",
                              (limit,))  # fmt: skip
            if not rows:
                return None
            return Case(CaseInfo("", unassigned=True), [_field_of(row, whole=False) for row in reversed(rows)])
        found = self._read("the case", "SELECT * FROM cases WHERE id = ?", (case_id,))
        if not found:
            return None
        rows = self._read("the results", "SELECT * FROM results WHERE case_id = ? ORDER BY id", (case_id,))
        return Case(_info_of(found[0]), [_field_of(row) for row in rows])

    def cases(
        self, sample: str = "", since: date | None = None, until: date | None = None, limit: int = 200
    ) -> list[Case]:
        """Saved cases, newest first, with their fields: the sample ID contains ``sample`` (any case), opened on a
        local date from ``since`` to ``until`` (inclusive). The unassigned pseudo-case comes last when it has
        results in the date range and ``sample`` is empty."""
        rows = self._read("the cases", "SELECT * FROM cases ORDER BY opened_utc DESC, id DESC")
        wanted = sample.strip().casefold()
        infos = [
            info
            for info in map(_info_of, rows)
            if wanted in info.sample_id.casefold() and _within(local_time(info.opened_utc, info).date(), since, until)
        ][:limit]
        fields: dict[int, list[Field]] = {info.case_id: [] for info in infos if info.case_id is not None}
        if fields:
            marks = ",".join("?" * len(fields))
            for row in self._read("the results", f"SELECT * FROM results WHERE case_id IN ({marks}) ORDER BY id",
                                  tuple(fields)):  # fmt: skip
                fields[row["case_id"]].append(_field_of(row))
        found = [Case(info, fields.get(info.case_id or -1, [])) for info in infos]
        if not wanted:
            unassigned = self.load_case(None)
            if unassigned is not None:
                unassigned.fields = [f for f in unassigned.fields if _within(local_time(f.when).date(), since, until)]
                if unassigned.fields:
                    found.append(unassigned)
        return found

    def other_cases_with(self, image_sha256: str, case_id: int | None) -> list[str]:
        """The sample IDs of other cases that already hold this image (an image normally belongs to one sample)."""
        if not image_sha256:
            return []
        rows = self._read(
            "the cases",
            "SELECT DISTINCT cases.sample_id FROM results JOIN cases ON cases.id = results.case_id "
            "WHERE results.image_sha256 = ? AND results.case_id != ?",
            (image_sha256, -1 if case_id is None else case_id),
        )
        return [row["sample_id"] for row in rows]

    def recent(
        self, limit: int = 500, verdict: str = "", only_referred: bool = False, text: str = "", since: str = ""
    ) -> list[dict]:
        """Saved results as export rows (EXPORT_FIELDS and ``id``), newest first, filtered by a class or verdict
        (any case, any part: "pro", "Pre-B", "benign", "inconclusive"; a referred result matches only by its
        verdict), referral, a text in file name or note, and a start date (UTC)."""
        clauses, values = [], []
        if verdict:
            word = f"%{verdict.strip()}%"
            clauses.append("((inconclusive = 0 AND (class LIKE ? OR verdict LIKE ? OR outcome LIKE ?)) "
                           "OR (inconclusive = 1 AND verdict LIKE ?))")  # fmt: skip
            values += [word, word, word, word]
        if only_referred:
            clauses.append("inconclusive = 1")
        if text:
            clauses.append("(source LIKE ? OR note LIKE ?)")
            values += [f"%{text}%", f"%{text}%"]
        if since:
            clauses.append("time >= ?")
            values.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read("the results", f"SELECT id, case_id FROM results {where} ORDER BY id DESC LIMIT ?",
                          (*values, limit))  # fmt: skip
        cases: dict[int | None, Case | None] = {}
        export = []
        for row in rows:
            if row["case_id"] not in cases:
                cases[row["case_id"]] = self.load_case(row["case_id"])
            case = cases[row["case_id"]]
            item = next((f for f in case.fields if f.history_id == row["id"]), None) if case else None
            if case is not None and item is not None:
                export += case_rows(case, [item])
        return export


def _within(day: date, since: date | None, until: date | None) -> bool:
    return (since is None or day >= since) and (until is None or day <= until)


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
    except (ValueError, AttributeError):
        return ""
