"""``python -m bench.outoflab``: the app's answers on the real test images changed as other labs would change them.

Every image of the manifest's test split (``--split val``: the validation split) goes through every shift
of bench/shifts.py (zoom, camera frame, flips and turns, JPEG, simulated other microscopes, stain and hue,
blur, dark, grayscale, generated non-smears) and then through the app's own ``Screener.screen_image`` (the
same image checks and refer rules as the page). The normal blood cells from two other labs under
../shared/datasets/external-dev are screened as files (bench/external.py's folder walk), one row per lab.

Per row and bundle: referred share, accuracy of the answered images, wrong answers not referred, ALL images
answered benign (with the worst confidence) and, a lesser error, ALL answered as another ALL subtype. Each
score a Result carries (image statistics, max softmax, energy from the logits, and the embedding distance
and field scale once the app fills them) is compared between the unchanged test images and each row by
AUROC. The targets of issue 11 (section 5) are evaluated per group, with how far a missed one is off. The ship
check of a new default (docs/training.md, fifth round) sums, per bundle, the ALL images answered benign without
a referral over the as-is, same-smear and other-microscope rows; the first ``--bundle`` is the incumbent.

Writes bench/results/<date>-<host>-outoflab.{json,md} and prints the Markdown. Needs .venv (scikit-learn).
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench.external import add_bundle_options, image_folders, load_screeners, parse_bundle_options, reason_kind
from bench.measure import PROJECT_ROOT, limit_suffix, machine_facts, run_script
from bench.shifts import AS_IS, GROUPS, MUST_REFER, OTHER_MICROSCOPE, SAME_SMEAR, SHIFTS, apply_shift
from edge_app.classify import Result
from edge_app.screening import Screener
from smearscope_core.console import logger, progress
from smearscope_core.errors import DatasetError, InputError
from smearscope_core.files import sha256_of
from smearscope_core.imaging import ImageError, load_rgb
from smearscope_core.manifest import read_manifest
from smearscope_core.paths import DEFAULT_DATASET, EXTERNAL_DEV_DATASET

EXTERNAL = "other lab (external-dev)"
EXTERNAL_LABS = {"pbc-normal-cells": "PBC", "bccd-normal-fields": "BCCD"}  # top folder -> short name
SCORES = {  # key in the results -> what it is, for the tables
    "image_statistics": "image statistics (`ood_distance`)",
    "max_softmax": "max softmax (1 - confidence)",
    "energy": "energy (-T logsumexp(logits/T))",
    "embedding": "embedding distance (`feature_distance`)",
    "field_scale": "field scale (abs log `scale_ratio`)",
}
LISTED = 5  # ALL-answered-benign files listed per row in the JSON, the most confident first
# The rows a new default's ship check sums (docs/training.md, fifth round): a challenger replaces the default only
# if, on the validation split, it answers no more ALL images benign without a referral here than the default.
SHIP_CHECK_GROUPS = (AS_IS, SAME_SMEAR, OTHER_MICROSCOPE)

log = logger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.outoflab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the manifest split to shift")
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "runs" / "default" / "manifest.csv")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="the dataset the manifest points into")
    parser.add_argument("--external", type=Path, default=EXTERNAL_DEV_DATASET, help="other labs' images "
                        "(skipped with a note where absent)")  # fmt: skip
    parser.add_argument("--no-external", action="store_true", help="do not screen the external-dev images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated scenes")
    add_bundle_options(parser, "at most N split images (and N per external folder), every k-th (0: all)")
    return parse_bundle_options(parser, argv)


# ---------------------------------------------------------------- scores and tallies


def scores(result: Result, temperature: float) -> dict[str, float]:
    """Every unfamiliarity score this Result carries, each larger for a stranger image."""
    found = {"max_softmax": 1.0 - result.confidence}
    if result.ood_distance is not None:
        found["image_statistics"] = float(result.ood_distance)
    if result.logits:
        scaled = np.asarray(result.logits, dtype=np.float64) / temperature
        top = scaled.max()
        found["energy"] = float(-temperature * (top + np.log(np.exp(scaled - top).sum())))
    if result.feature_distance is not None:
        found["embedding"] = float(result.feature_distance)
    if result.scale_ratio is not None and result.scale_ratio > 0:
        found["field_scale"] = abs(math.log(result.scale_ratio))
    return found


@dataclass
class Tally:
    """One bundle's answers on one row (a shift of the split, or one lab's external images)."""

    malignant_classes: frozenset[str]
    n: int = 0
    referred: int = 0
    answered_benign: int = 0
    answered_malignant: int = 0
    correct: int = 0  # answered with the image's own class (rows with a class only)
    wrong_not_referred: int = 0  # answered on the wrong side of benign/malignant; without a class, any answer
    all_answered_benign: int = 0  # ALL truth answered benign: the dangerous error
    all_answered_benign_worst: float | None = None  # the highest confidence among them
    all_answered_benign_files: list[tuple[float, str]] = field(default_factory=list)  # (confidence, file)
    wrong_subtype: int = 0  # answered with another class on the right side (another ALL subtype): a lesser error
    benign_answered_all: int = 0  # a false alarm
    reasons: Counter = field(default_factory=Counter)
    scores: dict[str, list[float]] = field(default_factory=dict)

    def add(self, result: Result, truth: str | None, name: str, temperature: float) -> None:
        """``truth``: the image's class, or None where no class is right (every answer is wrong)."""
        self.n += 1
        for key, value in scores(result, temperature).items():
            self.scores.setdefault(key, []).append(value)
        if result.inconclusive:
            self.referred += 1
            self.reasons.update({reason_kind(r) for r in result.reasons})
            return
        self.answered_malignant += result.malignant
        self.answered_benign += not result.malignant
        if truth == result.label:
            self.correct += 1
        elif truth is not None and (truth in self.malignant_classes) == result.malignant:
            self.wrong_subtype += 1
        else:  # the wrong side of benign/malignant, or any answer where no class is right
            self.wrong_not_referred += 1
            if truth in self.malignant_classes:
                self.all_answered_benign += 1
                self.all_answered_benign_worst = max(self.all_answered_benign_worst or 0.0, result.confidence)
                self.all_answered_benign_files.append((result.confidence, name))
            elif truth is not None:
                self.benign_answered_all += 1

    def summary(self) -> dict:
        def share(count: int) -> float | None:
            return count / self.n if self.n else None

        answered = self.n - self.referred
        most_confident = sorted(self.all_answered_benign_files, reverse=True)[:LISTED]
        plain = ("n", "referred", "answered_benign", "answered_malignant", "correct", "wrong_not_referred",
                 "all_answered_benign", "all_answered_benign_worst", "wrong_subtype",
                 "benign_answered_all")  # fmt: skip
        return {key: getattr(self, key) for key in plain} | {
            "answered": answered,
            "all_answered_benign_files": [f"{name} ({confidence:.3f})" for confidence, name in most_confident],
            "referred_share": share(self.referred),
            "answered_benign_share": share(self.answered_benign),
            "answered_malignant_share": share(self.answered_malignant),
            "wrong_not_referred_share": share(self.wrong_not_referred),
            "answered_accuracy": self.correct / answered if answered else None,
            "top_reasons": [[reason, count] for reason, count in self.reasons.most_common(3)],
            "score_medians": {key: float(np.median(values)) for key, values in self.scores.items()},
        }


