"""``python -m bench [--quick]``: every variant on the same test images; JSON + Markdown results."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.measure import (
    PROJECT_ROOT,
    TestImages,
    app_figures,
    core_figures,
    load_average,
    machine_facts,
    quality,
)
from bench.peak import fractions_of_peak, physical_limit
from bench.report import markdown_table, targets
from bench.variants import VARIANTS, Context, float_tflite_path, run_variant
from smearscope_core.console import logger
from smearscope_core.errors import DatasetError, ExitCode, SmearScopeError, report
from smearscope_core.files import MANIFEST_FILE
from smearscope_core.model_card import read_card
from smearscope_core.paths import DEFAULT_DATASET

log = logger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "edge_app" / "models" / "default")
    parser.add_argument("--run", type=Path, default=PROJECT_ROOT / "runs" / "default", help="float model and manifest")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--images", type=int, default=0, help="test images to use (0: the whole test split)")
    parser.add_argument("--repeats", type=int, default=200, help="timed repetitions per latency figure")
    parser.add_argument("--quick", action="store_true", help="8 images, 5 repetitions: a smoke run")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def test_images(bundle_card: dict, run: Path, data: Path, limit: int) -> TestImages:
    """The manifest's test split (the same images every stage reports on), every k-th when limited."""
    from smearscope_core.files import sha256_of
    from smearscope_core.manifest import read_manifest

    manifest = run / bundle_card["training"]["dataset"].get("manifest", MANIFEST_FILE)
    rows = [r for r in read_manifest(manifest) if r.split == "test"]
    if limit:
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    names = [c["name"] for c in bundle_card["classes"]]
    paths = [data / r.path for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} test images are missing under {data}, e.g. {missing[0]}.")
    if any(sha256_of(p) != r.sha256 for p, r in zip(paths[:5], rows[:5], strict=True)):
        raise DatasetError(f"The images under {data} differ from the manifest's sha256.")
    labels = np.array([names.index(r.class_name) for r in rows])
    size, temperature = int(bundle_card["input"]["height"]), float(bundle_card["calibration"]["temperature"])
    target = (bundle_card.get("shortcuts") or {}).get("colour_target")  # absent for runs trained before it
    return TestImages(paths, labels, names, size, temperature, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        benchmark(args, sys.argv[1:] if argv is None else argv)
    except SmearScopeError as error:
        return report(error)
    return ExitCode.OK


def benchmark(args: argparse.Namespace, argv: list[str]) -> None:
    """Measure every variant, the inference core and the app; write the results as JSON and Markdown."""
    if args.quick:
        args.images, args.repeats = args.images or 8, min(args.repeats, 5)
    load_at_start = load_average()
    card = read_card(args.bundle / "model_card.json")
    images = test_images(card, args.run, args.data, args.images)
    context = Context(args.bundle, args.run, images, args.repeats)
    log.info(f"benchmarking {len(images.paths)} test images, {args.repeats} repetitions per latency figure")
    variants = {}
    for variant in VARIANTS:
        log.info(f"{variant.name}...")
        result = run_variant(variant, context)
        if "predicted" in result:
            result |= quality(result.pop("predicted"), images.labels, len(images.class_names))
        if "predicted_colour_robust" in result:
            result["colour_robust"] = quality(result.pop("predicted_colour_robust"), images.labels,
                                              len(images.class_names))  # fmt: skip
        result["description"] = variant.description
        variants[variant.name] = result
    log.info("the physical limit: MACs per image, this CPU's float32 and int8 peak...")
    cores = os.cpu_count() or 1
    tflite = {"int8 TFLite": args.bundle / "model.tflite", "float32 TFLite": float_tflite_path(context)}
    limit = physical_limit(args.run, tflite, tuple(sorted({1, 2, cores})), 5 if args.quick else 100)
    for result in variants.values():
        if "skipped" not in result:
            result["fraction_of_peak"] = fractions_of_peak(result, result["precision"], limit["macs"]["per_image"],
                                                           limit["peak"], cores)  # fmt: skip
    log.info("inference core and app...")
    core = core_figures(args.bundle, images.paths[0], 3 if args.quick else 20)
    with tempfile.TemporaryDirectory() as data_dir:
        app = app_figures(images.paths[0], args.bundle.parent, Path(data_dir))
    results = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv),
        "machine": machine_facts(),
        "load_average": {"start": load_at_start, "end": load_average()},  # other jobs on the same cores
        "bundle": {"path": str(args.bundle), "name": card["name"], "sha256": card["tflite"]["sha256"]},
        "images": len(images.paths),
        "input_size": images.size,
        "repeats": args.repeats,
        "colour_target": images.colour_target,
        "variants": variants,
        "limit": limit,
        "core": core,
        "app": app,
    }
    results["targets"] = targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{results['machine']['host'] or 'host'}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    log.info(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main())
