"""The rule that chooses the default among candidate runs (train/choose.py), on made-up validation figures."""

import pytest

from train.choose import choose, paired_comparison


def candidate(run: str, f1: float, robust: float, lowest: float, specificity: float | None = 1.0) -> dict:
    return {"run": run, "val_macro_f1": f1, "val_colour_robust_macro_f1": robust, "qualifies": f1 - robust <= 0.01,
            "lowest_microscope_sensitivity": lowest, "val_specificity": specificity}  # fmt: skip


def test_lowest_microscope_rule_of_rounds_3_and_4():
    def pick(*challengers: dict) -> str:
        return choose([candidate("B", 0.9895, 0.9850, 0.941), *challengers], "lowest-microscope")["run"]

    assert pick(candidate("D", 0.988, 0.985, 0.975)) == "D"
    assert pick(candidate("D", 0.984, 0.980, 0.990)) == "B"  # val macro-F1 below 0.985
    assert pick(candidate("D", 0.995, 0.970, 0.990)) == "B"  # colour-robust gap 0.025
    assert pick(candidate("D", 0.995, 0.990, 0.941)) == "B"  # not better under the microscopes
    assert pick(candidate("D", 0.988, 0.985, 0.975, 0.972)) == "B"  # two benign val errors
    assert pick(candidate("D", 0.988, 0.985, 0.975, 0.986)) == "D"  # one is allowed
    assert pick(candidate("D", 0.988, 0.985, 0.975, None)) == "D"  # no benign class
    assert pick(candidate("D", 0.988, 0.985, 0.960), candidate("E", 0.986, 0.985, 0.980)) == "E"


def scoped(run: str, caught: list[int], sensitivity: dict, specificity: dict, f1: float = 0.99) -> dict:
    """A candidate for the paired rule: which malignant val images it catches, and its figures per microscope."""
    return {**candidate(run, f1, f1, min(sensitivity.values())), "val_microscope_caught": caught,
            "val_microscope_sensitivity": sensitivity, "val_microscope_specificity": specificity}  # fmt: skip


def test_paired_rule_of_round_5_wants_more_images_caught_and_no_microscope_worse():
    incumbent = scoped("B", [1, 1, 0, 0, 1, 0, 1, 1], {"weak": 0.99, "zoom": 0.96}, {"weak": 0.94, "zoom": 0.99})

    def pick(*challengers: dict) -> str:
        return choose([incumbent, *challengers])["run"]

    gains = [1, 1, 1, 1, 1, 0, 1, 1]  # two more caught, none lost
    assert pick(scoped("J", gains, {"weak": 0.99, "zoom": 0.97}, {"weak": 0.94, "zoom": 0.99})) == "J"
    # a microscope's sensitivity or specificity may fall within the margins (0.01; 0.07), not beyond
    assert pick(scoped("J", gains, {"weak": 0.981, "zoom": 0.99}, {"weak": 0.875, "zoom": 0.99})) == "J"
    assert pick(scoped("J", gains, {"weak": 0.975, "zoom": 0.99}, {"weak": 0.94, "zoom": 0.99})) == "B"
    assert pick(scoped("J", gains, {"weak": 0.99, "zoom": 0.99}, {"weak": 0.65, "zoom": 0.99})) == "B"
    # as many lost as gained is no gain, whatever the hardest microscope says
    swapped = [1, 0, 1, 0, 1, 0, 1, 1]
    assert pick(scoped("J", swapped, {"weak": 0.99, "zoom": 0.99}, {"weak": 0.94, "zoom": 0.99})) == "B"
    # the three common conditions still hold: here val macro-F1 below 0.985
    assert pick(scoped("J", gains, {"weak": 0.99, "zoom": 0.97}, {"weak": 0.94, "zoom": 0.99}, f1=0.98)) == "B"
    # among several: the largest net gain, then the best val macro-F1
    one = [1, 1, 1, 0, 1, 0, 1, 1]
    figures = ({"weak": 0.99, "zoom": 0.97}, {"weak": 0.94, "zoom": 0.99})
    assert pick(scoped("J", one, *figures, f1=0.995), scoped("K", gains, *figures)) == "K"
    assert pick(scoped("J", gains, *figures, f1=0.995), scoped("K", gains, *figures)) == "J"


def test_paired_comparison_counts_the_images_only_one_model_catches() -> None:
    incumbent = {"val_microscope_caught": [1, 1, 0, 0, 1, 0, 1, 1]}
    challenger = {"val_microscope_caught": [1, 0, 1, 1, 1, 1, 1, 1]}
    paired = paired_comparison(incumbent, challenger)
    assert (paired["only_challenger"], paired["only_incumbent"]) == (3, 1)
    assert paired["p_value"] == pytest.approx(0.625)  # two-sided exact binomial, 3 of 4 discordant: 10/16
    assert paired_comparison(incumbent, incumbent) == {"only_challenger": 0, "only_incumbent": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same validation images"):
        paired_comparison(incumbent, {"val_microscope_caught": [1, 0]})
