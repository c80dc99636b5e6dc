"""``python -m bench.external``: how the app answers on normal blood-cell images from other labs.

Every image under ../shared/datasets/external-dev (read its DATASET.md) shows normal cells, taken with
another microscope, camera, stain or magnification than the training set. The right answer on each is
"benign" or "inconclusive - refer", never a confident malignant class. Each image goes through the app's
own ``Screener`` (the same decode, image checks and refer rules as the page), and per folder and overall
this counts: referred (inconclusive), confident benign, confident malignant (the silent wrong answers,
which must be zero), the raw model's malignant share before any refer rule, and the referral reasons.

Several bundles can be compared side by side (``--bundle A --bundle B``). Runs in the app's own
environment (.venv-edge: no TensorFlow, no scikit-learn). Writes
bench/results/<date>-<host>-external.{json,md} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.measure import PROJECT_ROOT, limit_suffix, machine_facts, run_script
from edge_app.classify import Result
from edge_app.screening import Screener
from smearscope_core.console import logger, progress
from smearscope_core.errors import InputError
from smearscope_core.imaging import ImageError
from smearscope_core.paths import EXTERNAL_DEV_DATASET

DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
OVERALL = "overall"
TOP_REASONS = 3
LISTED_FILES = 20  # silent wrong answers listed in the Markdown (all of them are in the JSON)

log = logger("bench")


def add_bundle_options(parser: argparse.ArgumentParser, limit_help: str) -> None:
    """``--bundle`` (repeatable), ``--limit`` and ``--out``: the options of the scripts that screen through bundles."""
    parser.add_argument("--bundle", type=Path, action="append", help="a model bundle folder; repeat to compare "
                        "several side by side (default: edge_app/models/default)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help=limit_help)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")


def parse_bundle_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, with the default bundle when none is named and a non-negative ``--limit``."""
    args = parser.parse_args(argv)
    args.bundle = args.bundle or [DEFAULT_BUNDLE]
    if args.limit < 0:
        parser.error("--limit must be 0 (all images) or more")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.external", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=EXTERNAL_DEV_DATASET, help="folder of image folders")
    add_bundle_options(parser, "at most N images per folder, every k-th (0: all)")
    return parse_bundle_options(parser, argv)


