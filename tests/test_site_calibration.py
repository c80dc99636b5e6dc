"""Site calibration (``python -m edge_app.calibrate``, edge_app/site_fit.py) and inference with a site bundle.

On a tiny int8 base bundle with a feature extractor (tests/site_factories.py) and synthetic sites whose classes
differ in cell colour and size (or do not): the command end to end in the app's environment without TensorFlow
($SMEARSCOPE_EDGE_PYTHON, this interpreter where it is not set), a site with the base model's class names and a
two-class site with its own classes.json; every gate refusal with its sentence (exit 1) and --force; bad input
(exit 2); the card against the schema; the app's core giving the calibration's own predictions on the site's
images; the base bundle's results unchanged; a changed or missing features.tflite refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app import calibrate
from edge_app.bundle import FORCED_WARNING, BundleError, load_bundle
from edge_app.screening import Screener
from edge_app.site_data import near_duplicate_groups, perceptual_hash
from edge_app.site_fit import (
    DEFAULT_MAPPING,
    REPORT_FILE,
    SiteCalibration,
    _Design,
    gate_reasons,
    stratified_group_folds,
)
from smearscope_core.calibration import softmax
from smearscope_core.errors import ExitCode
from smearscope_core.files import sha256_of
from smearscope_core.imaging import model_pixels
from smearscope_core.model_card import read_card, write_card
from tests.factories import PROJECT_ROOT, io_png, smear_like
from tests.site_factories import (
    ALIKE,
    BASE_NAMED,
    FEATURES_FILE,
    SEPARABLE,
    SITE_CLASSES_JSON,
    make_site,
    write_site_base,
)

EDGE_PYTHON = os.environ.get("SMEARSCOPE_EDGE_PYTHON") or sys.executable
NOT_ON_THIS_PATH = ("tensorflow", "keras", "train", "convert", "sklearn", "scipy", "streamlit")
# Runs the command as `python -m edge_app.calibrate ARGS` would, then says which forbidden packages got loaded.
WRAPPER = (
    "import runpy, sys\n"
    "sys.argv = ['edge_app.calibrate', *sys.argv[1:]]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('edge_app.calibrate', run_name='__main__', alter_sys=True)\n"
    "except SystemExit as done:\n"
    "    code = done.code\n"
    f"print('loaded:', sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_ON_THIS_PATH!r})))\n"
    "sys.exit(code)\n"
)


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([EDGE_PYTHON, "-c", WRAPPER, *map(str, args)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("site")


@pytest.fixture(scope="module")
def base(work: Path) -> Path:
    """The base bundle: logits + embedding model, features.tflite, colour_reference."""
    return write_site_base(work / "models" / "site-base", work)


@pytest.fixture(scope="module")
def separable(work: Path) -> Path:
    """blast (malignant) vs normal, 24 each, with classes.json; a broken file and a text file among them."""
    root = make_site(work / "two-class", SEPARABLE, 24, classes_json=SITE_CLASSES_JSON)
    (root / "blast" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "normal" / "notes.txt").write_text("taken on the clinic's microscope")
    return root


@pytest.fixture(scope="module")
def two_class_bundle(base: Path, separable: Path, work: Path) -> tuple[Path, subprocess.CompletedProcess]:
    out = work / "bundles" / "clinic-a"
    return out, run_cli(separable, "--base", base, "--out", out, "--name", "clinic-a")


@pytest.fixture(scope="module")
def alike(work: Path) -> Path:
    """Two classes drawn alike: no head can tell them apart."""
    return make_site(work / "alike", ALIKE, 22, seed=2, classes_json=SITE_CLASSES_JSON)


def files_sha(folder: Path) -> dict[str, str]:
    return {p.name: sha256_of(p) for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- the command end to end


def test_two_class_site_end_to_end_in_the_edge_environment(two_class_bundle: tuple, base: Path) -> None:
    out, done = two_class_bundle
    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    assert "loaded: []" in done.stdout, done.stdout  # no TensorFlow (nor training, conversion, Streamlit) loaded
    assert "48 images in 2 classes (blast 24 (malignant), normal 24)" in done.stdout
    assert "skipped: blast/broken.jpg is damaged or truncated and cannot be decoded" in done.stderr
    assert "skipped: normal/notes.txt is not an image file" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.tflite", FEATURES_FILE, "embedding_reference.npy", "model_card.json", REPORT_FILE]
    )
    for name in ("model.tflite", FEATURES_FILE):  # byte copies of the base's
        assert sha256_of(out / name) == sha256_of(base / name)
    card = read_card(out / "model_card.json")  # validates against the schema
    assert card["name"] == "clinic-a"
    assert [(c["name"], c["display_name"], c["malignant"], c["severity"]) for c in card["classes"]] == [
        ("blast", "Blast (site)", True, 3), ("normal", "Normal lymphocyte (site)", False, 0)]  # fmt: skip
    site = card["site"]
    assert site["base"] == {"name": "site-base", "model_sha256": sha256_of(base / "model.tflite"),
                            "card_sha256": sha256_of(base / "model_card.json")}  # fmt: skip
    assert site["data"]["images_per_class"] == {"blast": 24, "normal": 24}
    assert {s["path"] for s in site["data"]["skipped"]} == {"blast/broken.jpg", "normal/notes.txt"}
    assert site["gate"] == site["gate"] | {"passed": True, "forced": False, "reasons": []}
    assert site["colour_mapping"]["method"] == DEFAULT_MAPPING
    assert site["features"] == {"source": "features", "output": "features", "dimensions": 24}
    choice = site["validation"]["feature_source"]  # --features auto (the default) measured both, kept the better
    assert choice["asked"] == "auto" and set(choice["out_of_fold_macro_f1"]) == {"features", "embedding"}
    assert choice["out_of_fold_macro_f1"]["features"] >= choice["out_of_fold_macro_f1"]["embedding"]
    assert np.array(site["head"]["weights"]).shape == (2, 24)
    cv = site["validation"]["cross_validated"]
    assert cv["sensitivity"] >= 0.95 and cv["macro_f1"] >= 0.90
    assert [p["images_per_class"] for p in site["validation"]["learning_curve"]] == [5, 10, 20, 24]
    assert card["embedding_ood"]["output"] == "features" and card["embedding_ood"]["reference"]["rows"] == 48
    assert card["ood"]["field_scale"]["image_size"] == 48
    assert card["training"] == read_card(base / "model_card.json")["training"]  # the rest is the base's
    # the card round-trips: what is read is what is written, and validates again
    again = out.parent / "again.json"
    write_card(card, again)
    assert json.loads(again.read_text()) == card == json.loads((out / "model_card.json").read_text())
    report = (out / REPORT_FILE).read_text()
    assert "Gate passed" in report and "<svg" in report and "clinic-a" in report
    assert not any(word in report for word in ("http", "<script", "<link", "src=", "@import"))  # self-contained


def test_site_with_the_base_models_class_names(base: Path, work: Path, capsys: pytest.CaptureFixture) -> None:
    """Folders named like the base model's classes take their metadata; no classes.json needed."""
    site = make_site(work / "named", BASE_NAMED, 21, seed=1)
    out = work / "bundles" / "named"
    assert calibrate.main([str(site), "--base", str(base), "--out", str(out)]) == ExitCode.OK
    card = read_card(out / "model_card.json")
    assert [c["display_name"] for c in card["classes"]] == ["Benign", "Pre-B ALL", "Pro-B ALL"]
    assert card["name"] == "site-base-site-named"
    result = Screener(out).screen_bytes(io_png(smear_like(5, *BASE_NAMED["Pro"], 80)), "pro.png")
    assert [p.name for p in result.probabilities] == ["Benign", "Pre", "Pro"]
    assert result.model_name == "site-base-site-named" and result.warnings == []
    assert "fitted in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("features", "mapping", "head"),
    [("features", "reinhard-lab", "logistic"), ("embedding", "none", "lda"), ("features", "macenko", "lda")],
)
def test_the_app_applies_the_head_as_fitted(base: Path, separable: Path, work: Path, features: str, mapping: str,
                                            head: str) -> None:  # fmt: skip
    """The core (Screener on the written bundle) gives the calibration's own logits for every site image, and the
    heatmap explains that answer."""
    calibration = SiteCalibration(separable, load_bundle(base), features=features, mapping=mapping, head=head)
    fit = calibration.fit()
    assert fit.gate_passed, fit.gate_reasons
    out = calibration.write(work / "bundles" / f"{features}-{mapping}-{head}")
    screener = Screener(out)
    results = [screener.screen_bytes(image.path.read_bytes(), image.relative) for image in calibration.scan().images]
    logits = np.array([r.logits for r in results])
    np.testing.assert_allclose(logits, fit.logits, rtol=0, atol=1e-9)
    temperature = read_card(out / "model_card.json")["calibration"]["temperature"]
    probabilities = np.array([[p.probability for p in r.probabilities] for r in results])
    np.testing.assert_allclose(probabilities, softmax(fit.logits, temperature), atol=1e-12)
    assert [r.label for r in results] == [["blast", "normal"][i] for i in fit.logits.argmax(axis=1)]
    image = Image.open(calibration.scan().images[0].path)
    np.testing.assert_allclose(screener.classifier.logits(screener.pixels(image)), fit.logits[0], atol=1e-9)
    heatmap = screener.explain(image)
    assert heatmap.target_class == int(fit.logits[0].argmax())
    assert heatmap.heat.shape == (screener.classifier.input_size,) * 2


