"""The model card: schema round trip, and rejection of broken cards."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from smearscope_core.model_card import SCHEMA_VERSION, ModelCardError, read_card, validate_card, write_card


def valid_card() -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "test-model",
        "created": "2026-11-24T10:00:00+00:00",
        "classes": [
            {"id": 0, "name": "Benign", "display_name": "Benign", "malignant": False, "severity": 0, "description": ""},
            {"id": 1, "name": "Pro", "display_name": "Pro-B ALL", "malignant": True, "severity": 3, "description": "x"},
        ],
        "input": {
            "height": 128,
            "width": 128,
            "channels": 3,
            "color_order": "RGB",
            "pixel_range": [0, 255],
            "dtype": "float32",
        },
        "preprocessing": {
            "crop": "center_square",
            "interpolation": "bilinear",
            "antialias": True,
            "exif_transpose": True,
            "normalization": "inside the model",
        },
        "output": {"kind": "logits", "probabilities": "softmax(logits / T)"},
        "training": {
            "architecture": "MobileNetV3Small",
            "image_size": 128,
            "epochs_run": 3,
            "seed": 1,
            "dataset": {
                "name": "d",
                "citation": ["c"],
                "manifest_sha256": "a" * 64,
                "split_counts": {"train": {"Benign": 3}, "val": {"Benign": 1}, "test": {"Benign": 1}},
            },
        },
        "metrics": {
            "float_test": {
                "n": 5,
                "accuracy": 0.8,
                "macro": {"precision": 1, "recall": 1, "f1": 1},
                "confusion_matrix": {},
            }
        },
        "calibration": {"temperature": 1.3, "abstain_threshold": 0.6, "fitted_on": "val"},
        "added_by_a_later_stage": {"anything": True},
    }


def test_round_trip(tmp_path: Path) -> None:
    card = valid_card()
    write_card(card, tmp_path / "model_card.json")
    assert read_card(tmp_path / "model_card.json") == card


def _without(card: dict, *path: str) -> dict:
    broken = copy.deepcopy(card)
    target = broken
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return broken


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda c: _without(c, "classes"), "(top level)"),
        (lambda c: _without(c, "calibration", "temperature"), "calibration"),
        (lambda c: {**c, "schema_version": "2.0"}, "schema_version"),
        (lambda c: {**c, "classes": [c["classes"][0]]}, "classes"),
        (lambda c: {**c, "calibration": {**c["calibration"], "temperature": -1}}, "calibration/temperature"),
        (lambda c: {**c, "classes": [c["classes"][0], {**c["classes"][1], "severity": 9}]}, "classes/1/severity"),
        (lambda c: {**c, "classes": [c["classes"][0], {**c["classes"][1], "malignant": "yes"}]}, "classes/1/malignant"),
        (lambda c: {**c, "input": {**c["input"], "channels": 1}}, "input/channels"),
    ],
)
def test_broken_cards_are_refused_with_the_field_named(mutate, where: str) -> None:
    with pytest.raises(ModelCardError, match=re.escape(f"field {where}")):
        validate_card(mutate(valid_card()))


def test_class_ids_must_be_in_order() -> None:
    card = valid_card()
    card["classes"][0]["id"], card["classes"][1]["id"] = 1, 0
    with pytest.raises(ModelCardError, match="numbered"):
        validate_card(card)


def test_unreadable_cards(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="no model card"):
        read_card(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        read_card(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ModelCardError, match="JSON object"):
        read_card(tmp_path / "list.json")
