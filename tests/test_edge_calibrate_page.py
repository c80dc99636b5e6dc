"""The page's "Calibrate" tab (edge_app/calibrate_page.py, AppTest): a folder path in, classes and counts shown, a
calibration with its gate verdict, "use this bundle" writing a site bundle that the app then uses, and the Model tab
showing the site calibration and its local validation figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_app.calibrate_page import SITE_MODELS, bundle_name
from smearscope_core.model_card import read_card
from tests.factories import open_page
from tests.site_factories import ALIKE, SEPARABLE, SITE_CLASSES_JSON, make_site, write_site_base


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibrate-page")
    return write_site_base(root / "models" / "site-base", root / "work")


def folder_input(app):
    return next(t for t in app.text_input if t.label.startswith("Folder of labelled images"))


def button(app, label: str):
    return next(b for b in app.button if b.label.startswith(label))


def texts(app) -> str:
    kinds = (app.markdown, app.caption, app.success, app.error, app.info, app.warning)
    return "\n".join(str(e.value) for kind in kinds for e in kind)


def test_calibrate_tab_scans_fits_writes_and_uses_a_site_bundle(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", SEPARABLE, 24, seed=3, classes_json=SITE_CLASSES_JSON)
    data = tmp_path / "data"
    app = open_page(base, data, monkeypatch)
    folder_input(app).set_value(str(tmp_path / "nowhere")).run()
    assert "is not a folder on this computer" in texts(app)
    folder_input(app).set_value(str(site)).run()
    shown = texts(app)
    assert "| Blast (site) | yes | 24 |" in shown and "| Normal lymphocyte (site) | no | 24 |" in shown
    assert not app.dataframe and not app.table  # Markdown tables only: the desktop build leaves pyarrow out
    button(app, "Calibrate").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Local validation passed." in texts(app)
    assert {m.label for m in app.metric} >= {"Malignant sensitivity", "Macro-F1", "Referred"}
    button(app, "Use this bundle").click().run()
    assert not app.exception, [e.value for e in app.exception]
    written = data / SITE_MODELS / bundle_name(f"site-base-site-{site.name}")
    card = read_card(written / "model_card.json")
    assert card["site"]["gate"] == card["site"]["gate"] | {"passed": True, "forced": False}
    model_text = texts(app)
    assert "Site calibration" in [h.value for h in app.subheader]  # the Model tab names the active site bundle
    assert card["name"] in model_text and "calibrated" in model_text


def test_a_failing_calibration_is_only_written_when_forced(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", ALIKE, 22, seed=4, classes_json=SITE_CLASSES_JSON)
    data = tmp_path / "data"
    app = open_page(base, data, monkeypatch)
    folder_input(app).set_value(str(site)).run()
    button(app, "Calibrate").click().run()
    assert "Local validation failed" in texts(app)
    assert button(app, "Use this bundle").disabled
    next(c for c in app.checkbox if c.label.startswith("Write it anyway")).check().run()
    button(app, "Use this bundle").click().run()
    written = data / SITE_MODELS / bundle_name(f"site-base-site-{site.name}")
    assert read_card(written / "model_card.json")["site"]["gate"]["forced"] is True
    assert "failed local validation and was written anyway" in texts(app)


def test_bundle_names_are_folder_safe() -> None:
    assert bundle_name("  Clinic A / scope #2 ") == "Clinic-A-scope-2"
    assert bundle_name("../..") == ""