def test_base_bundle_results_are_unchanged(base: Path, work: Path, two_class_bundle: tuple) -> None:
    """The base path ignores the new card sections: the same bundle without features and colour_reference gives
    the same results, which are the model's own logits on the unmapped pixels; calibrating did not touch it."""
    before = files_sha(base)
    plain = work / "models" / "plain"
    shutil.copytree(base, plain)
    card = read_card(plain / "model_card.json")
    del card["features"], card["colour_reference"]
    write_card(card, plain / "model_card.json")
    (plain / FEATURES_FILE).unlink()
    with_features, without = Screener(base), Screener(plain)
    assert with_features.classifier.input_size == with_features.size == 48
    for seed in range(6):
        image = smear_like(300 + seed, *SEPARABLE["blast" if seed % 2 else "normal"], 80)
        a, b = with_features.screen_image(image, "x"), without.screen_image(image, "x")
        assert a.as_dict() | {"seconds": 0} == b.as_dict() | {"seconds": 0}
        assert a.logits == with_features.classifier.model.run(model_pixels(image, 48)).tolist()
        assert a.warnings == [] and "warnings" in a.as_dict()
    assert files_sha(base) == before


# ---------------------------------------------------------------- the gate


def test_gate_refuses_a_site_it_cannot_tell_apart(base: Path, alike: Path, work: Path) -> None:
    out = work / "bundles" / "alike"
    done = run_cli(alike, "--base", base, "--out", out)
    assert done.returncode == ExitCode.GATE_FAILED, done.stderr[-3000:]
    assert "loaded: []" in done.stdout
    refusals = [line for line in done.stderr.splitlines() if line.startswith("refused: ")]
    assert len(refusals) == 2, done.stderr
    assert "The cross-validated malignant sensitivity is " in refusals[0] and "below the 0.95" in refusals[0]
    assert "The cross-validated macro-F1 is " in refusals[1] and "below the 0.90" in refusals[1]
    assert not out.exists()
    report = (out.parent / f"alike-{REPORT_FILE}").read_text()
    assert "Gate failed" in report and "no bundle was written" in report


