"""Cases (issue 13): one sample, many fields, a slide-level summary and verdict, and a history of cases.

- the verdict rule's edge cases (edge_app/cases.py): all referred, one malignant field, too few fields;
- the history: one image stored once per case whatever the session, sample IDs, closing and reopening, and a
  database written by the version before cases (tests/fixtures/history-before-cases.sql) migrating without loss;
- the exports: one CSV writer for the session and the history, the printable case report, FHIR R4 per case
  (validated with fhir.resources), local time with its zone;
- the page (AppTest): the case flow from upload and folder to summary, review from History, a re-scan that
  adds nothing, a second browser session, a watched folder, and the sample ID that must be given.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.cases import (
    NEGATIVE,
    SUSPECTED,
    UNASSIGNED,
    VERDICT_RULE,
    Case,
    CaseInfo,
    Field,
    case_matches,
    case_verdict,
    propose_sample_id,
    sample_id_problem,
    shown_time,
    summarize,
    thumbnail,
)
from edge_app.classify import REFER_VERDICT, Result
from edge_app.fhir import fhir_bundle
from edge_app.records import (
    EXPORT_FIELDS,
    SUBTYPE_NOTE,
    History,
    case_report_html,
    case_rows,
    load_preferences,
    results_csv,
)
from edge_app.screening import Screener
from tests.factories import PROJECT_ROOT, finding_texts_in, io_png, open_page, smears, write_bundle

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "history-before-cases.sql"
BENIGN, PRE_B, PRO_B = (0.95, 0.03, 0.02), (0.05, 0.9, 0.05), (0.04, 0.06, 0.9)
UNSURE = ["the model is unsure (top probability 0.45 < 0.60): review this field by eye"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: bytes) -> Path:
    return write_bundle(tmp_path_factory.mktemp("cases") / "models" / "tiny", tiny_tflite)


@pytest.fixture(scope="module")
def screener(bundle: Path) -> Screener:
    return Screener(bundle, num_threads=1)


def result(screener: Screener, probabilities: tuple[float, ...], name: str = "f.png", refer: bool = False) -> Result:
    """The classifier's own result on these calibrated probabilities; ``refer`` adds a referral reason."""
    made = screener.classifier.result(np.array(probabilities), name, list(UNSURE) if refer else None)
    made.image_sha256 = f"{abs(hash((name, probabilities, refer))):064d}"[-64:]
    return made


def fields(screener: Screener, *kinds: tuple[tuple[float, ...], bool]) -> list[Field]:
    return [
        Field(f"k{i}", result(screener, probabilities, f"field-{i}.png", refer), f"2026-11-25T10:{i:02d}:00+00:00")
        for i, (probabilities, refer) in enumerate(kinds)
    ]


# ---------------------------------------------------------------- the verdict rule


def verdict_of(screener: Screener, *kinds: tuple[tuple[float, ...], bool]):
    return case_verdict(summarize([f.result for f in fields(screener, *kinds)]))


def test_all_referred_is_inconclusive_and_names_nothing(screener: Screener) -> None:
    verdict = verdict_of(screener, *[(PRO_B, True)] * 8)
    assert (verdict.outcome, verdict.text, verdict.subtype) == ("refer", REFER_VERDICT, "")
    assert "Every field was referred" in verdict.reason
    summary = summarize([f.result for f in fields(screener, *[(PRO_B, True)] * 8)])
    assert (summary.referred, summary.assessed, summary.per_class, summary.max_p_malignant) == (8, 0, (), None)
    assert finding_texts_in(verdict.text + verdict.reason) == []  # a referral shows no class and no figure


def test_one_malignant_field_refers_and_is_never_negative(screener: Screener) -> None:
    """Fewer malignant fields than the rule needs: inconclusive, however many benign fields there are."""
    assert VERDICT_RULE.min_malignant == 2
    verdict = verdict_of(screener, (PRE_B, False), *[(BENIGN, False)] * 20)
    assert verdict.outcome == "refer" and "fewer than the 2" in verdict.reason and verdict.subtype == ""
    assert verdict_of(screener, (PRE_B, False)).outcome == "refer"