def silent_benign(tallies: dict[str, dict[str, Tally]], groups: dict[str, str]) -> dict:
    """Per bundle, the ALL images answered benign without a referral over the rows of ``SHIP_CHECK_GROUPS``, as
    image-rows (an image counts once per row) and as distinct images; with several bundles, whether each later one
    passes the ship check against the first (the incumbent): no more image-rows than it."""
    keys = list(next(iter(tallies.values())))
    counted = {}
    for key in keys:
        files = [name for row, by_bundle in tallies.items() if groups[row] in SHIP_CHECK_GROUPS
                 for _, name in by_bundle[key].all_answered_benign_files]  # fmt: skip
        counted[key] = {"image_rows": len(files), "distinct_images": len(set(files))}
    incumbent = counted[keys[0]]["image_rows"]
    for key in keys[1:]:
        counted[key]["passes_ship_check"] = counted[key]["image_rows"] <= incumbent
    return {"groups": list(SHIP_CHECK_GROUPS), "incumbent": keys[0], "bundles": counted}


def auroc(negatives: list[float], positives: list[float]) -> float | None:
    """Area under the ROC curve of a score separating ``positives`` (shifted) from ``negatives`` (as is)."""
    if not negatives or not positives:
        return None
    labels = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    return float(roc_auc_score(labels, np.r_[negatives, positives]))