def test_force_writes_a_refused_bundle_whose_every_result_warns(base: Path, alike: Path, work: Path) -> None:
    out = work / "bundles" / "alike-forced"
    assert calibrate.main([str(alike), "--base", str(base), "--out", str(out), "--force"]) == ExitCode.OK
    gate = read_card(out / "model_card.json")["site"]["gate"]
    assert gate["passed"] is False and gate["forced"] is True and len(gate["reasons"]) == 2
    bundle = load_bundle(out)
    warning = FORCED_WARNING.format(name=bundle.name)
    assert bundle.warnings == [warning]
    result = Screener(bundle).screen_bytes(io_png(smear_like(7, *ALIKE["blast"], 80)), "a.png")
    assert result.warnings == [warning] and result.as_dict()["warnings"] == [warning]
    assert "written anyway (--force)" in (out / REPORT_FILE).read_text()


def test_gate_refuses_too_few_images(base: Path, work: Path, capsys: pytest.CaptureFixture) -> None:
    site = make_site(work / "small", SEPARABLE, {"blast": 12, "normal": 25}, seed=3, classes_json=SITE_CLASSES_JSON)
    out = work / "bundles" / "small"
    assert calibrate.main([str(site), "--base", str(base), "--out", str(out)]) == ExitCode.GATE_FAILED
    err = capsys.readouterr().err
    assert ("refused: The class 'blast' has 12 usable images; the gate needs at least 20 per class, so add at least "
            "8 more.") in err  # fmt: skip
    assert not [line for line in err.splitlines() if line.startswith("refused:") and "normal" in line]
    assert not out.exists()