def test_too_few_assessed_fields_refer(screener: Screener) -> None:
    few = verdict_of(screener, *[(BENIGN, False)] * (VERDICT_RULE.min_assessed - 1), *[(PRO_B, True)] * 3)
    assert few.outcome == "refer" and f"Only {VERDICT_RULE.min_assessed - 1} fields could be assessed" in few.reason
    enough = verdict_of(screener, *[(BENIGN, False)] * VERDICT_RULE.min_assessed, (PRO_B, True))
    assert (enough.outcome, enough.text) == ("negative", NEGATIVE)
    mostly_referred = verdict_of(screener, *[(BENIGN, False)] * 5, *[(PRO_B, True)] * 6)
    assert mostly_referred.outcome == "refer" and "6 of 11 fields were referred" in mostly_referred.reason
    assert verdict_of(screener).reason == "No field has been screened yet."


def test_malignant_fields_suggest_all_with_the_commonest_subtype(screener: Screener) -> None:
    """Referred fields never count: two referred Pro-B-topped fields do not outvote the assessed Pre-B ones."""
    verdict = verdict_of(screener, (PRE_B, False), (PRE_B, False), (PRO_B, False), (PRO_B, True), (PRO_B, True))
    assert verdict.outcome == "suspected" and verdict.subtype == "Pre-B ALL"
    assert verdict.text == f"{SUSPECTED} (research subtype suggestion: Pre-B ALL)"
    tie = verdict_of(screener, (PRE_B, False), (PRO_B, False), (BENIGN, False))
    assert tie.subtype == "Pre-B ALL or Pro-B ALL"
    summary = summarize([f.result for f in fields(screener, (PRE_B, False), (BENIGN, False), (PRO_B, True))])
    assert summary.per_class == (("Benign", 1), ("Pre-B ALL", 1))  # the model's class order; referred not counted
    assert summary.max_p_malignant == pytest.approx(0.95) and summary.mean_p_malignant == pytest.approx(0.5)


def test_filters_are_case_insensitive_on_the_verdict_as_shown(screener: Screener) -> None:
    suspected = Case(CaseInfo("A"), fields(screener, (PRE_B, False), (PRE_B, False)))
    referred = Case(CaseInfo("B"), fields(screener, (PRO_B, True)))
    referred.fields[0].review = "confirmed"
    assert case_matches(suspected, "suspected all") and case_matches(suspected, "pre-b")
    assert not case_matches(referred, "pre-b") and case_matches(referred, "INCONCLUSIVE")
    assert case_matches(referred, reviewed="every field reviewed")
    assert case_matches(suspected, reviewed="not every field reviewed")
    assert not case_matches(Case(CaseInfo("", unassigned=True), referred.fields), "inconclusive")


def test_sample_ids_are_proposed_and_checked() -> None:
    day = date(2026, 11, 25)
    assert propose_sample_id([], day) == "S-20261125-001"
    assert propose_sample_id(["S-20261125-001", "S-20261125-007", "S-20261124-010", "LAB-9"], day) == "S-20261125-008"
    assert sample_id_problem("  ") and "sample ID" in sample_id_problem("")
    assert sample_id_problem("x" * 65) and sample_id_problem("A\tB") and sample_id_problem("LAB-2026-0042") is None


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The computer's zone set to Europe/Berlin for this test (POSIX TZ), restored afterwards."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_stored_in_utc_and_shown_in_local_time_with_the_zone(berlin: None, tmp_path: Path) -> None:
    assert shown_time("2026-11-25T10:02:00+00:00") == "2026-11-25 11:02 CET (UTC+01:00)"
    assert shown_time("2026-07-01T10:02:00+00:00") == "2026-07-01 12:02 CEST (UTC+02:00)"
    history = History(tmp_path / "history.sqlite")
    info = CaseInfo("LAB-1", opened_utc="2026-11-25T10:02:00+00:00")
    history.open_case(info)
    saved = history.load_case(info.case_id)
    assert saved is not None and (saved.info.opened_utc, saved.info.tz_name, saved.info.tz_offset) == (
        "2026-11-25T10:02:00+00:00", "CET", "+01:00")  # fmt: skip
    assert shown_time(saved.info.opened_utc, saved.info) == "2026-11-25 11:02 CET (UTC+01:00)"