# ---------------------------------------------------------------- the images


def split_images(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """The split's images (every k-th when limited) with their class names."""
    if not args.data.is_dir():
        raise DatasetError(f"The dataset folder {args.data} does not exist (it is never committed: see docs).")
    if not args.manifest.is_file():
        raise InputError(f"The split manifest {args.manifest} does not exist.")
    rows = [row for row in read_manifest(args.manifest) if row.split == args.split]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    missing = [row.path for row in rows if not (args.data / row.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images of the manifest are not under {args.data}, e.g. {missing[0]}.")
    return [(args.data / row.path, row.class_name) for row in rows]


def external_labs(args: argparse.Namespace) -> tuple[dict[str, list[Path]], str]:
    """The external-dev images by lab (top folder), and a note when they are left out."""
    if args.no_external:
        return {}, "left out (--no-external)"
    if not args.external.is_dir():
        return {}, f"left out: {args.external} does not exist"
    labs: dict[str, list[Path]] = {}
    for folder, files in image_folders(args.external, args.limit).items():
        top = folder.split("/")[0]
        labs.setdefault(f"external: {EXTERNAL_LABS.get(top, top)}", []).extend(files)
    return labs, ""


# ---------------------------------------------------------------- screening


def _seed(seed: int, shift: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(shift.encode()), index])


def screen_shifts(
    images: list[tuple[Path, str]], screeners: dict[str, Screener], data: Path, seed: int, tallies: dict
) -> None:
    """Every split image through every shift and every bundle, into ``tallies[shift][bundle]``."""
    sizes = {key: screener.size for key, screener in screeners.items()}
    for index, (path, truth) in enumerate(progress(images, "split images", total=len(images))):
        original = load_rgb(path)
        relative = path.relative_to(data).as_posix()
        for name, shift in SHIFTS.items():
            shifted: dict[int, Image.Image] = {}
            for key, screener in screeners.items():
                size = sizes[key]
                if size not in shifted:
                    shifted[size] = apply_shift(shift, original, size, _seed(seed, name, index))
                result = screener.screen_image(shifted[size], f"{name}: {relative}")
                truth_here = truth if shift.has_truth else None
                tallies[name][key].add(result, truth_here, relative, screener.classifier.temperature)


def screen_external(
    labs: dict[str, list[Path]], screeners: dict[str, Screener], root: Path, benign: dict[str, str], tallies: dict
) -> list[str]:
    """Other labs' files as uploaded; their right answer is benign or a referral (``benign``: the class, per
    bundle). Returns the files that could not be decoded."""
    unreadable = []
    items = [(lab, path) for lab, files in labs.items() for path in files]
    for lab, path in progress(items, "external images", total=len(items)):
        relative = path.relative_to(root).as_posix()
        try:
            data = path.read_bytes()
            results = {key: screener.screen_bytes(data, relative) for key, screener in screeners.items()}
        except (ImageError, OSError) as error:
            unreadable.append(f"{relative}: {error}")
            continue
        for key, result in results.items():
            tallies[lab][key].add(result, benign[key], relative, screeners[key].classifier.temperature)
    return unreadable


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    group: str
    text: str
    figure: str  # key of a row's summary
    most: bool  # True: the figure must be at most ``goal``; False: at least
    goal: float
    unit: str  # "share", "count" or "accuracy": how a miss is said
    total: bool = False  # a count over the whole group (else every row on its own)


TARGETS = (
    Target(AS_IS, "referred <= 2%", "referred_share", True, 0.02, "share"),
    Target(AS_IS, "accuracy of answered >= 0.995", "answered_accuracy", False, 0.995, "accuracy"),
    Target(SAME_SMEAR, "referred <= 3%", "referred_share", True, 0.03, "share"),
    Target(OTHER_MICROSCOPE, "no ALL answered benign", "all_answered_benign", True, 0, "count", total=True),
    Target(OTHER_MICROSCOPE, "wrong, not referred <= 1%", "wrong_not_referred_share", True, 0.01, "share"),
    Target(MUST_REFER, "referred >= 99%", "referred_share", False, 0.99, "share"),
    Target(EXTERNAL, "0 confident malignant", "answered_malignant", True, 0, "count", total=True),
)
TOTAL = "all rows (total)"


def check(target: Target, value: float | None) -> tuple[bool | None, float | None]:
    """(met, missed by) for one row's figure; (None, None) when it cannot be measured."""
    if value is None:
        return None, None
    met = value <= target.goal if target.most else value >= target.goal
    return met, (0.0 if met else abs(value - target.goal))


def said(target: Target, value: float | None) -> str:
    if value is None:
        return "-"
    if target.unit == "share":
        return f"{value:.1%}"
    return f"{value:.4f}" if target.unit == "accuracy" else f"{value:.0f}"


def missed_by(target: Target, gap: float | None) -> str:
    if not gap:
        return ""
    if target.unit == "share":
        return f"{gap * 100:.1f} points"
    return f"{gap:.4f}" if target.unit == "accuracy" else f"{gap:.0f} image{'s' * (gap != 1)}"


def evaluate(rows: dict, key: str) -> list[dict]:
    """Each target on each row of its group for bundle ``key``: met when every row meets it; the worst row."""
    evaluated = []
    for target in TARGETS:
        checked = []
        for name, row in rows.items():
            if row["group"] == target.group:
                value = row["bundles"][key][target.figure]
                checked.append((name, value, *check(target, value)))
        measured = [c for c in checked if c[2] is not None]
        if target.total:
            total = float(sum(c[1] for c in measured))
            worst = (TOTAL, total, *check(target, total)) if measured else None
        else:
            worst = max(measured, key=lambda c: c[1] if target.most else -c[1], default=None)
        failing = [f"{name} ({said(target, value)})" for name, value, met, _ in measured if not met]
        extra = lab_shares(rows, key) if target.group == EXTERNAL else ""
        evaluated.append({
            "group": target.group,
            "target": target.text,
            "rows": len(checked),
            "met": None if worst is None else all(c[2] for c in measured),
            "worst_row": None if worst is None else worst[0],
            "worst": None if worst is None else worst[1],
            "worst_shown": said(target, None if worst is None else worst[1]),
            "missed_by": None if worst is None else worst[3],
            "missed_by_shown": "" if worst is None else missed_by(target, worst[3]),
            "failing": failing,
            "note": extra,
        })  # fmt: skip
    return evaluated


def lab_shares(rows: dict, key: str) -> str:
    """Referred and benign shares of each external lab, for the targets table."""
    shares = []
    for name, row in rows.items():
        figures = row["bundles"][key]
        if row["group"] == EXTERNAL and figures["n"]:
            shares.append(
                f"{name}: referred {figures['referred_share']:.1%}, benign {figures['answered_benign_share']:.1%}"
            )
    return "; ".join(shares)


def row_target(row: dict, key: str) -> str:
    """The row's own verdict on its group's targets: "met" or what is missed, by how much."""
    verdicts = []
    for target in TARGETS:
        if target.group == row["group"]:
            met, gap = check(target, row["bundles"][key][target.figure])
            if met is False:
                verdicts.append(f"{target.text}: missed by {missed_by(target, gap)}")
            elif met is None:
                verdicts.append(f"{target.text}: not measured")
    return "; ".join(verdicts) or "met"


# ---------------------------------------------------------------- the run


def bundle_facts(screener: Screener, manifest: Path) -> dict:
    card = screener.bundle.card
    manifest_sha = card.get("training", {}).get("dataset", {}).get("manifest_sha256")
    return {
        "path": str(screener.bundle.folder),
        "name": screener.bundle.name,
        "sha256": screener.bundle.sha256,
        "temperature": screener.classifier.temperature,
        "unfamiliarity_threshold": screener.detector.threshold if screener.detector else None,
        "manifest_matches": None if manifest_sha is None else manifest_sha == sha256_of(manifest),
    }


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    images = split_images(args)
    labs, external_note = external_labs(args)
    screeners = load_screeners(args.bundle)
    facts = {key: bundle_facts(s, args.manifest) for key, s in screeners.items()}
    for key, f in facts.items():
        if f["manifest_matches"] is False:
            log.warning(f"{key} was not trained on {args.manifest}: its {args.split} images may be training images")
    classes = {key: screener.classifier.classes for key, screener in screeners.items()}
    malignant = {key: frozenset(c["name"] for c in found if c["malignant"]) for key, found in classes.items()}
    benign = {key: next(c["name"] for c in found if not c["malignant"]) for key, found in classes.items()}
    rows = {name: (shift.group, shift.level, shift.description) for name, shift in SHIFTS.items()}
    rows |= {lab: (EXTERNAL, "file as uploaded", f"normal cells from another lab: {len(files)} images under "
                   f"{args.external}") for lab, files in labs.items()}  # fmt: skip
    tallies = {name: {key: Tally(malignant[key]) for key in screeners} for name in rows}
    n_external = sum(len(files) for files in labs.values())
    log.info(f"screening {len(images)} {args.split} images x {len(SHIFTS)} shifts and {n_external} external "
             f"images with {len(screeners)} bundle(s)")  # fmt: skip
    screen_shifts(images, screeners, args.data, args.seed, tallies)
    unreadable = screen_external(labs, screeners, args.external, benign, tallies)
    results_rows = {
        name: {"group": group, "level": level, "description": description,
               "bundles": {key: tally.summary() for key, tally in tallies[name].items()}}
        for name, (group, level, description) in rows.items()
    }  # fmt: skip
    aurocs = {}
    for key in screeners:
        negatives = tallies[AS_IS][key].scores
        aurocs[key] = {
            name: {score: auroc(negatives.get(score, []), tallies[name][key].scores.get(score, [])) for score in SCORES}
            for name in rows
            if name != AS_IS
        }
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.outoflab", *argv]),
        "machine": machine_facts(),
        "split": args.split,
        "images": len(images),
        "data": str(args.data),
        "manifest": str(args.manifest),
        "external": str(args.external),
        "external_note": external_note,
        "limit": args.limit,
        "seed": args.seed,
        "groups": [*GROUPS, EXTERNAL],
        "scores": SCORES,
        "bundles": facts,
        "rows": results_rows,
        "auroc": aurocs,
        "targets": {key: evaluate(results_rows, key) for key in screeners},
        "silent_benign": silent_benign(tallies, {name: group for name, (group, _, _) in rows.items()}),
        "unreadable": unreadable,
    }


# ---------------------------------------------------------------- Markdown


def _share(summary: dict, count: str) -> str:
    share = summary[f"{count}_share"]
    return "-" if share is None else f"{share:.1%} ({summary[count]})"


def _accuracy(summary: dict) -> str:
    accuracy = summary["answered_accuracy"]
    return "-" if accuracy is None else f"{accuracy:.3f} ({summary['correct']}/{summary['answered']})"


def _all_benign(summary: dict) -> str:
    worst = summary["all_answered_benign_worst"]
    count = summary["all_answered_benign"]
    return f"**{count}** (worst {worst:.1%})" if count else "0"


def bundle_line(key: str, facts: dict) -> str:
    mismatch = "; **not trained on this manifest**" if facts["manifest_matches"] is False else ""
    return f"- `{key}`: {facts['name']} ({facts['path']}), temperature {facts['temperature']:.3f}{mismatch}"


def silent_benign_table(found: dict) -> list[str]:
    several = len(found["bundles"]) > 1
    text = [
        "### ALL answered benign without a referral (" + ", ".join(found["groups"]) + ")",
        "",
        "| bundle | image-rows | distinct images |" + (" ship check against the first |" if several else ""),
        "|---|---|---|" + ("---|" if several else ""),
    ]
    for key, counted in found["bundles"].items():
        row = f"| `{key}` | {counted['image_rows']} | {counted['distinct_images']} |"
        if several and key == found["incumbent"]:
            row += " incumbent |"
        elif several:
            row += " passes |" if counted["passes_ship_check"] else " **fails** |"
        text.append(row)
    return [*text, ""]


def markdown_table(results: dict) -> str:
    limited = f", every k-th image, at most {results['limit']}" if results["limit"] else ""
    text = [
        f"Out-of-lab screening, {results['created']}: {results['images']} {results['split']}-split images{limited} "
        f"of `{results['data']}` through every shift of bench/shifts.py, and the external-dev images as files "
        f"({results['external_note'] or results['external']}). Command: `{results['command']}`.",
        "",
        *(bundle_line(key, facts) for key, facts in results["bundles"].items()),
        "",
        *silent_benign_table(results["silent_benign"]),
    ]
    for key in results["bundles"]:
        heading = f" - `{key}`" if len(results["bundles"]) > 1 else ""
        text += [
            f"### Answers per shift{heading}",
            "",
            "| shift | group | n | referred | accuracy of answered | wrong, not referred | ALL answered benign "
            "| ALL answered as another subtype | target |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in results["rows"].items():
            s = row["bundles"][key]
            text.append(
                f"| {name} | {row['group']} | {s['n']} | {_share(s, 'referred')} | {_accuracy(s)} "
                f"| {_share(s, 'wrong_not_referred')} | {_all_benign(s)} | {s['wrong_subtype']} "
                f"| {row_target(row, key)} |"
            )
        text += [
            "",
            f"### Targets (issue 11, section 5){heading}",
            "",
            "| group | target | met | worst row | measured | missed by |",
            "|---|---|---|---|---|---|",
        ]
        for t in results["targets"][key]:
            met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
            measured = t["worst_shown"] + (f" ({t['note']})" if t["note"] else "")
            failing = f" (failing: {', '.join(t['failing'])})" if len(t["failing"]) > 1 else ""
            text.append(f"| {t['group']} | {t['target']} | {met} | {t['worst_row'] or '-'} | {measured} "
                        f"| {t['missed_by_shown']}{failing} |")  # fmt: skip
        present = [score for score in results["scores"]
                   if any(v[score] is not None for v in results["auroc"][key].values())]  # fmt: skip
        absent = [results["scores"][score] for score in results["scores"] if score not in present]
        text += [
            "",
            f"### AUROC, unchanged {results['split']} images vs each row{heading}",
            "",
            "| row | group | " + " | ".join(results["scores"][score] for score in present) + " |",
            "|---|---|" + "---|" * len(present),
        ]
        for name, values in results["auroc"][key].items():
            cells = " | ".join("-" if values[score] is None else f"{values[score]:.3f}" for score in present)
            text.append(f"| {name} | {results['rows'][name]['group']} | {cells} |")
        if absent:
            text.append(f"\nNot carried by this app's results yet: {', '.join(absent)}.")
        text.append("")
    text += [
        'Referred: the app answered "Inconclusive - refer". Accuracy of answered: the exact class among the images '
        "not referred. Wrong, not referred: an answer on the wrong side of benign/malignant (ALL answered benign or "
        "benign answered ALL; on a generated scene any answer; on external-dev a malignant answer). ALL answered "
        "benign: with the highest confidence among them. ALL answered as another subtype: the lesser error, counted "
        "on its own. Share targets hold for every row of their group, count targets for the group's total. "
        "AUROC 1.0: the score puts every changed image above every unchanged one; 0.5: it cannot tell them apart; "
        "below 0.5: the changed images look *more* familiar than the unchanged ones.",
        "",
    ]
    if results["unreadable"]:
        text += [f"Unreadable ({len(results['unreadable'])}):", *(f"- {u}" for u in results["unreadable"]), ""]
    return "\n".join(text)


def results_name(results: dict) -> str:
    """The results files' name: outoflab, -val for the validation split, -limitN for a quick run."""
    return "outoflab" + ("-val" if results["split"] == "val" else "") + limit_suffix(results)


def main(argv: list[str] | None = None) -> int:
    return run_script(argv, parse_args, measure, markdown_table, results_name)


if __name__ == "__main__":
    sys.exit(main())
