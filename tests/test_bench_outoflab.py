"""``python -m bench.outoflab``: the shift table on synthetic images (zoom scales cells, a larger camera frame does
not change what the model sees, every shift gives an RGB image, non-smears are drawn, not taken), the counting and
the targets on made-up results, and the script on a few real test images (skipped where the dataset is absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.outoflab import (
    EXTERNAL,
    TARGETS,
    TOTAL,
    Tally,
    evaluate,
    main,
    markdown_table,
    scores,
    silent_benign,
    silent_benign_table,
)
from bench.shifts import AS_IS, GENERATED, GROUPS, MODEL, MUST_REFER, ORIGINAL, SCENES, SHIFTS, apply_shift
from edge_app.classify import Result
from smearscope_core.errors import ExitCode
from smearscope_core.imaging import model_pixels
from smearscope_core.paths import EXTERNAL_DEV_DATASET
from tests.factories import REAL_DATA, smear_like

SIZE = 128  # the default bundle's input size
BACKGROUND, INK = (235, 230, 240), (90, 40, 120)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def disc_diameter(image: Image.Image) -> int:
    """Width of the dark disc along the middle row."""
    pixels = np.asarray(image, dtype=np.float64).mean(axis=2)
    return int((pixels[image.height // 2] < np.mean([np.mean(BACKGROUND), np.mean(INK)])).sum())


@pytest.mark.parametrize(("name", "factor"), [("zoom 1.5x", 1.5), ("zoom 2x", 2.0), ("zoom 3x", 3.0)])
def test_zoom_enlarges_a_drawn_disc_by_its_factor(name: str, factor: float) -> None:
    field = Image.new("RGB", (224, 224), BACKGROUND)
    ImageDraw.Draw(field).ellipse((92, 92, 132, 132), fill=INK)  # diameter 41 at the centre
    zoomed = apply_shift(SHIFTS[name], field, SIZE, rng())
    assert zoomed.size == field.size
    assert disc_diameter(zoomed) == pytest.approx(factor * disc_diameter(field), rel=0.05)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_a_larger_camera_frame_leaves_the_model_pixels_nearly_as_they_were(factor: int) -> None:
    field = smear_like(3, (150, 60, 160), 14, 224)
    framed = apply_shift(SHIFTS[f"camera frame {factor}x"], field, SIZE, rng())
    assert framed.size == (224 * factor, 224 * factor)
    difference = np.abs(model_pixels(framed, SIZE).astype(int) - model_pixels(field, SIZE).astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 16


def test_flips_and_turns_move_pixels_and_change_nothing_else() -> None:
    field = smear_like(4, (150, 60, 160), 10, 96).crop((0, 0, 96, 64))  # not square: a turn swaps the sides
    pixels = np.asarray(field)
    turned = {f"turned {90 * k}": np.rot90(pixels, k) for k in (1, 2, 3)}
    expected = {"flipped left-right": pixels[:, ::-1], "flipped top-bottom": pixels[::-1], **turned}
    for name, want in expected.items():
        assert np.array_equal(np.asarray(apply_shift(SHIFTS[name], field, SIZE, rng())), want), name


def test_every_shift_gives_an_rgb_image_at_its_level() -> None:
    field = smear_like(5, (150, 60, 160), 10, 200).resize((200, 150))
    for name, shift in SHIFTS.items():
        shifted = apply_shift(shift, field, SIZE, rng())
        pixels = np.asarray(shifted)
        assert shifted.mode == "RGB" and pixels.dtype == np.uint8 and pixels.ndim == 3, name
        if shift.level == MODEL:
            assert shifted.size == (SIZE, SIZE), name
        elif shift.level == GENERATED:
            assert shifted.size == field.size, name
        elif shift.frame == 1.0:
            assert sorted(shifted.size) == sorted(field.size), name
        if name != AS_IS:
            assert not np.array_equal(model_pixels(shifted, SIZE), model_pixels(field, SIZE)), f"{name} changes nothing"
    assert np.array_equal(np.asarray(apply_shift(SHIFTS[AS_IS], field, SIZE, rng())), np.asarray(field))


def test_every_shift_has_a_group_and_every_group_has_shifts() -> None:
    assert {shift.group for shift in SHIFTS.values()} == set(GROUPS)
    assert {shift.level for shift in SHIFTS.values()} == {ORIGINAL, MODEL, GENERATED}
    generated = {shift.scene for shift in SHIFTS.values() if shift.level == GENERATED}
    assert generated == set(SCENES) and all(s.group == MUST_REFER for s in SHIFTS.values() if s.level == GENERATED)
    assert {t.group for t in TARGETS} == {*GROUPS, EXTERNAL}


def test_non_smears_are_drawn_from_the_seed_not_taken_from_the_image() -> None:
    one, other = smear_like(6, (150, 60, 160), 10, 120), smear_like(7, (60, 60, 170), 14, 120)
    for name, shift in SHIFTS.items():
        if shift.level != GENERATED:
            continue
        drawn = np.asarray(apply_shift(shift, one, SIZE, rng(1)))
        assert np.array_equal(drawn, np.asarray(apply_shift(shift, other, SIZE, rng(1)))), f"{name} uses the image"
        assert not np.array_equal(drawn, np.asarray(apply_shift(shift, one, SIZE, rng(2)))), f"{name} ignores the seed"
        assert drawn.shape == (120, 120, 3)


def result(label: str, confidence: float, malignant: bool, inconclusive: bool = False, **extra) -> Result:
    return Result(source="x", label=label, display_label=label, confidence=confidence, probabilities=[],
                  p_malignant=float(malignant), malignant=malignant, severity=int(malignant), severity_word="",
                  severity_colour="", description="", inconclusive=inconclusive,
                  reasons=["the model is unsure (top probability 0.40 < 0.50): review"] if inconclusive else [],
                  **extra)  # fmt: skip


def test_scores_include_energy_and_the_new_fields_once_filled() -> None:
    logits = [2.0, -1.0, 0.5, 0.0]
    found = scores(result("Early", 0.9, True, ood_distance=3.0, logits=logits), temperature=2.0)
    energy = -2.0 * math.log(sum(math.exp(v / 2.0) for v in logits))
    assert found == pytest.approx({"max_softmax": 0.1, "image_statistics": 3.0, "energy": energy})
    found = scores(result("Early", 0.9, True, feature_distance=7.0, scale_ratio=0.5), temperature=1.0)
    assert found == pytest.approx({"max_softmax": 0.1, "embedding": 7.0, "field_scale": math.log(2.0)})


def test_tally_counts_each_kind_of_answer() -> None:
    tally = Tally(frozenset({"Early", "Pre", "Pro"}))
    for answer, truth in [
        (result("Benign", 0.9, False), "Benign"),  # right
        (result("Benign", 0.95, False), "Pro"),  # ALL answered benign
        (result("Benign", 0.7, False), "Early"),  # ALL answered benign, less sure
        (result("Pre", 0.8, True), "Pro"),  # wrong subtype
        (result("Pro", 0.8, True), "Benign"),  # false alarm
        (result("Pro", 0.4, True, inconclusive=True), "Pro"),  # referred
        (result("Early", 0.9, True), None),  # an answer on a scene without a class
    ]:
        tally.add(answer, truth, f"file-{tally.n}.jpg", 1.0)
    summary = tally.summary()
    assert summary["n"] == 7 and summary["referred"] == 1 and summary["answered"] == 6
    assert summary["correct"] == 1 and summary["wrong_not_referred"] == 4  # 2 ALL benign, 1 false alarm, 1 scene
    assert summary["all_answered_benign"] == 2 and summary["all_answered_benign_worst"] == 0.95
    assert summary["all_answered_benign_files"] == ["file-1.jpg (0.950)", "file-2.jpg (0.700)"]
    assert summary["wrong_subtype"] == 1 and summary["benign_answered_all"] == 1
    assert summary["answered_accuracy"] == pytest.approx(1 / 6)
    assert summary["top_reasons"] == [["the model is unsure", 1]]


def test_targets_say_what_is_missed_and_by_how_much() -> None:
    def row(group: str, **figures) -> dict:
        base = {"n": 100, "referred_share": 0.0, "answered_accuracy": 1.0, "all_answered_benign": 0,
                "wrong_not_referred_share": 0.0, "answered_malignant": 0, "answered_benign_share": 0.0}  # fmt: skip
        return {"group": group, "bundles": {"b": base | figures}}

    rows = {"as is": row(AS_IS, referred_share=0.01, answered_accuracy=0.99),
            "turned": row("same smear", referred_share=0.05), "flipped": row("same smear", referred_share=0.02),
            "zoom a": row("zoom & other microscope", all_answered_benign=2, wrong_not_referred_share=0.03),
            "zoom b": row("zoom & other microscope", all_answered_benign=1),
            "blank": row(MUST_REFER, referred_share=0.9),
            "lab": row(EXTERNAL, referred_share=0.75, answered_benign_share=0.25)}  # fmt: skip
    found = {(t["group"], t["target"]): t for t in evaluate(rows, "b")}
    assert len(found) == len(TARGETS)
    assert found[(AS_IS, "referred <= 2%")]["met"] is True
    accuracy = found[(AS_IS, "accuracy of answered >= 0.995")]
    assert accuracy["met"] is False and accuracy["missed_by"] == pytest.approx(0.005)
    same = found[("same smear", "referred <= 3%")]
    assert same["worst_row"] == "turned" and same["missed_by_shown"] == "2.0 points"
    assert same["failing"] == ["turned (5.0%)"]
    benign = found[("zoom & other microscope", "no ALL answered benign")]
    assert (benign["worst_row"], benign["worst"], benign["missed_by_shown"]) == (TOTAL, 3, "3 images")
    assert found[(MUST_REFER, "referred >= 99%")]["missed_by_shown"] == "9.0 points"
    external = found[(EXTERNAL, "0 confident malignant")]
    assert external["met"] is True and external["note"] == "lab: referred 75.0%, benign 25.0%"


def test_ship_check_counts_silent_benign_answers_on_all_over_its_groups_only() -> None:
    malignant = frozenset({"Early", "Pre", "Pro"})
    groups = {"as is": AS_IS, "turned": "same smear", "blur": "zoom & other microscope", "hue": MUST_REFER}
    tallies = {row: {"B": Tally(malignant), "J": Tally(malignant)} for row in groups}

    def answer(row: str, bundle: str, name: str, label: str = "Benign", truth: str = "Early") -> None:
        tallies[row][bundle].add(result(label, 0.97, label != "Benign"), truth, name, 1.0)

    answer("as is", "B", "Early-1.jpg")
    answer("turned", "B", "Early-1.jpg")  # the same image under another row: one more image-row, not a new image
    answer("as is", "J", "Early-1.jpg")
    answer("blur", "J", "Early-2.jpg")
    answer("blur", "J", "Pre-3.jpg", truth="Pre")
    answer("hue", "B", "Early-4.jpg")  # a must-refer row: counted by its own target, not by the ship check
    answer("hue", "B", "Early-5.jpg")
    answer("as is", "J", "Benign-6.jpg", truth="Benign")  # right, and a benign image: not counted
    answer("turned", "J", "Pro-7.jpg", label="Pre", truth="Pro")  # another subtype: the lesser error
    found = silent_benign(tallies, groups)
    assert found["incumbent"] == "B"
    assert found["bundles"]["B"] == {"image_rows": 2, "distinct_images": 1}
    assert found["bundles"]["J"] == {"image_rows": 3, "distinct_images": 3, "passes_ship_check": False}
    assert "| `J` | 3 | 3 | **fails** |" in silent_benign_table(found)
    tallies["blur"]["J"] = Tally(malignant)  # without its blur misses J has as many as B: it passes
    assert silent_benign(tallies, groups)["bundles"]["J"]["passes_ship_check"] is True


def test_missing_dataset_or_bundle_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--data", str(tmp_path / "absent"), "--no-external"]) == ExitCode.BAD_INPUT
    assert main(["--data", str(tmp_path), "--manifest", str(tmp_path / "none.csv")]) == ExitCode.BAD_INPUT
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "absent does not exist" in errors[0] and "none.csv does not exist" in errors[1]


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)")
def test_real_test_split_through_every_shift(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--limit", "6", "--out", str(tmp_path)]) == ExitCode.OK
    [json_file] = tmp_path.glob("*-outoflab-limit6.json")
    results = json.loads(json_file.read_text())
    table = Path(f"{str(json_file)[: -len('.json')]}.md").read_text()
    assert table == markdown_table(results) and table in capsys.readouterr().out
    [key] = results["bundles"]
    assert results["split"] == "test" and results["images"] == 6
    assert results["bundles"][key]["manifest_matches"] is True
    external = [name for name, row in results["rows"].items() if row["group"] == EXTERNAL]
    if EXTERNAL_DEV_DATASET.is_dir():
        assert external == ["external: BCCD", "external: PBC"] and not results["unreadable"]
    assert list(results["rows"]) == [*SHIFTS, *external]
    for name, row in results["rows"].items():
        figures = row["bundles"][key]
        assert figures["n"] == (6 if name in SHIFTS else figures["n"]) and figures["n"] > 0, name
        assert figures["referred"] + figures["answered"] == figures["n"], name
        assert figures["correct"] + figures["wrong_not_referred"] + figures["wrong_subtype"] == figures["answered"]
        assert figures["all_answered_benign"] + figures["benign_answered_all"] <= figures["wrong_not_referred"]
    assert [(t["group"], t["target"]) for t in results["targets"][key]] == [(t.group, t.text) for t in TARGETS]
    silent = results["silent_benign"]["bundles"][key]
    assert silent["image_rows"] == sum(row["bundles"][key]["all_answered_benign"] for row in results["rows"].values()
                                       if row["group"] in results["silent_benign"]["groups"])  # fmt: skip
    assert silent["distinct_images"] <= min(silent["image_rows"], 6) and "passes_ship_check" not in silent
    for target in results["targets"][key]:
        measured = target["group"] != EXTERNAL or external
        assert target["met"] in ((True, False) if measured else (None,)), target
    auroc = results["auroc"][key]
    assert set(auroc) == set(results["rows"]) - {AS_IS}
    assert all(0.0 <= auroc[name][score] <= 1.0 for name in auroc for score in ("image_statistics", "max_softmax",
                                                                                 "energy"))  # fmt: skip
    assert auroc["noise"]["image_statistics"] == 1.0  # the image checks tell noise from a smear
    for heading in ("### Answers per shift", "### Targets (issue 11, section 5)", "### AUROC"):
        assert heading in table