# ---------------------------------------------------------------- the history of cases


def test_an_image_is_stored_once_per_case_whatever_the_session(screener: Screener, tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    first, again = History(path), History(path)  # two browser sessions' pages: one database
    item = result(screener, PRE_B, "a.png")
    info = CaseInfo("LAB-7", operator="A. Tech")
    assert first.open_case(info) == (info.case_id, False, "")
    one = first.add(item, "2026-11-25T10:00:00+00:00", case_id=info.case_id)
    assert again.add(item, "2026-11-25T10:05:00+00:00", case_id=info.case_id) == one  # not saved again
    other = CaseInfo("LAB-8")
    again.open_case(other)
    assert again.add(item, "2026-11-25T10:06:00+00:00", case_id=other.case_id) not in (None, one)
    assert again.other_cases_with(item.image_sha256, other.case_id) == ["LAB-7"]
    loaded = first.load_case(info.case_id)
    assert loaded is not None and [f.history_id for f in loaded.fields] == [one]
    assert loaded.info.operator == "A. Tech" and loaded.fields[0].result.verdict == item.verdict


def test_an_open_sample_id_is_one_case(tmp_path: Path) -> None:
    history = History(tmp_path / "history.sqlite")
    typed = CaseInfo("LAB-9", patient_ref="P-1")
    history.open_case(typed)
    again = CaseInfo("LAB-9", operator="B. Tech")  # the accession number typed in another session
    joined = history.open_case(again)
    assert joined.joined and joined.case_id == typed.case_id and "already open" in joined.message
    assert (again.patient_ref, again.operator) == ("P-1", "B. Tech")
    proposed = CaseInfo("S-20261125-001", proposed=True)
    history.open_case(proposed)
    clash = CaseInfo("S-20261125-001", proposed=True)  # another session's proposal, taken meanwhile
    bumped = history.open_case(clash)
    assert not bumped.joined and clash.sample_id.startswith("S-") and clash.sample_id != "S-20261125-001"
    assert clash.sample_id in bumped.message
    typed.sample_id = "S-20261125-001"
    assert "already has the sample ID" in history.update_case(typed)
    assert history.close_case(int(proposed.case_id or 0))
    assert history.update_case(typed) is None  # a closed case's ID can be used again
    assert history.reopen_case(int(proposed.case_id or 0)) and "open" in history.reopen_case(int(proposed.case_id or 0))
    assert [info.sample_id for info, _ in history.open_cases()] == sorted(
        ["S-20261125-001", clash.sample_id], key=lambda s: s != clash.sample_id
    )


def legacy_rows(db: Path) -> list[dict]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM results ORDER BY id")]


def test_a_history_from_before_cases_migrates_without_loss(screener: Screener, tmp_path: Path) -> None:
    """tests/fixtures/history-before-cases.sql: a database the version before cases wrote (History.add and
    review of that commit, dumped). Opened by this version, every row and column survives; the results are
    listed as the unassigned pseudo-case, reviewable, with no case verdict, and new cases go beside them."""
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as connection:
        connection.executescript(FIXTURE.read_text())
    before = legacy_rows(db)
    assert len(before) == 4 and "case_id" not in before[0]

    history = History(db)
    assert history.available and history.warning is None
    after = legacy_rows(db)
    assert [{k: row[k] for k in before[0]} for row in after] == before  # every old column, unchanged
    assert all(row["case_id"] is None for row in after)
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == History.SCHEMA_VERSION
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    History(db)  # opening again changes nothing
    assert legacy_rows(db) == after

    unassigned = history.load_case(None)
    assert unassigned is not None and unassigned.info.unassigned and unassigned.info.title == UNASSIGNED
    assert [f.result.source for f in unassigned.fields] == ["field-01.jpg", "field-02.jpg", "field-03.jpg",
                                                            "field-01.jpg"]  # fmt: skip
    reviewed, pre_b, referred, repeat = unassigned.fields
    assert (reviewed.review, reviewed.note) == ("confirmed", "normal lymphocytes")
    assert pre_b.result.finding is not None and pre_b.result.display_label == "Pre-B ALL"
    assert referred.result.finding is None and referred.result.reasons
    rows = case_rows(unassigned)
    assert [r["case_verdict"] for r in rows] == [""] * 4 and rows[2]["class"] == rows[2]["confidence"] == ""
    assert history.review(int(repeat.history_id or 0), "overridden: benign", "seen twice")
    listed = history.cases()
    assert listed[-1].info.unassigned and len(listed[-1].fields) == 4
    assert not case_matches(listed[-1], "benign")  # results from before cases have no case verdict to match

    info = CaseInfo("LAB-1")  # a new case beside them; the same image as an old row is a field of its own
    history.open_case(info)
    new = result(screener, BENIGN, "field-01.jpg")
    new.image_sha256 = "11" * 32
    assert history.add(new, "2026-11-26T09:00:00+00:00", case_id=info.case_id) not in (None, reviewed.history_id)
    assert [c.info.sample_id for c in history.cases()] == ["LAB-1", ""]
    assert len(history.recent(limit=100)) == 5
    assert {r["source"] for r in history.recent(verdict="pre-b")} == {"field-02.jpg"}  # any case, any part
    assert {r["source"] for r in history.recent(verdict="Inconclusive")} == {"field-03.jpg"}
    assert history.recent(verdict="pro") == []  # the referred Pro-B-topped field names no class


# ---------------------------------------------------------------- exports


def a_case(screener: Screener, tmp_path: Path) -> tuple[Case, History]:
    """Three fields saved under LAB-2026-0042: two Pre-B ALL, one referred; one reviewed with a note."""
    history = History(tmp_path / "history.sqlite")
    info = CaseInfo("LAB-2026-0042", patient_ref="P-17", operator="A. Tech")
    history.open_case(info)
    items = fields(screener, (PRE_B, False), (PRE_B, False), (PRO_B, True))
    for item, image in zip(items, smears(900, 3), strict=True):
        item.thumbnail = thumbnail(image)
        item.pixels = screener.pixels(image)
        item.history_id = history.add(item.result, item.when, case_id=info.case_id)
    items[0].review, items[0].note = "confirmed", "blasts seen"
    history.review(int(items[0].history_id or 0), "confirmed", "blasts seen")
    return Case(info, items), history


def test_the_session_and_the_history_write_the_same_csv(screener: Screener, tmp_path: Path) -> None:
    case, history = a_case(screener, tmp_path)
    saved = history.load_case(case.info.case_id)
    assert saved is not None
    session_csv, history_csv = results_csv(case_rows(case)), results_csv(case_rows(saved))
    assert session_csv == history_csv
    lines = session_csv.splitlines()
    assert lines[0] == ",".join(EXPORT_FIELDS) and len(lines) == 4
    first = dict(zip(EXPORT_FIELDS, next(iter(__import__("csv").reader([lines[1]]))), strict=True))
    assert (first["sample_id"], first["patient_ref"], first["operator"]) == ("LAB-2026-0042", "P-17", "A. Tech")
    assert first["case_verdict"] == case.verdict.text and first["inconclusive"] == "False"
    assert re.fullmatch(r"0\.\d{4}", first["confidence"])
    assert (first["review"], first["note"]) == ("confirmed", "blasts seen")
    assert lines[3].split(",")[EXPORT_FIELDS.index("class")] == ""  # the referred field: no class


def test_the_case_report_is_printable_and_self_contained(screener: Screener, tmp_path: Path) -> None:
    case, _ = a_case(screener, tmp_path)
    heatmap = Image.new("RGB", (64, 64), (250, 200, 0))
    page = case_report_html(case, {case.fields[0].key: heatmap}, printed="2026-11-25T12:00:00+00:00")
    body = page.split("<body>", 1)[1]
    for text in ("LAB-2026-0042", "P-17", "A. Tech", "Case verdict: " + case.verdict.text, case.verdict.reason,
                 "Fields screened: 3; referred: 1; assessed: 2.", "Technician review: <b>confirmed</b>",
                 "blasts seen", "Reviewed by (name)", "Signature", case.fields[0].result.model_sha256,
                 "not a diagnostic device", "Occlusion heatmap", SUBTYPE_NOTE):  # fmt: skip
        assert text in body, text
    assert shown_time(case.fields[0].when, case.info, seconds=True) in body
    assert body.count("data:image/jpeg;base64,") == 4  # three thumbnails and one heatmap
    assert "http" not in page and "src='/" not in page  # nothing to fetch: prints and archives offline
    referred = body.split("Field 3:", 1)[1]
    assert finding_texts_in(referred.replace("No class, subtype, severity or probability of malignancy", "")
                            .split("Technician review")[0]) == []  # fmt: skip


def test_fhir_per_case_is_valid_r4(screener: Screener, tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    case, _ = a_case(screener, tmp_path)
    exported = fhir_bundle(case, "2026-11-25T12:00:00+00:00")
    parsed = Bundle.model_validate(json.loads(json.dumps(exported)))
    report, specimen, *observations = (entry.resource for entry in parsed.entry)
    assert (report.__resource_type__, specimen.__resource_type__) == ("DiagnosticReport", "Specimen")
    assert specimen.accessionIdentifier.value == "LAB-2026-0042"
    assert report.subject.identifier.value == "P-17" and report.subject.reference is None  # by identifier only
    assert "Patient" not in {entry.resource.__resource_type__ for entry in parsed.entry}
    assert report.performer[0].display == "A. Tech" and report.status == "preliminary"
    assert report.specimen[0].reference == parsed.entry[1].fullUrl
    assert f"Case verdict: {case.verdict.text}." in report.conclusion
    assert [r.reference for r in report.result] == [e.fullUrl for e in parsed.entry[2:]]
    assert len(observations) == 3
    for observation, item in zip(observations, case.fields, strict=True):
        values = {c.code.text: c for c in observation.component}
        assert values["Image file name"].valueString == item.result.source
        assert values["Image SHA-256"].valueString == item.result.image_sha256
        assert observation.specimen.reference == parsed.entry[1].fullUrl
    referred = observations[2]
    assert referred.interpretation[0].coding[0].code == "IND" and referred.valueCodeableConcept.coding is None
    assert "Probability of malignancy (calibrated)" not in {c.code.text for c in referred.component}
    assert observations[0].valueCodeableConcept.coding[0].code == "Pre"
    assert any(n.text == "Technician review: confirmed. blasts seen" for n in observations[0].note)
    expected_code = {"suspected": "suspected-all", "negative": "no-leukemia-suggested"}.get(case.verdict.outcome)
    assert (report.conclusionCode[0].coding[0].code if report.conclusionCode else None) == expected_code

    inconclusive = Case(CaseInfo("LAB-3"), fields(screener, (PRO_B, True), (PRE_B, False)))
    parsed = Bundle.model_validate(fhir_bundle(inconclusive, "2026-11-25T12:00:00+00:00"))
    report = parsed.entry[0].resource
    assert report.conclusionCode is None and report.subject is None and report.performer is None
    assert REFER_VERDICT in report.conclusion and finding_texts_in(report.conclusion) == []  # no class, no figure


# ---------------------------------------------------------------- the page


def sidebar_input(app, label: str):
    return next(t for t in app.sidebar.text_input if t.label.startswith(label))


def button(app, label: str):
    return next(b for b in app.button if b.label.startswith(label))


def saved(data: Path) -> list[dict]:
    with sqlite3.connect(data / "history.sqlite") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(r) for r in connection.execute("SELECT results.*, cases.sample_id FROM results "
                                                     "LEFT JOIN cases ON cases.id = results.case_id")]  # fmt: skip


def image_captions(app) -> list[str]:
    """The captions of the page's images (the field cards' thumbnails), in page order."""
    return [caption for element in app.get("image") for caption in element.captions]


def text_of(app) -> str:
    return "\n".join(e.value for kind in (app.markdown, app.caption, app.info, app.success) for e in kind)


def test_case_flow_from_upload_and_folder_to_review(
    bundle: Path, screener: Screener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    app = open_page(bundle, data, monkeypatch)
    assert re.fullmatch(r"S-\d{8}-001", sidebar_input(app, "Sample ID").value)  # proposed: today's first
    sidebar_input(app, "Sample ID").set_value("LAB-2026-0042").run()
    sidebar_input(app, "Patient reference").set_value("P-17").run()
    sidebar_input(app, "Operator").set_value("A. Tech").run()
    images = smears(900, 3)
    app.file_uploader[0].set_value([("a.png", io_png(images[0]), "image/png"),
                                    ("b.png", io_png(images[1]), "image/png")]).run()  # fmt: skip
    assert not app.exception
    assert any("Case **LAB-2026-0042** · patient P-17 · operator A. Tech · opened" in m.value for m in app.markdown)
    assert "**2** fields screened" in text_of(app) and any("| a.png |" in m.value for m in app.markdown)

    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "a-again.png").write_bytes(io_png(images[0]))  # the uploaded image, from the camera folder
    (folder / "c.png").write_bytes(io_png(images[2]))
    app.text_input(key="folder").set_value(str(folder)).run()
    button(app, "Screen every image in this folder").click().run()
    assert not app.exception
    rows = saved(data)
    assert sorted(r["source"] for r in rows) == ["a.png", "b.png", "c.png"]  # a-again.png is a.png: stored once
    assert {r["sample_id"] for r in rows} == {"LAB-2026-0042"}
    assert "The same image was added again as a-again.png" in text_of(app)
    expected = case_verdict(summarize([screener.screen_bytes(io_png(image), "x.png") for image in images]))
    assert f"Case verdict: {expected.text}" in text_of(app)  # the page's verdict is the case model's
    button(app, "Screen every image in this folder").click().run()  # a re-scan adds nothing
    assert len(saved(data)) == 3

    # review from the History tab, which lists the case (filters case-insensitive on the verdict as shown)
    app.text_input(key="history-verdict").set_value(expected.text.split()[0].upper()).run()
    assert any("| LAB-2026-0042 | P-17 | A. Tech |" in m.value for m in app.markdown)
    app.selectbox(key="history-open").set_value(next(o for o in app.selectbox(key="history-open").options
                                                     if o.startswith("LAB-2026-0042"))).run()  # fmt: skip
    c_id = next(r["id"] for r in saved(data) if r["source"] == "c.png")
    app.selectbox(key=f"review-history-{c_id}").set_value("overridden: benign")
    app.text_input(key=f"note-history-{c_id}").set_value("a normal lymphocyte")
    app.button(key=f"save-history-{c_id}").click().run()
    assert not app.exception
    row = next(r for r in saved(data) if r["id"] == c_id)
    assert (row["review"], row["note"]) == ("overridden: benign", "a normal lymphocyte")
    assert "Review saved" in text_of(app)
    assert "reviewed 1 of 3 (1 overridden)" in text_of(app)  # the open case's summary too

    # a second browser session continues the open case: the same folder adds nothing
    again = open_page(bundle, data, monkeypatch)
    button(again, "Continue LAB-2026-0042 (3 fields").click().run()
    assert sidebar_input(again, "Sample ID").value == "LAB-2026-0042"
    again.text_input(key="folder").set_value(str(folder)).run()
    button(again, "Screen every image in this folder").click().run()
    assert not again.exception and len(saved(data)) == 3

    # closing the case starts the next sample: proposed ID, remembered operator, empty uploader
    button(app, "Close this case and start the next sample").click().run()
    assert re.fullmatch(r"S-\d{8}-001", sidebar_input(app, "Sample ID").value)
    assert sidebar_input(app, "Operator").value == "A. Tech" and load_preferences(data)["operator"] == "A. Tech"
    assert not app.file_uploader[0].value and "no field screened yet" in text_of(app)
    with sqlite3.connect(data / "history.sqlite") as connection:
        assert connection.execute("SELECT closed_utc IS NOT NULL FROM cases").fetchall() == [(1,)]


def test_no_sample_id_no_screening(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = open_page(bundle, tmp_path / "data", monkeypatch)
    sidebar_input(app, "Sample ID").set_value("   ").run()
    assert any("Enter a sample ID" in e.value for e in app.sidebar.error)
    assert app.file_uploader[0].proto.disabled
    sidebar_input(app, "Sample ID").set_value("LAB-5").run()
    assert not app.file_uploader[0].proto.disabled and not app.sidebar.error


def test_a_watched_folder_waits_adds_new_images_and_keeps_the_review(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, folder = tmp_path / "data", tmp_path / "camera"
    folder.mkdir()
    old = smears(930, 1)[0]
    app = open_page(bundle, data, monkeypatch)
    app.text_input(key="folder").set_value(str(folder)).run()
    next(t for t in app.toggle if t.label.startswith("Watch this folder")).set_value(True).run()
    assert any("Waiting for images" in i.value and "is empty" in i.value for i in app.info)
    (folder / "old.png").write_bytes(io_png(old))  # arrives while watching: new
    app.run()
    first = folder / "new-1.png"
    first.write_bytes(io_png(smears(931, 1)[0]))
    second = folder / "new-2.png"
    second.write_bytes(io_png(smears(932, 1)[0]))
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**9))  # the newest by modification time
    app.run()
    assert not app.exception and len(saved(data)) == 3
    assert image_captions(app) == ["new-1.png", "new-2.png", "old.png"]  # newest first
    review_key = next(b.key for b in app.selectbox if (b.key or "").startswith("review-watch-"))
    app.selectbox(key=review_key).set_value("confirmed")
    app.button(key=review_key.replace("review-", "save-", 1)).click().run()
    assert any("Review saved in the history" in s.value for s in app.success)
    app.run()  # the folder's next refresh
    assert any("Review saved in the history" in s.value for s in app.success)
    assert any(i.value.startswith("Waiting for new images") for i in app.info)


def test_earlier_images_join_the_case_only_on_request(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, folder = tmp_path / "data", tmp_path / "camera"
    folder.mkdir()
    (folder / "yesterday.png").write_bytes(io_png(smears(940, 1)[0]))
    app = open_page(bundle, data, monkeypatch)
    app.text_input(key="folder").set_value(str(folder)).run()
    next(t for t in app.toggle if t.label.startswith("Watch this folder")).set_value(True).run()
    assert "1 image was in the folder before watching started" in text_of(app)
    assert not (data / "history.sqlite").exists() or saved(data) == []
    button(app, "Add the 1 image that was already in the folder").click().run()
    assert [r["source"] for r in saved(data)] == ["yesterday.png"]
