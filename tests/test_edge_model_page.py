"""The Model tab's colour-robust and colour-only figures (issue 16), and the subtype sentence on the page.

The training photos of each class differ in colour, so the headline test figures can rest on colour: the tab
shows the model on colour-standardised test images and what colour alone predicts, from the card's
``shortcuts`` section, or one sentence that they were not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_app.components import NO_SHORTCUT_FIGURES
from edge_app.records import SUBTYPE_NOTE
from smearscope_core.model_card import validate_card
from tests.factories import NEVER_UNSURE, OUR_MODEL, PROJECT_ROOT, io_png, shortcuts_section, smears, write_bundle


def _page(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SMEARSCOPE_MODELS", str(models))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "no-default")
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception
    return app


def _text(elements) -> str:
    return "\n".join(e.value for e in elements)


def test_model_tab_shows_colour_robust_and_colour_only_figures(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tflite = (tiny_models / OUR_MODEL / "model.tflite").read_bytes()  # favours Pre-B ALL: a malignant subtype
    folder = write_bundle(tmp_path / "models" / "measured", tflite,
                          {"shortcuts": shortcuts_section(), "calibration": NEVER_UNSURE})  # fmt: skip
    validate_card(json.loads((folder / "model_card.json").read_text()))  # the section as the schema wants it
    app = _page(folder.parent, tmp_path, monkeypatch)
    markdown = _text(app.markdown)
    # the int8 colour-robust figures where the card has them, beside the colour-only baseline, in a sentence
    assert "Colour-robust test accuracy 58.75%, macro-F1 0.543 (int8 model, 80 images" in markdown
    assert "colour-only baseline accuracy 83.75%" in markdown
    assert "predicts the class 84% of the time" in markdown and "the int8 model is right 59% of the time" in markdown
    # every baseline in the table, with its features and accuracy
    corners = "| corners | mean and standard deviation of R, G, B in each corner (24 numbers) | 76.2% | 87.5% |"
    assert corners in markdown
    assert "| majority class | none: always the most frequent training class | 33.8% | - |" in markdown
    assert NO_SHORTCUT_FIGURES not in markdown
    assert SUBTYPE_NOTE in _text(app.caption)  # the Model tab lists malignant subtypes

    # a malignant subtype screened on the page: the sentence goes with it
    app.file_uploader[0].set_value([("a.png", io_png(smears(900, 1)[0]), "image/png")]).run()
    assert not app.exception
    assert any("Pre-B ALL" in e.value and "leukemic cells suggested" in e.value for e in app.error)
    assert _text(app.caption).count(SUBTYPE_NOTE) == 2  # the Model tab's, and the result card's


def test_model_tab_says_when_colour_robust_figures_were_not_measured(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_bundle(tmp_path / "models" / "older", (tiny_models / OUR_MODEL / "model.tflite").read_bytes())
    assert "shortcuts" not in json.loads((folder / "model_card.json").read_text())
    markdown = _text(_page(folder.parent, tmp_path, monkeypatch).markdown)
    assert NO_SHORTCUT_FIGURES in markdown
    assert "Colour-robust test accuracy" not in markdown and "Colour alone" not in markdown


def _shortcut_figures_page(shortcuts: dict) -> None:
    from edge_app.components import shortcut_figures

    shortcut_figures(shortcuts)


def test_colour_robust_figures_fall_back_to_the_float_model() -> None:
    """A card whose int8 model was not measured on colour-standardised images: the float model's figures."""
    from streamlit.testing.v1 import AppTest

    shortcuts = shortcuts_section(int8=False)
    del shortcuts["baselines"]["colour"]  # and one without the colour baseline: no sentence about it
    app = AppTest.from_function(_shortcut_figures_page, args=(shortcuts,), default_timeout=30).run()
    assert not app.exception
    markdown = _text(app.markdown)
    assert "Colour-robust test accuracy 61.25%, macro-F1 0.543 (float model, 80 images" in markdown
    assert "the float model is right 61% of the time" in markdown
    assert "Colour alone" not in markdown and "colour-only baseline" not in markdown
