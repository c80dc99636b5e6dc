"""The model card: schema round trip, and rejection of broken cards."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from smearscope_core.model_card import ModelCardError, read_card, validate_card, write_card
from tests.factories import valid_card


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
