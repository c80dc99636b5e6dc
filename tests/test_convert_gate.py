"""The release gate (convert/gate.py), on crafted drift figures."""

from __future__ import annotations

import re

import pytest

from convert.gate import Thresholds, evaluate
from tests.factories import crafted_drift


def test_gate_passes_within_the_default_thresholds() -> None:
    drift = crafted_drift(0.995, (0.95, 0.945), {"Benign": (0.96, 0.945), "Pro": (0.94, 0.95)})
    result = evaluate(drift, Thresholds())
    assert result.passed
    assert result.sentence.startswith("Gate passed:") and result.sentence.count(".") <= 8
    assert all(check["passed"] for check in result.checks)


def test_gate_thresholds_met_exactly_pass() -> None:
    # 0.99 agreement, a 1.00-point accuracy drop and a 2.00-point recall drop are all allowed
    drift = crafted_drift(0.99, (0.96, 0.95), {"Benign": (0.97, 0.95), "Pro": (0.9, 0.9)})
    assert evaluate(drift, Thresholds()).passed


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (
            crafted_drift(agreement=0.9825),
            r"^Gate failed: top-1 agreement is 98\.25% \(7 of 400 test images disagree\), below the 99\.00% "
            r"minimum \(--min-agreement\)\.$",
        ),
        (
            crafted_drift(accuracy=(0.95, 0.935)),
            r"^Gate failed: accuracy dropped 1\.50 points \(95\.00% float, 93\.50% int8\), more than the 1\.00 "
            r"allowed \(--max-accuracy-drop\)\.$",
        ),
        (
            crafted_drift(recalls={"Benign": (0.96, 0.96), "Pro": (0.94, 0.91)}),
            r"^Gate failed: Pro recall dropped 3\.00 points \(94\.00% float, 91\.00% int8\), more than the 2\.00 "
            r"allowed \(--max-recall-drop\)\.$",
        ),
    ],
)
def test_gate_fails_with_one_sentence_naming_the_threshold(drift: dict, expected: str) -> None:
    result = evaluate(drift, Thresholds())
    assert not result.passed
    assert re.match(expected, result.sentence), result.sentence


def test_gate_names_every_broken_threshold_in_one_sentence() -> None:
    drift = crafted_drift(0.9, (0.95, 0.9), {"Benign": (0.96, 0.90), "Pro": (0.94, 0.94)})
    sentence = evaluate(drift, Thresholds()).sentence
    assert sentence.startswith("Gate failed:") and sentence.endswith(".") and "\n" not in sentence
    for flag in ("--min-agreement", "--max-accuracy-drop", "--max-recall-drop"):
        assert flag in sentence
    assert "Pro recall" not in sentence  # only the broken class is named


def test_gate_thresholds_are_configurable() -> None:
    drift = crafted_drift(0.97, (0.95, 0.93), {"Benign": (0.96, 0.93)})
    assert not evaluate(drift, Thresholds()).passed
    assert evaluate(drift, Thresholds(96.0, 2.5, 3.5)).passed


def test_gate_fails_on_float_ops_unless_they_are_allowed() -> None:
    problem = "the model is not integer-only: 2 ops run in float (CONV_2D), and float ops were not allowed"
    failed = evaluate(crafted_drift(), Thresholds(), problem, allow_float_ops=False, integer_only=False)
    assert not failed.passed and failed.sentence == f"Gate failed: {problem}."
    allowed = evaluate(crafted_drift(), Thresholds(), None, allow_float_ops=True, integer_only=False)
    assert allowed.passed and "NOT integer-only" in allowed.sentence