def test_gate_sentences_and_the_learning_curves_advice() -> None:
    """Each reason alone, with how many more images per class a power law through the curve suggests."""
    good = {"sensitivity": 0.99, "macro_f1": 0.97}
    counts = {"blast": 40, "normal": 40}
    curve = [{"images_per_class": n, "sensitivity": 1 - 0.4 * n**-0.5, "macro_f1": 1 - 0.3 * n**-0.5}
             for n in (5, 10, 20, 40)]  # fmt: skip
    assert gate_reasons(counts, good, curve) == []
    (low_sensitivity,) = gate_reasons(counts, good | {"sensitivity": 0.93}, curve)
    # 1 - 0.4 n^-0.5 reaches 0.95 at n = 64: about 30 more than 40, rounded up to tens
    assert low_sensitivity == ("The cross-validated malignant sensitivity is 0.930, below the 0.95 the gate needs: the "
                               "learning curve suggests about 30 more images per class (about 70 in all).")  # fmt: skip
    (low_f1,) = gate_reasons(counts, good | {"macro_f1": 0.85}, curve)
    assert low_f1.startswith("The cross-validated macro-F1 is 0.850, below the 0.90 the gate needs: the learning "
                             "curve suggests about ")  # fmt: skip
    flat = [{"images_per_class": n, "sensitivity": 0.8, "macro_f1": 0.8} for n in (5, 10, 20, 40)]
    (stuck,) = gate_reasons(counts, good | {"sensitivity": 0.8}, flat)
    assert "too flat to say how many more images would help" in stuck
    assert len(gate_reasons({"blast": 19, "normal": 5}, good, curve)) == 2


# ---------------------------------------------------------------- bad input


def site_problem(base: Path, site: Path, tmp_path: Path, capsys: pytest.CaptureFixture, *options: str) -> str:
    assert calibrate.main([str(site), "--base", str(base), "--out", str(tmp_path / "out"), *options]) == 2
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


