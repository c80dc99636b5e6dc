"""Choosing the default among candidate runs, on validation figures only: ``python -m train.choose RUN [RUN ...]``.

docs/training.md writes the rules down before any candidate's test figures are read; this command computes
every figure they read, the same way for every candidate, from each run's own model and manifest:
- val macro-F1 as is, and with each image's colour standardised to the run's training target
  (``smearscope_core.colour``: the colour-robust figure);
- the raw model's malignant sensitivity and specificity on the validation split as each simulated other
  microscope (``train.microscopes``) would show it;
- a paired comparison with the incumbent (``paired_comparison``): over every malignant val image under every
  simulated microscope, how many only the challenger catches and how many only the incumbent does, with
  McNemar's exact p-value.
The first run named is the incumbent; the later ones are challengers. Every rule starts from the same three
conditions: the challenger qualifies (colour-robust val macro-F1 within ``QUALIFY_GAP`` of its val macro-F1),
its val macro-F1 is at least ``MIN_VAL_MACRO_F1`` and its val malignant specificity as is at least
``MIN_VAL_SPECIFICITY``. ``RULES`` holds what each round added, so every documented outcome can be rerun:
- ``lowest-microscope`` (rounds 3 and 4, 2026-12-07): its lowest simulated-microscope val sensitivity is higher
  than the incumbent's; among several, the highest such sensitivity;
- ``paired`` (round 5, 2026-12-07, the default; written before that round's figures were read): it catches more
  malignant val images under the simulated microscopes than the incumbent, image by image (pooled over all four:
  a difference of a few images shows there, where the hardest microscope alone cannot rank it), while under no
  microscope its val sensitivity falls more than ``MAX_MICROSCOPE_SENSITIVITY_LOSS`` or its val specificity
  more than ``MAX_MICROSCOPE_SPECIFICITY_LOSS`` below the incumbent's (no trading one lab for another, and
  no paler stain turned malignant); among several, the largest net gain, then the best val macro-F1.
The run this command chooses is not yet the default: converted, it must also pass the ship check through the app
on the validation split (``python -m bench.outoflab --split val --no-external --bundle DEFAULT --bundle NEW``:
no more ALL images answered benign without a referral than the default; docs/training.md, fifth round).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from smearscope_core.calibration import softmax
from smearscope_core.colour import colour_target
from smearscope_core.paths import DEFAULT_DATASET
from train.metrics import classification_metrics
from train.run_folder import read_run_splits
from train.shortcuts import colour_robust, simulated_microscopes, summary

QUALIFY_GAP = 0.01
MIN_VAL_MACRO_F1 = 0.985
MIN_VAL_SPECIFICITY = 0.98  # issue 16's specificity target, on validation (72 benign images: at most one error)
MAX_MICROSCOPE_SENSITIVITY_LOSS = 0.01  # about 4 of 388 malignant val images
MAX_MICROSCOPE_SPECIFICITY_LOSS = 0.07  # 5 of 72 benign val images


def validation_figures(run: Path, data: Path) -> dict:
    """The figures the rule reads, for one run folder (validation split only)."""
    from train.model import load_float_model, predict_logits

    card, splits = read_run_splits(run, data)
    names = [c["name"] for c in card["classes"]]
    malignant = [bool(c["malignant"]) for c in card["classes"]]
    temperature = float(card["calibration"]["temperature"])
    logits_of = partial(predict_logits, load_float_model(run / "model.keras"))
    val = splits["val"]
    as_is = summary(classification_metrics(val.labels, softmax(logits_of(val.images), temperature), names, malignant))
    robust = colour_robust(logits_of, val, colour_target(splits["train"].images), temperature, names, malignant)
    predictions: dict[str, np.ndarray] = {}
    microscopes = simulated_microscopes(logits_of, val, names, malignant, predictions)
    sensitivities = {name: figures["sensitivity"] for name, figures in microscopes.items()}
    specificities = {name: figures["specificity"] for name, figures in microscopes.items()}
    is_malignant = np.asarray(malignant)
    positive = is_malignant[val.labels]
    caught = np.concatenate([is_malignant[predictions[name]][positive] for name in sorted(predictions)])
    return {
        "run": str(run),
        "val_macro_f1": as_is["macro_f1"],
        "val_specificity": as_is["specificity"],
        "val_colour_robust_macro_f1": robust["macro_f1"],
        "qualifies": as_is["macro_f1"] - robust["macro_f1"] <= QUALIFY_GAP,
        "val_microscope_sensitivity": sensitivities,
        "lowest_microscope_sensitivity": min(sensitivities.values()),
        "val_microscope_specificity": specificities,
        "val_microscope_caught": caught.astype(int).tolist(),  # malignant val images x microscopes, sorted by name
    }


def paired_comparison(incumbent: dict, challenger: dict) -> dict:
    """Malignant val images (under every simulated microscope) that only one of the two catches, and McNemar's
    exact p-value: how likely a split this uneven is when the two models are equally good."""
    a = np.asarray(incumbent["val_microscope_caught"], dtype=bool)
    b = np.asarray(challenger["val_microscope_caught"], dtype=bool)
    if a.shape != b.shape:
        raise ValueError("The runs were not scored on the same validation images; compare runs of one manifest.")
    only_challenger, only_incumbent = int((b & ~a).sum()), int((a & ~b).sum())
    discordant = only_challenger + only_incumbent
    p_value = binomtest(only_challenger, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_challenger": only_challenger, "only_incumbent": only_incumbent, "p_value": float(p_value)}


def _passes_common(challenger: dict) -> bool:
    """The three conditions every round's rule starts from."""
    return (
        challenger["qualifies"]
        and challenger["val_macro_f1"] >= MIN_VAL_MACRO_F1
        and (challenger["val_specificity"] is None or challenger["val_specificity"] >= MIN_VAL_SPECIFICITY)
    )


