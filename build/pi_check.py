"""Screen the test split and compare the results of two machines (x86_64 and aarch64 under emulation).

``build/pi_check.sh`` (``make pi-check``) runs it; by hand:

    python build/pi_check.py screen --out x86_64.json [--dataset DIR] [--manifest CSV] [--limit N]
    python build/pi_check.py compare x86_64.json aarch64-cortex-a76.json [...] [--out summary.json]

``screen`` runs ``edge_app.screening.Screener`` on the default bundle over every ``test`` row of the manifest
(images read where they are, never copied) and writes per-image results: outcome (benign, malignant, refer),
class, calibrated probabilities, logits, the unfamiliarity figures and the refer reasons, with the machine,
Python and package versions. ``compare`` takes the first file as the reference and, for each other one, names
every image whose outcome, class or refer reasons differ and gives the largest probability and logit difference;
exit 0 when every prediction (outcome and class) is identical, 1 otherwise. Standard library only besides the
app's own requirements, so it runs in the emulated sysroot.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
MANIFEST = ROOT / "runs" / "default" / "manifest.csv"
DATASET = ROOT.parent / "shared" / "datasets" / "all-4class"
BUNDLE = ROOT / "edge_app" / "models" / "default"
PACKAGES = ("ai-edge-litert", "numpy", "pillow")


def test_rows(manifest: Path, limit: int = 0) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    return rows[:limit] if limit > 0 else rows


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def screen(dataset: Path, manifest: Path, bundle: Path, limit: int = 0) -> dict:
    from edge_app.screening import Screener

    started = time.perf_counter()
    screener = Screener(bundle)
    loaded = time.perf_counter()
    images = []
    for row in test_rows(manifest, limit):
        result = screener.screen_bytes((dataset / row["path"]).read_bytes(), row["path"])
        images.append({
            "path": row["path"],
            "truth": row["class"],
            "outcome": result.outcome,
            "label": result.label,
            "inconclusive": result.inconclusive,
            "reasons": result.reasons,
            "confidence": result.confidence,
            "p_malignant": result.p_malignant,
            "probabilities": {item.name: item.probability for item in result.probabilities},
            "logits": list(result.logits),
            "ood_distance": result.ood_distance,
            "feature_distance": result.feature_distance,
            "scale_ratio": result.scale_ratio,
        })  # fmt: skip
    finished = time.perf_counter()
    return {
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "libc": " ".join(platform.libc_ver()),
        "packages": versions(),
        "runtime": screener.classifier.model.runtime,
        "model_sha256": screener.bundle.sha256,
        "images": images,
        "load_seconds": round(loaded - started, 3),
        "screen_seconds": round(finished - loaded, 3),
    }


def _max_difference(first: list[float] | dict[str, float], second: list[float] | dict[str, float]) -> float:
    if isinstance(first, dict):
        keys = sorted(set(first) | set(second))
        first, second = [first.get(key, float("nan")) for key in keys], [second.get(key, float("nan")) for key in keys]
    if len(first) != len(second):
        return float("inf")
    return max((abs(a - b) for a, b in zip(first, second, strict=True)), default=0.0)


def _difference(a: float | None, b: float | None) -> float:
    return 0.0 if a is None and b is None else (float("inf") if a is None or b is None else abs(a - b))


def compare(reference: dict, other: dict) -> dict:
    """Per-image differences of ``other`` against ``reference``: predictions, reasons, largest numeric gaps."""
    ours = {image["path"]: image for image in reference["images"]}
    theirs = {image["path"]: image for image in other["images"]}
    differences, reason_differences = [], []
    max_probability = max_logit = max_ood = max_feature = 0.0
    worst_image = ""
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            differences.append({"path": path, "missing_in": "reference" if a is None else "other"})
            continue
        gap = _max_difference(a["probabilities"], b["probabilities"])
        if gap > max_probability:
            max_probability, worst_image = gap, path
        max_logit = max(max_logit, _max_difference(a["logits"], b["logits"]))
        max_ood = max(max_ood, _difference(a["ood_distance"], b["ood_distance"]))
        max_feature = max(max_feature, _difference(a["feature_distance"], b["feature_distance"]))
        if a["outcome"] != b["outcome"] or a["label"] != b["label"]:
            differences.append({
                "path": path, "truth": a["truth"],
                "reference": f"{a['outcome']} / {a['label']} ({a['confidence']:.4f})",
                "other": f"{b['outcome']} / {b['label']} ({b['confidence']:.4f})",
                "max_probability_difference": gap,
            })  # fmt: skip
        elif a["reasons"] != b["reasons"]:
            reason_differences.append({"path": path, "reference": a["reasons"], "other": b["reasons"]})
    return {
        "machine": f"{other['machine']} (Python {other['python']}, {other['libc']})",
        "packages": other["packages"],
        "images": len(theirs),
        "identical_predictions": not differences,
        "prediction_differences": differences,
        "reason_differences": reason_differences,
        "max_probability_difference": max_probability,
        "max_probability_difference_image": worst_image,
        "max_logit_difference": max_logit,
        "max_ood_distance_difference": max_ood,
        "max_feature_distance_difference": max_feature,
        "screen_seconds": other["screen_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("screen", help="screen the test split; write per-image results as JSON")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--dataset", type=Path, default=DATASET)
    run.add_argument("--manifest", type=Path, default=MANIFEST)
    run.add_argument("--bundle", type=Path, default=BUNDLE)
    run.add_argument("--limit", type=int, default=0, help="only the first N test images (0: all)")
    check = commands.add_parser("compare", help="compare results with the first file's")
    check.add_argument("reference", type=Path)
    check.add_argument("others", type=Path, nargs="+")
    check.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "screen":
        if not args.dataset.is_dir():
            print(f"error: no dataset folder {args.dataset}", file=sys.stderr)
            return 2
        found = screen(args.dataset, args.manifest, args.bundle, args.limit)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(found, indent=1) + "\n")
        outcomes = {}
        for image in found["images"]:
            outcomes[image["outcome"]] = outcomes.get(image["outcome"], 0) + 1
        print(
            f"{found['machine']}: {len(found['images'])} images in {found['screen_seconds']:.1f} s "
            f"(model loaded in {found['load_seconds']:.1f} s): {outcomes} -> {args.out}",
            file=sys.stderr,
        )
        return 0

    reference = json.loads(args.reference.read_text())
    summary = {
        "reference": f"{reference['machine']} (Python {reference['python']}, {reference['libc']})",
        "reference_packages": reference["packages"],
        "comparisons": {},
    }
    for path in args.others:
        summary["comparisons"][path.stem] = compare(reference, json.loads(path.read_text()))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    ok = True
    for name, found in summary["comparisons"].items():
        ok = ok and found["identical_predictions"]
        verdict = "identical predictions" if found["identical_predictions"] else (
            f"{len(found['prediction_differences'])} prediction(s) differ")  # fmt: skip
        print(
            f"{name} vs {reference['machine']}: {found['images']} images, {verdict}; "
            f"{len(found['reason_differences'])} refer-reason difference(s); max |probability difference| "
            f"{found['max_probability_difference']:.3g} ({found['max_probability_difference_image'] or '-'}), "
            f"logits {found['max_logit_difference']:.3g}, ood distance {found['max_ood_distance_difference']:.3g}, "
            f"feature distance {found['max_feature_distance_difference']:.3g}"
        )
        for item in found["prediction_differences"] + found["reason_differences"]:
            print(f"  {json.dumps(item)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