def test_bad_site_folders_get_one_sentence_each(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    assert site_problem(base, missing, tmp_path, capsys) == f"error: The site folder {missing} does not exist.\n"
    one = make_site(tmp_path / "one", {"blast": SEPARABLE["blast"]}, 3, classes_json=None)
    assert "needs one folder of images per class and at least two classes; it has 1 (blast)." in site_problem(
        base, one, tmp_path, capsys)  # fmt: skip
    empty = make_site(tmp_path / "empty", SEPARABLE, 6, classes_json=SITE_CLASSES_JSON)
    (empty / "lymphocyte").mkdir()
    json_text = SITE_CLASSES_JSON | {"classes": SITE_CLASSES_JSON["classes"] | {"lymphocyte": {"malignant": False}}}
    (empty / "classes.json").write_text(json.dumps(json_text))
    for name in ("a.png", "b.jpg"):
        (empty / "normal" / name).write_bytes(b"broken")
    for name in ("one.png", "two.png"):
        Image.new("RGB", (8, 8)).save(empty / "blast" / name)  # readable, but too small to be a smear photograph
    err = site_problem(base, empty, tmp_path, capsys)
    assert f"error: The class folder {empty / 'lymphocyte'} is empty." in err
    assert "skipped: normal/a.png is not an image this app can read" in err and "skipped: normal/b.jpg" in err
    assert "skipped: blast/one.png is too small (8 x 8 pixels; at least 32 needed)." in err
    assert err.count("error: ") == 1  # 6 readable images per class are enough to go on; one empty class is not
    shutil.rmtree(empty / "normal")
    (empty / "normal").mkdir()
    (empty / "normal" / "c.png").write_bytes(b"broken")
    assert f"The class folder {empty / 'normal'} has no readable images (1 files skipped)." in site_problem(
        base, empty, tmp_path, capsys)  # fmt: skip


def test_class_metadata_problems(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    unknown = make_site(tmp_path / "unknown", SEPARABLE, 6)
    err = site_problem(base, unknown, tmp_path, capsys)
    assert "The class folder 'blast' is not one of the base model's classes (Benign, Pre, Pro) and classes.json does "\
           'not say whether it is malignant: add "blast": {"malignant": true} (or false)' in err  # fmt: skip
    (unknown / "classes.json").write_text(json.dumps({"classes": {"blast": {"malignant": False},
                                                                  "normal": {"malignant": False}}}))  # fmt: skip
    assert "No class is marked malignant" in site_problem(base, unknown, tmp_path, capsys)
    (unknown / "classes.json").write_text("{not json")
    assert "cannot be read as JSON" in site_problem(base, unknown, tmp_path, capsys)
    few = make_site(tmp_path / "few", SEPARABLE, {"blast": 4, "normal": 6}, classes_json=SITE_CLASSES_JSON)
    assert "The class 'blast' has only 4 readable images; calibration needs at least 5 distinct images per class" in \
        site_problem(base, few, tmp_path, capsys)  # fmt: skip


def test_base_bundles_that_cannot_be_calibrated(base: Path, separable: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    older = tmp_path / "older"
    shutil.copytree(base, older)
    card = read_card(older / "model_card.json")
    del card["colour_reference"], card["features"]
    write_card(card, older / "model_card.json")
    err = site_problem(older, separable, tmp_path, capsys, "--features", "features")
    assert "has no feature extractor (features.tflite and the card's features section)" in err
    err = site_problem(older, separable, tmp_path, capsys, "--features", "embedding")
    assert "The base model card has no colour_reference section" in err
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code = calibrate.main([str(separable), "--base", str(base), "--out", str(out)])
    assert code == 2 and "already exists and is not empty" in capsys.readouterr().err


# ---------------------------------------------------------------- a site bundle's files


def test_a_changed_or_missing_feature_extractor_is_refused(two_class_bundle: tuple, tmp_path: Path) -> None:
    out, done = two_class_bundle
    assert done.returncode == 0
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    data = bytearray((changed / FEATURES_FILE).read_bytes())
    data[-100] ^= 0xFF
    (changed / FEATURES_FILE).write_bytes(bytes(data))
    changed_text = r"The feature extractor features\.tflite in .* does not match its card \(sha256 .*\): it was changed"
    with pytest.raises(BundleError, match=changed_text):
        load_bundle(changed)
    (changed / FEATURES_FILE).unlink()
    with pytest.raises(BundleError, match=r"has no features\.tflite, the feature extractor its card names"):
        Screener(changed)
    other = tmp_path / "other-model"
    shutil.copytree(out, other)
    card = read_card(other / "model_card.json")
    card["site"]["base"]["model_sha256"] = "0" * 64
    write_card(card, other / "model_card.json")
    with pytest.raises(BundleError, match="was made for another model"):
        load_bundle(other)


# ---------------------------------------------------------------- the numerical parts


def test_logistic_head_matches_scikit_learn() -> None:
    """The L-BFGS multinomial logistic regression is scikit-learn's (where it is installed: the dev environment)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    vectors = rng.normal(0, 0.5, (3, 200))[labels] + rng.normal(0, 1, (90, 200))
    design = _Design(vectors, labels, 3)
    head, _ = design.logistic(0.01)
    reference = linear_model.LogisticRegression(C=1 / (0.01 * 90), tol=1e-10, max_iter=10_000).fit(
        design.standard, labels)  # fmt: skip
    ours, theirs = head.logits(vectors), reference.decision_function(design.standard)
    np.testing.assert_allclose(ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=2e-3)


def test_folds_keep_near_duplicates_together_and_classes_balanced() -> None:
    images = [smear_like(i, (150, 60, 160), 6, 80) for i in range(6)]
    copies = [images[0].transpose(Image.Transpose.ROTATE_90), images[1].resize((96, 96))]
    hashes = np.stack([perceptual_hash(im) for im in images + copies])
    groups, crossing = near_duplicate_groups([str(i) for i in range(8)], hashes, np.array([0, 0, 0, 1, 1, 1, 1, 0]))
    assert groups[6] == groups[0] and groups[7] == groups[1] and len(set(groups.tolist())) == 6
    assert crossing == [(0, 6)]  # the rotated copy of a class-0 image filed under class 1
    labels = np.repeat([0, 1], 20)
    groups = np.arange(40) // 2  # pairs of near-duplicates
    folds = stratified_group_folds(labels, groups, 5)
    for group in range(20):
        assert len(set(folds[groups == group])) == 1
    for fold in range(5):
        assert np.bincount(labels[folds == fold], minlength=2).tolist() == [4, 4]
