"""The app's inference core on a tiny int8 model the tests convert themselves.

Bundle checks (sha256, card, class count), calibrated probabilities, malignancy, severity, the
refer rules, the occlusion heatmap, exports, history, and the Streamlit page driven headless.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.bundle import BundleError, list_bundles, load_bundle
from edge_app.cases import Case, CaseInfo, Field, thumbnail
from edge_app.classify import Result
from edge_app.fhir import fhir_bundle
from edge_app.records import CSV_FIELDS, SUBTYPE_NOTE, History, case_report_html, csv_row, results_csv
from edge_app.screening import NO_OOD_CALIBRATION, Screener
from smearscope_core.calibration import softmax
from smearscope_core.imaging import ImageError
from tests.factories import CLASSES, PROJECT_ROOT, SIZE, finding_texts_in, io_png, smears, write_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path, tiny_tflite: bytes) -> Path:
    return write_bundle(tmp_path / "models" / "tiny", tiny_tflite)


def one_field(result: Result, when: str = "2026-11-25T10:00:00+00:00", review: str = "", note: str = "") -> Case:
    """A case of one field (the exports are per case), with a thumbnail of a smear."""
    item = Field("k", result, when, thumbnail(smears(900, 1)[0]), review=review, note=note)
    return Case(CaseInfo("LAB-1", opened_utc=when), [item])


def test_screening_gives_a_complete_result(bundle_dir: Path) -> None:
    screener = Screener(bundle_dir, num_threads=1)
    image = smears(900, 1)[0]
    result = screener.screen_image(image, "case-1.png")
    total = sum(p.probability for p in result.probabilities)
    assert total == pytest.approx(1.0, abs=1e-6)
    assert [p.name for p in result.probabilities] == ["Benign", "Pre", "Pro"]
    assert result.p_malignant == pytest.approx(
        result.probabilities[1].probability + result.probabilities[2].probability
    )
    assert result.confidence == max(p.probability for p in result.probabilities)
    top = next(c for c in CLASSES if c["name"] == result.label)
    assert (result.severity, result.malignant) == (top["severity"], top["malignant"])
    assert result.model_sha256 == hashlib.sha256((bundle_dir / "model.tflite").read_bytes()).hexdigest()
    assert result.ood_distance is not None
    # the same through the bytes path
    again = screener.screen_bytes(io_png(image), "case-1.png")
    assert again.probabilities == result.probabilities


def test_unsure_model_refers(bundle_dir: Path, tiny_tflite: bytes, tmp_path: Path) -> None:
    card = json.loads((bundle_dir / "model_card.json").read_text())
    card["calibration"]["abstain_threshold"] = 1.0  # nothing is ever sure enough
    strict = write_bundle(tmp_path / "strict", tiny_tflite, {"calibration": card["calibration"]})
    result = Screener(strict).screen_image(smears(900, 1)[0], "x")
    assert result.inconclusive and result.verdict.startswith("Inconclusive")
    assert "unsure" in result.reasons[0]
    report = case_report_html(one_field(result))
    assert "No class, subtype, severity or probability of malignancy is reported" in report


def test_a_benign_answer_below_the_benign_bar_is_referred(tiny_tflite: bytes, tmp_path: Path) -> None:
    card = json.loads((write_bundle(tmp_path / "plain", tiny_tflite) / "model_card.json").read_text())
    calibration = card["calibration"] | {"benign_min_probability": 0.9}
    classifier = Screener(write_bundle(tmp_path / "bar", tiny_tflite, {"calibration": calibration})).classifier
    torn = classifier.result(np.array([0.8, 0.1, 0.1]), "x")
    assert torn.inconclusive and torn.finding is None and "rule out leukemia" in torn.reasons[0]
    assert not classifier.result(np.array([0.95, 0.03, 0.02]), "x").inconclusive
    assert not classifier.result(np.array([0.1, 0.8, 0.1]), "x").inconclusive  # malignant: the plain rule only


def referred_result(bundle_dir: Path):
    """A Pro-B-topped result the abstain rule refers (top probability 0.45 < the card's threshold)."""
    result = Screener(bundle_dir).classifier.result(np.array([0.2, 0.35, 0.45]), "case.png")
    assert result.inconclusive and result.label == "Pro"
    return result


def test_a_referred_result_exports_no_finding(bundle_dir: Path, tmp_path: Path) -> None:
    """A referral is not a diagnosis: CSV, history, report and FHIR carry the verdict and reasons, no class."""
    from fhir.resources.R4B.bundle import Bundle

    result = referred_result(bundle_dir)
    row = csv_row(result, "2026-11-25T10:00:00+00:00")
    assert (row["verdict"], row["outcome"]) == ("Inconclusive - refer for manual review", "refer")
    assert [row[key] for key in ("class", "confidence", "p_malignant", "severity")] == ["", "", "", ""]
    assert "unsure" in row["reasons"] and ":" in row["reasons"]  # the reason, and what to do about it
    assert finding_texts_in(results_csv([row]).splitlines()[1]) == []  # the row, not its header

    history = History(tmp_path / "history.sqlite")
    history.add(result, "2026-11-25T10:00:00+00:00")
    saved = history.recent()[0]
    assert (saved["outcome"], saved["class"], saved["severity"], saved["confidence"]) == ("refer", "", "", "")
    assert history.recent(verdict="Pro") == [] and len(history.recent(only_referred=True)) == 1

    page = case_report_html(one_field(result))
    body = page.split("<body>", 1)[1]
    assert "Inconclusive - refer for manual review" in body and "unsure" in body
    assert finding_texts_in(body.replace("No class, subtype, severity or probability of malignancy", "")) == []

    exported = fhir_bundle(one_field(result), "2026-11-25T10:00:00+00:00")
    report, _, observation = (e.resource for e in Bundle.model_validate(exported).entry)
    assert observation.interpretation[0].coding[0].code == "IND"
    assert observation.valueCodeableConcept.coding is None
    assert [c.code.text for c in observation.component] == [
        "Image file name", "Image SHA-256", "Inconclusive: refer for manual review"]  # fmt: skip
    assert report.conclusionCode is None and "Every field was referred" in report.conclusion
    assert any("unsure" in note.text for note in observation.note)
    assert "urn:smearscope:class" not in json.dumps(exported) and finding_texts_in(json.dumps(exported)) == []


def test_unfamiliar_images_are_referred(bundle_dir: Path) -> None:
    screener = Screener(bundle_dir)
    for odd in (Image.new("RGB", (96, 96), (128, 128, 128)), smears(900, 1)[0].convert("L")):
        result = screener.screen_image(odd, "odd")
        assert result.inconclusive, result.reasons


def test_model_without_ood_calibration_always_refers(tmp_path: Path, tiny_tflite: bytes) -> None:
    folder = write_bundle(tmp_path / "no-ood", tiny_tflite)
    card = json.loads((folder / "model_card.json").read_text())
    del card["ood"]
    (folder / "model_card.json").write_text(json.dumps(card))
    result = Screener(folder).screen_image(smears(900, 1)[0], "x")
    assert result.inconclusive and NO_OOD_CALIBRATION in result.reasons


def test_tampered_model_is_refused(bundle_dir: Path) -> None:
    data = bytearray((bundle_dir / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_dir / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its card"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: card.pop("calibration"), "cannot be used"),
        (lambda card: card.pop("tflite"), "records no sha256"),
        (lambda card: card["classes"].pop(), "has 3 outputs but its card names 2 classes"),
    ],
)
def test_broken_cards_are_refused(bundle_dir: Path, change, message: str) -> None:
    card = json.loads((bundle_dir / "model_card.json").read_text())
    change(card)
    (bundle_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=message):
        Screener(bundle_dir)


def test_only_bundle_folders_are_listed(bundle_dir: Path) -> None:
    root = bundle_dir.parent
    (root / "not-a-bundle").mkdir()
    (root / "half").mkdir()
    (root / "half" / "model.tflite").write_bytes(b"x")  # no card: not offered
    assert list_bundles(root, root / "missing") == [bundle_dir]


def test_heatmap_is_image_sized_and_quick(bundle_dir: Path) -> None:
    screener = Screener(bundle_dir)
    heatmap = screener.explain(smears(900, 1)[0])
    assert heatmap.heat.shape == (SIZE, SIZE)
    assert heatmap.heat.min() >= 0.0 and heatmap.heat.max() <= 1.0


def test_softmax_with_temperature() -> None:
    logits = np.array([2.0, 1.0, 0.0])
    assert softmax(logits, 1.0).sum() == pytest.approx(1.0)
    assert softmax(logits, 0.5)[0] > softmax(logits, 1.0)[0] > softmax(logits, 2.0)[0]


def test_exports_and_history(bundle_dir: Path, tmp_path: Path) -> None:
    screener = Screener(bundle_dir)
    image = smears(900, 1)[0]
    data = io_png(image)
    result = screener.screen_bytes(data, "case <1>.png")
    assert result.image_sha256 == hashlib.sha256(data).hexdigest()
    row = csv_row(result, "2026-11-24T10:00:00+00:00", "confirmed", "agree")
    text = results_csv([row, row], CSV_FIELDS)
    assert text.splitlines()[0] == ",".join(CSV_FIELDS) and len(text.splitlines()) == 3
    page = case_report_html(one_field(result, "2026-11-24T10:00:00+00:00"))
    assert "data:image/jpeg;base64," in page and "case &lt;1&gt;.png" in page
    assert "not a diagnostic device" in page and result.model_sha256 in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing to fetch

    history = History(tmp_path / "data" / "history.sqlite")
    first = history.add(result, "2026-11-23T09:00:00+00:00")
    second = history.add(result, "2026-11-24T09:00:00+00:00", image_bytes=data)  # image kept: opt-in
    assert [r["id"] for r in history.recent()] == [second, first]
    assert history.review(first, "overridden: benign", "normal lymphocytes") is True
    assert history.review(first, "made-up choice", "") is False
    reviewed = next(r for r in history.recent() if r["id"] == first)
    expected = ("overridden: benign", "normal lymphocytes", result.image_sha256)
    assert (reviewed["review"], reviewed["note"], reviewed["image_sha256"]) == expected
    assert [r["id"] for r in history.recent(text="lymphocytes")] == [first]
    assert [r["id"] for r in history.recent(since="2026-11-24")] == [second]
    assert [r["id"] for r in history.recent(verdict=result.verdict)] == [second, first]
    assert [r["id"] for r in history.recent(verdict=result.verdict.lower()[:4])] == [second, first]  # any case, part
    assert history.recent(verdict="no such class") == []
    assert history.recent(only_referred=True) == ([] if not result.inconclusive else history.recent())
    stored = list((history.images).iterdir())
    assert [p.read_bytes() for p in stored] == [data]  # one image, only the opted-in one
    with sqlite3.connect(history.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_fhir_export_is_valid_r4_structure(bundle_dir: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    result = Screener(bundle_dir).screen_bytes(io_png(smears(900, 1)[0]), "case.png")
    exported = fhir_bundle(one_field(result, review="confirmed", note="agree"), "2026-11-24T10:00:00+00:00")
    parsed = Bundle.model_validate(json.loads(json.dumps(exported)))
    report, _, observation = (e.resource for e in parsed.entry)
    assert report.__resource_type__ == "DiagnosticReport" and observation.__resource_type__ == "Observation"
    assert report.status == observation.status == "preliminary"
    assert report.result[0].reference == parsed.entry[2].fullUrl
    if result.inconclusive:  # no class code for a referral (test_a_referred_result_exports_no_finding)
        result = Screener(bundle_dir).classifier.result(np.array([0.05, 0.9, 0.05]), "case.png")
        assert not result.inconclusive
        exported = fhir_bundle(one_field(result, review="confirmed", note="agree"), "2026-11-24T10:00:00+00:00")
        parsed = Bundle.model_validate(json.loads(json.dumps(exported)))
        report, _, observation = (e.resource for e in parsed.entry)
    assert observation.valueCodeableConcept.coding[0].code == result.label
    assert report.conclusionCode is None  # one malignant field is not a case finding (edge_app/cases.py)
    assert observation.interpretation[0].coding[0].code == ("A" if result.malignant else "N")
    values = {c.code.text.split(" (")[0]: c for c in observation.component}
    malignancy = float(values["Probability of malignancy"].valueQuantity.value)
    assert malignancy == pytest.approx(result.p_malignant * 100, abs=0.01)
    assert any("Technician review: confirmed" in n.text for n in observation.note)


@pytest.mark.parametrize(
    ("probabilities", "named"),
    [
        ((0.1, 0.8, 0.1), True),  # Pre-B ALL, sure: a malignant subtype is named
        ((0.8, 0.1, 0.1), False),  # benign: no subtype
        ((0.2, 0.45, 0.35), False),  # Pre-B ALL on top but unsure: referred, which names no class
    ],
)
def test_subtype_sentence_only_where_a_malignant_subtype_is_named(
    bundle_dir: Path, probabilities: tuple[float, ...], named: bool
) -> None:
    """Subtypes are immunophenotypic (flow cytometry): the report and the FHIR export say so with the result."""
    from fhir.resources.R4B.bundle import Bundle

    result = Screener(bundle_dir).classifier.result(np.array(probabilities), "case.png")
    assert (result.malignant and not result.inconclusive) is named
    assert (SUBTYPE_NOTE in case_report_html(one_field(result))) is named
    parsed = Bundle.model_validate(fhir_bundle(one_field(result), "2026-11-24T10:00:00+00:00"))
    observation = parsed.entry[2].resource
    assert any(n.text == SUBTYPE_NOTE for n in observation.note or []) is named


def test_history_on_a_read_only_folder_only_warns(tmp_path: Path, bundle_dir: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-folder"
        blocked.write_text("x")  # root ignores permissions: use a path under a regular file
        history = History(blocked / "history.sqlite")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        history = History(locked / "history.sqlite")
    assert history.warning and "History is off" in history.warning
    result = Screener(bundle_dir).screen_image(smears(900, 1)[0], "x")
    assert history.add(result, "t") is None and history.recent() == []


def test_bad_upload_bytes_raise_a_sentence(bundle_dir: Path) -> None:
    with pytest.raises(ImageError, match="not an image"):
        Screener(bundle_dir).screen_bytes(b"GIF89a-not-really", "x.gif")


def test_page_screens_uploads_headless(bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(bundle_dir.parent))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception
    good = io_png(smears(900, 1)[0])
    app.file_uploader[0].set_value([("a.png", good, "image/png"), ("bad.jpg", b"text", "image/jpeg")]).run()
    assert not app.exception
    assert any("bad.jpg is not an image" in e.value for e in app.error)
    assert any("a.png" in m.value for m in app.markdown)  # the results table
    assert "not a diagnostic device" in " ".join(c.value for c in app.caption)
    # the review is saved into the history, which the History tab then lists (and exports)
    app.selectbox(key=next(b.key for b in app.selectbox if (b.key or "").startswith("review-"))).set_value("confirmed")
    app.button(key=next(b.key for b in app.button if (b.key or "").startswith("save-"))).click().run()
    assert not app.exception
    assert any("Review saved" in m.value for m in app.success)
    assert any("| a.png |" in m.value for m in app.markdown)
    assert any("| confirmed |" in m.value for m in app.markdown)  # the case's table shows the review


def test_port_in_use_names_the_way_to_choose_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make app` passes SMEARSCOPE_LAUNCHED_BY=make: the sentence then names `make app PORT=...`."""
    from edge_app import launcher

    by_make = launcher.port_in_use(8501, {launcher.LAUNCHED_BY_ENV: "make"})
    assert by_make.startswith("Port 8501 on 127.0.0.1 is in use") and "`make app PORT=" in by_make
    assert "--port" in launcher.port_in_use(8501, {}) and "make app" not in launcher.port_in_use(8501, {})


def test_page_shows_a_referred_card_without_a_finding(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card of a referred image: verdict, reasons with what to do; raw scores only in "Model details (not a
    result)", collapsed."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(bundle_dir.parent))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
    grey = smears(900, 1)[0].convert("L").convert("RGB")  # no stain: the image checks refer it
    assert Screener(bundle_dir).screen_image(grey, "grey.png").inconclusive
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    app.file_uploader[0].set_value([("grey.png", io_png(grey), "image/png")]).run()
    assert not app.exception
    assert any(w.value.startswith("**Inconclusive - refer for manual review**") for w in app.warning)
    assert any("no stained cells" in w.value and ": check the stain" in w.value for w in app.warning)
    details = next(e for e in app.expander if e.label == "Model details (not a result)")
    hidden = [element.value for element in details.caption]
    assert any("not a finding" in text for text in hidden) and any("Pro-B ALL" in text for text in hidden)
    screen = app.tabs[0]  # the Screen tab (the Model tab describes every class, as it should)
    shown = [e.value for kind in (screen.markdown, screen.caption, screen.success, screen.error, screen.warning,
                                  screen.info) for e in kind if e.value not in hidden]  # fmt: skip
    assert any("Inconclusive - refer" in text for text in shown)  # the checked texts are the card's
    assert [piece for text in shown for piece in finding_texts_in(text)] == []


def test_edge_environment_runs_without_tensorflow(bundle_dir: Path) -> None:
    """In the app's own virtual environment (requirements-edge.txt only): no TensorFlow there."""
    python = os.environ.get("SMEARSCOPE_EDGE_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("set SMEARSCOPE_EDGE_PYTHON to the edge venv's python (make test does) to run this")
    script = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('tensorflow') is None, 'TensorFlow is installed in the edge env'\n"
        "from PIL import Image\n"
        "from edge_app.screening import Screener\n"
        "r = Screener(sys.argv[1]).screen_image(Image.new('RGB', (64, 64), (200, 150, 200)), 'x')\n"
        "assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'train', 'convert') for m in sys.modules)\n"
        "print('ok', r.verdict)\n"
    )
    done = subprocess.run([python, "-c", script, str(bundle_dir)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