def _lowest_microscope(incumbent: dict, challengers: list[dict]) -> dict:
    passing = [
        c for c in challengers if c["lowest_microscope_sensitivity"] > incumbent["lowest_microscope_sensitivity"]
    ]
    return max(passing, key=lambda c: c["lowest_microscope_sensitivity"]) if passing else incumbent


def _no_microscope_worse(incumbent: dict, challenger: dict) -> bool:
    """Under every simulated microscope, the challenger's val sensitivity and specificity within their margins of
    the incumbent's (a figure without images to measure, None, is not compared)."""
    for figure, margin in (
        ("sensitivity", MAX_MICROSCOPE_SENSITIVITY_LOSS),
        ("specificity", MAX_MICROSCOPE_SPECIFICITY_LOSS),
    ):
        theirs = challenger[f"val_microscope_{figure}"]
        for name, ours in incumbent[f"val_microscope_{figure}"].items():
            if ours is not None and theirs[name] is not None and theirs[name] < ours - margin:
                return False
    return True


def _paired(incumbent: dict, challengers: list[dict]) -> dict:
    gains = []
    for c in challengers:
        paired = paired_comparison(incumbent, c)
        gains.append((paired["only_challenger"] - paired["only_incumbent"], c))
    passing = [(gain, c) for gain, c in gains if gain > 0 and _no_microscope_worse(incumbent, c)]
    return max(passing, key=lambda pair: (pair[0], pair[1]["val_macro_f1"]))[1] if passing else incumbent


# The rules a choice can be made by (--rule): what each round added to the three common conditions.
RULES = {"lowest-microscope": _lowest_microscope, "paired": _paired}
DEFAULT_RULE = "paired"


def choose(candidates: list[dict], rule: str = DEFAULT_RULE) -> dict:
    """The incumbent (first) unless a challenger passes every condition of ``rule``; see the module docstring."""
    incumbent, *challengers = candidates
    return RULES[rule](incumbent, [c for c in challengers if _passes_common(c)])


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.choose", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders: the incumbent first, then challengers")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="the dataset the runs were trained on")
    parser.add_argument("--rule", choices=sorted(RULES), default=DEFAULT_RULE, help="the round's rule (docstring)")
    parser.add_argument("--json", type=Path, help="also write the figures and the choice to this file")
    args = parser.parse_args(argv)
    candidates = [validation_figures(run, args.data) for run in args.runs]
    chosen = choose(candidates, args.rule)
    for c in candidates:
        scopes = ", ".join(
            f"{name} {value:.3f} / {_figure(c['val_microscope_specificity'][name])}"
            for name, value in c["val_microscope_sensitivity"].items()
        )
        print(
            f"{c['run']}: val macro-F1 {c['val_macro_f1']:.4f}, specificity {_figure(c['val_specificity'])},"
            f" colour-robust {c['val_colour_robust_macro_f1']:.4f}"
            f" ({'qualifies' if c['qualifies'] else 'does not qualify'}); val sensitivity / specificity on simulated"
            " microscopes:"
            f" {scopes}; lowest {c['lowest_microscope_sensitivity']:.3f}"
        )
    for c in candidates[1:]:
        paired = paired_comparison(candidates[0], c)
        print(
            f"{c['run']} against {candidates[0]['run']}, malignant val images under the simulated microscopes: "
            f"{paired['only_challenger']} caught by the challenger only, {paired['only_incumbent']} by the "
            f"incumbent only (McNemar exact p = {paired['p_value']:.3f})"
        )
    print(f"chosen by the {args.rule} rule: {chosen['run']}")
    if args.json:
        args.json.write_text(
            json.dumps({"candidates": candidates, "rule": args.rule, "chosen": chosen["run"]}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
