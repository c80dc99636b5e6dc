"""``python -m bench.field_scale`` fits the check at the input side of the run it measures, not a fixed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.field_scale import parse_args
from smearscope_core.files import CARD_FILE

DEFAULT_RUN = Path(__file__).resolve().parents[1] / "runs" / "default"


def test_the_size_defaults_to_the_committed_runs_input_side() -> None:
    card = json.loads((DEFAULT_RUN / CARD_FILE).read_text())
    assert parse_args([]).size == card["input"]["height"]
    assert parse_args(["--size", "96"]).size == 96


def test_without_a_card_beside_the_manifest_the_size_must_be_given(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("")
    with pytest.raises(SystemExit) as raised:
        parse_args(["--manifest", str(manifest)])
    assert raised.value.code == 2
    assert "--size is needed" in capsys.readouterr().err
    assert parse_args(["--manifest", str(manifest), "--size", "128"]).size == 128
