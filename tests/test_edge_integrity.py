"""Model integrity and the models folder's boundary, in the core and on the page.

A bundle whose ``.tflite`` does not match its card's sha256, whose card is malformed, or whose card
names another number of classes than the model outputs is refused with one sentence, and the page
falls back to the default bundle and still screens. The selector offers only folders inside the
models folders, and a bundle's files cannot be links to files elsewhere on the computer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_app.bundle import BundleError, list_bundles, load_bundle
from edge_app.screening import Screener
from tests.factories import PROJECT_ROOT, io_png, smears, write_bundle


def tamper_model(folder: Path) -> None:
    data = bytearray((folder / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.tflite").write_bytes(bytes(data))


def card_not_json(folder: Path) -> None:
    (folder / "model_card.json").write_bytes(b"\x89PNG\r\n\x1a\n not a card at all \xff\xfe")


def card_with_fewer_classes(folder: Path) -> None:
    card = json.loads((folder / "model_card.json").read_text())
    card["classes"].pop()
    (folder / "model_card.json").write_text(json.dumps(card))


def garbage_model_with_matching_card(folder: Path) -> None:
    """Someone rewrote the card to match a file that is not a model: the runtime must refuse it."""
    garbage = b"TFL3" + os.urandom(4096)
    (folder / "model.tflite").write_bytes(garbage)
    card = json.loads((folder / "model_card.json").read_text())
    card["tflite"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    (folder / "model_card.json").write_text(json.dumps(card))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "tampered": (tamper_model, "does not match its card"),
    "not-json": (card_not_json, "is not valid JSON"),
    "class-count": (card_with_fewer_classes, "has 3 outputs but its card names 2 classes"),
    "not-a-model": (garbage_model_with_matching_card, "cannot be loaded by the runtime"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_bundles_are_refused_with_a_sentence(breakage: str, tmp_path: Path, tiny_tflite: bytes) -> None:
    folder = write_bundle(tmp_path / breakage, tiny_tflite)
    breaker, message = BREAKAGES[breakage]
    breaker(folder)
    with pytest.raises(BundleError, match=message) as refused:
        Screener(folder)
    assert str(folder) in str(refused.value) and "\n" not in str(refused.value)


def test_page_falls_back_to_the_default_bundle(
    tmp_path: Path, tiny_tflite: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each broken site bundle, chosen in the selector: its sentence in the sidebar, the default in use,
    and an upload still screened."""
    from streamlit.testing.v1 import AppTest

    default = write_bundle(tmp_path / "default-models" / "default", tiny_tflite, {"name": "the-default"})
    site = tmp_path / "site-models"
    for breakage, (breaker, _) in BREAKAGES.items():
        breaker(write_bundle(site / breakage, tiny_tflite, {"name": f"site-{breakage}"}))
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", default.parent)
    monkeypatch.setenv("SMEARSCOPE_MODELS", str(site))
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception
    selector = app.sidebar.selectbox[0]
    assert len(selector.options) == 1 + len(BREAKAGES)

    smear = io_png(smears(900, 1)[0])
    for breakage, (_, message) in BREAKAGES.items():
        label = next(option for option in selector.options if option.startswith(f"{breakage} ("))
        app.sidebar.selectbox[0].set_value(label).run()
        assert not app.exception
        errors = " ".join(e.value for e in app.sidebar.error)
        assert message in errors, errors
        assert any("Using default instead" in w.value for w in app.sidebar.warning)
        assert any("the-default" in m.value for m in app.markdown)  # the Model tab names the bundle in use
        app.file_uploader[0].set_value([(f"{breakage}.png", smear, "image/png")]).run()
        assert not app.exception
        verdicts = [a.value for a in (*app.warning, *app.success, *app.error)]
        assert any("Inconclusive - refer" in v or "confidence)" in v for v in verdicts), "no result card after fallback"


def test_selector_stays_inside_the_models_folder(tmp_path: Path, tiny_tflite: bytes) -> None:
    """A link out of the models folder is not offered, and a bundle whose files link elsewhere is refused."""
    models = tmp_path / "models"
    inside = write_bundle(models / "inside", tiny_tflite)
    outside = write_bundle(tmp_path / "elsewhere" / "secret", tiny_tflite)
    (models / "escape").symlink_to(outside, target_is_directory=True)
    assert list_bundles(models) == [inside]

    linked = models / "linked-files"
    linked.mkdir()
    (linked / "model.tflite").symlink_to(outside / "model.tflite")
    (linked / "model_card.json").write_bytes((outside / "model_card.json").read_bytes())
    assert linked in list_bundles(models)  # offered, as its folder is inside, but ...
    with pytest.raises(BundleError, match="is a link to a file outside it"):
        load_bundle(linked)  # ... its model file leads out of it: refused before it is read

    (linked / "model.tflite").unlink()
    (linked / "model.tflite").write_bytes((outside / "model.tflite").read_bytes())
    (linked / "model_card.json").unlink()
    (linked / "model_card.json").symlink_to(Path("..") / ".." / "elsewhere" / "secret" / "model_card.json")
    with pytest.raises(BundleError, match=r"model_card\.json is a link to a file outside it"):
        load_bundle(linked)


def test_a_bundles_html_gets_an_origin_of_its_own(
    tmp_path: Path, tiny_tflite: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift report shipped in a bundle is not covered by the model's sha256: the Model tab embeds it
    as a data: URL (an opaque origin, so its scripts cannot reach the app's page), and a report that
    is a link out of the bundle folder is not read at all."""
    from streamlit.testing.v1 import AppTest

    folder = write_bundle(tmp_path / "models" / "site", tiny_tflite)
    report = b"<html><body><script>parent.document.title = 'owned'</script>drift</body></html>"
    (folder / "drift_report.html").write_bytes(report)
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", folder.parent)
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SMEARSCOPE_MODELS", raising=False)
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception
    sources = [frame.proto.src for frame in app.get("iframe")]
    assert sources == ["data:text/html;base64," + base64.b64encode(report).decode()]

    outside = tmp_path / "elsewhere.html"
    outside.write_bytes(report)
    (folder / "drift_report.html").unlink()
    (folder / "drift_report.html").symlink_to(outside)
    app = AppTest.from_file(str(PROJECT_ROOT / "edge_app" / "app.py"), default_timeout=120).run()
    assert not app.exception and list(app.get("iframe")) == []
