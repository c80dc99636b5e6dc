"""The rule that chooses the default among candidate runs (train/choose.py), on made-up validation figures."""

import pytest

from train.choose import choose, paired_comparison


def candidate(run: str, f1: float, robust: float, lowest: float, specificity: float | None = 1.0) -> dict:
    return {"run": run, "val_macro_f1": f1, "val_colour_robust_macro_f1": robust, "qualifies": f1 - robust <= 0.01,
            "lowest_microscope_sensitivity": lowest, "val_specificity": specificity}  # fmt: skip


def test_a_challenger_replaces_the_incumbent_only_when_every_condition_holds():
    incumbent = candidate("B", 0.9895, 0.9850, 0.941)
    assert choose([incumbent, candidate("D", 0.988, 0.985, 0.975)])["run"] == "D"
    assert choose([incumbent, candidate("D", 0.984, 0.980, 0.990)])["run"] == "B"  # val macro-F1 below 0.985
    assert choose([incumbent, candidate("D", 0.995, 0.970, 0.990)])["run"] == "B"  # colour-robust gap 0.025
    assert choose([incumbent, candidate("D", 0.995, 0.990, 0.941)])["run"] == "B"  # not better under the microscopes
    assert choose([incumbent, candidate("D", 0.988, 0.985, 0.975, 0.972)])["run"] == "B"  # two benign val errors
    assert choose([incumbent, candidate("D", 0.988, 0.985, 0.975, 0.986)])["run"] == "D"  # one is allowed
    assert choose([incumbent, candidate("D", 0.988, 0.985, 0.975, None)])["run"] == "D"  # no benign class
    best = choose([incumbent, candidate("D", 0.988, 0.985, 0.960), candidate("E", 0.986, 0.985, 0.980)])
    assert best["run"] == "E"


def test_paired_comparison_counts_the_images_only_one_model_catches() -> None:
    incumbent = {"val_microscope_caught": [1, 1, 0, 0, 1, 0, 1, 1]}
    challenger = {"val_microscope_caught": [1, 0, 1, 1, 1, 1, 1, 1]}
    paired = paired_comparison(incumbent, challenger)
    assert (paired["only_challenger"], paired["only_incumbent"]) == (3, 1)
    assert paired["p_value"] == pytest.approx(0.625)  # two-sided exact binomial, 3 of 4 discordant: 10/16
    assert paired_comparison(incumbent, incumbent) == {"only_challenger": 0, "only_incumbent": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same validation images"):
        paired_comparison(incumbent, {"val_microscope_caught": [1, 0]})