@dataclass
class Tally:
    """One bundle's answers on one folder (or on all of them)."""

    n: int = 0
    referred: int = 0
    confident_benign: int = 0
    confident_malignant: int = 0  # malignant and not referred: the silent wrong answers
    raw_malignant: int = 0  # the model's top class is malignant, before any refer rule
    reasons: Counter = field(default_factory=Counter)
    silent_wrong: list[str] = field(default_factory=list)
    unfamiliarity: list[float] = field(default_factory=list)  # the image checks' OOD distance, where measured

    def add(self, result: Result, name: str) -> None:
        self.n += 1
        self.raw_malignant += result.malignant
        if result.ood_distance is not None:
            self.unfamiliarity.append(result.ood_distance)
        if result.inconclusive:
            self.referred += 1
            self.reasons.update({reason_kind(r) for r in result.reasons})
        elif result.malignant:
            self.confident_malignant += 1
            self.silent_wrong.append(f"{name} ({result.display_label}, {result.confidence:.2f})")
        else:
            self.confident_benign += 1

    def summary(self) -> dict:
        def share(count: int) -> float | None:
            return count / self.n if self.n else None

        counts = {k: v for k, v in asdict(self).items() if k not in ("reasons", "silent_wrong", "unfamiliarity")}
        distances = sorted(self.unfamiliarity)
        return counts | {
            "referred_share": share(self.referred),
            "confident_benign_share": share(self.confident_benign),
            "confident_malignant_share": share(self.confident_malignant),
            "raw_malignant_share": share(self.raw_malignant),
            "unfamiliarity_min": distances[0] if distances else None,
            "unfamiliarity_median": distances[len(distances) // 2] if distances else None,
            "top_reasons": [[reason, count] for reason, count in self.reasons.most_common(TOP_REASONS)],
            "silent_wrong": self.silent_wrong,
        }


def reason_kind(reason: str) -> str:
    """A referral reason without its figures or advice: 'the model is unsure (top probability 0.41 < 0.50): review
    ...' counts as 'the model is unsure', whatever the probability."""
    return re.sub(r"\s*\([^()]*\)", "", reason).split(":")[0].strip()


def image_folders(data: Path, limit: int) -> dict[str, list[Path]]:
    """Each folder under ``data`` (itself included) that holds images, by its path relative to ``data``;
    every k-th image when limited."""
    if not data.is_dir():
        raise InputError(f"The external image folder {data} does not exist (see docs/performance.md).")
    folders = {}
    for folder in sorted([data, *(p for p in data.rglob("*") if p.is_dir())]):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files and not any(part.startswith(".") for part in folder.relative_to(data).parts):
            if limit:
                files = files[:: max(1, len(files) // limit)][:limit]
            folders[folder.relative_to(data).as_posix() or "."] = files
    if not folders:
        raise InputError(f"There are no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {data}.")
    return folders


def load_screeners(bundles: list[Path]) -> dict[str, Screener]:
    """The screeners by column name (bundle folder @ model sha256[:12]); BundleError becomes an InputError."""
    screeners = {}
    for folder in bundles:
        try:
            screener = Screener(folder, num_threads=1)
        except ValueError as error:  # BundleError, or an OOD section this app version cannot read
            raise InputError(str(error)) from None
        screeners[f"{folder.resolve().name}@{screener.bundle.sha256[:12]}"] = screener
    if len(screeners) < len(bundles):
        raise InputError("The same bundle was given twice: give each --bundle once.")
    return screeners


def screen_all(folders: dict[str, list[Path]], screeners: dict[str, Screener], data: Path) -> tuple[dict, list[str]]:
    """Tallies by folder (and OVERALL) and bundle, and the files that could not be decoded."""
    tallies = {name: {key: Tally() for key in screeners} for name in [*folders, OVERALL]}
    unreadable = []
    items = [(name, path) for name, files in folders.items() for path in files]
    for name, path in progress(items, "external images", total=len(items)):
        relative = path.relative_to(data).as_posix()
        try:
            results = {key: screener.screen_bytes(path.read_bytes(), relative) for key, screener in screeners.items()}
        except (ImageError, OSError) as error:
            unreadable.append(f"{relative}: {error}")
            continue
        for key, result in results.items():
            tallies[name][key].add(result, relative)
            tallies[OVERALL][key].add(result, relative)
    return tallies, unreadable


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    folders = image_folders(args.data, args.limit)
    screeners = load_screeners(args.bundle)
    total = sum(len(files) for files in folders.values())
    log.info(f"screening {total} images in {len(folders)} folders with {len(screeners)} bundle(s)")
    tallies, unreadable = screen_all(folders, screeners, args.data)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.external", *argv]),
        "machine": machine_facts(),
        "data": str(args.data),
        "limit": args.limit,
        "bundles": {
            key: {
                "path": str(s.bundle.folder),
                "name": s.bundle.name,
                "sha256": s.bundle.sha256,
                "unfamiliarity_threshold": s.detector.threshold if s.detector else None,
            }
            for key, s in screeners.items()
        },
        "folders": {name: {key: t.summary() for key, t in row.items()} for name, row in tallies.items()},
        "unreadable": unreadable,
    }


def _cell(summary: dict, count: str) -> str:
    share = summary[f"{count}_share"]
    return "-" if share is None else f"{share:.1%} ({summary[count]})"


def markdown_table(results: dict) -> str:
    """The figures as Markdown: one row per folder and overall, one column set per bundle."""
    keys = list(results["bundles"])
    columns = ["referred", "confident benign", "**confident malignant**", "raw model malignant"]
    counts = ["referred", "confident_benign", "confident_malignant", "raw_malignant"]
    head = ["folder", "n", *(f"{c}, {k}" if len(keys) > 1 else c for k in keys for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results["folders"].items():
        first = row[keys[0]]
        label = f"**{name}**" if name == OVERALL else name
        lines.append(f"| {label} | {first['n']} | " + " | ".join(_cell(row[k], c) for k in keys for c in counts) + " |")
    limited = f", every k-th image, at most {results['limit']} per folder" if results["limit"] else ""
    text = [
        f"External images: `{results['data']}`{limited}. Command: `{results['command']}`.",
        "",
        *(f"- `{key}`: {b['name']} ({b['path']})" for key, b in results["bundles"].items()),
        "",
        *lines,
        "",
        "Confident malignant: a malignant class shown without a referral (a silent wrong answer on these normal "
        "images; must be 0). Raw model malignant: the top class is malignant, before the refer rules.",
        "",
    ]
    for key in keys:
        overall = results["folders"][OVERALL][key]
        threshold = results["bundles"][key]["unfamiliarity_threshold"]
        if threshold is not None and overall["unfamiliarity_min"] is not None:
            text.append(
                f"Unfamiliarity, `{key}` (referred above {threshold:.1f}): lowest {overall['unfamiliarity_min']:.1f},"
                f" median {overall['unfamiliarity_median']:.1f}."
            )
        text.append(f"Most common referral reasons, `{key}` (images; an image can have several):")
        for name, row in results["folders"].items():
            reasons = "; ".join(f"{reason}: {count}" for reason, count in row[key]["top_reasons"]) or "none"
            text.append(f"- {name}: {reasons}")
        if overall["silent_wrong"]:
            shown = overall["silent_wrong"][:LISTED_FILES]
            more = len(overall["silent_wrong"]) - len(shown)
            text.append(f"- silent wrong answers: {', '.join(shown)}" + (f" and {more} more" if more else ""))
        text.append("")
    if results["unreadable"]:
        text += [f"Unreadable ({len(results['unreadable'])}):", *(f"- {u}" for u in results["unreadable"]), ""]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    return run_script(argv, parse_args, measure, markdown_table, lambda results: "external" + limit_suffix(results))


if __name__ == "__main__":
    sys.exit(main())
