"""The rule that chooses the default among candidate runs (train/choose.py), on made-up validation figures."""

from train.choose import choose


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
