"""Do the ImageNet features strengthen the unfamiliar-image check? kNN distance on each feature source, compared.

``python -m bench.feature_ood`` computes, for the default bundle's two feature sources (the classifier's 576-d
``embedding``, which the app's check uses today, and ``features.tflite``'s 1280-d EfficientNet-Lite0 features),
the cosine distance to the k-th nearest training image (``smearscope_core.embedding_ood``: train split as the
reference, the threshold at the validation split's 0.995 quantile, as conversion fits it), and reports on the test
split and on other labs' normal cells and fields (external-dev) how well each separates them from the test split
(AUROC, scikit-learn) and what share each would refer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.external import image_folders
from bench.measure import PROJECT_ROOT, machine_facts, run_script
from edge_app.bundle import load_bundle
from edge_app.runtime import TFLiteModel
from smearscope_core.console import progress
from smearscope_core.embedding_ood import DEFAULT_K, DEFAULT_QUANTILE, knn_distances, normalise
from smearscope_core.imaging import load_rgb, model_pixels
from smearscope_core.manifest import read_manifest
from smearscope_core.paths import DEFAULT_DATASET, EXTERNAL_DEV_DATASET

DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.feature_ood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "runs" / "default" / "manifest.csv")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--external", type=Path, default=EXTERNAL_DEV_DATASET)
    parser.add_argument("--limit", type=int, default=0, help="at most N images per split or folder (0: all)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


def sources(bundle: Path) -> dict[str, tuple[TFLiteModel, str, int]]:
    loaded = load_bundle(bundle)
    card = loaded.card
    found = {"model embedding (576-d)": (TFLiteModel(str(loaded.model_path), num_threads=1), "embedding",
                                         int(card["input"]["height"]))}  # fmt: skip
    if loaded.features_path is not None:
        section = card["features"]
        found[f"EfficientNet-Lite0 features ({section['output']['dimensions']}-d)"] = (
            TFLiteModel(str(loaded.features_path), num_threads=1), section["output"]["name"],
            int(section["input"]["height"]),
        )  # fmt: skip
    return found


def vectors(paths: list[Path], extractors: dict, label: str) -> dict[str, np.ndarray]:
    """Each source's vector of every image (decoded once)."""
    out: dict[str, list] = {name: [] for name in extractors}
    for path in progress(paths, label):
        image = load_rgb(path)
        for name, (model, output, size) in extractors.items():
            out[name].append(model.run_all(model_pixels(image, size))[output])
    return {name: np.array(found, dtype=np.float32) for name, found in out.items()}


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    from sklearn.metrics import roc_auc_score

    def limited(items: list) -> list:
        return items[:: max(1, len(items) // args.limit)][: args.limit] if args.limit else items

    rows = read_manifest(args.manifest)
    split = {name: limited([args.data / r.path for r in rows if r.split == name]) for name in ("train", "val", "test")}
    groups = {f"other lab: {name}": limited(files) for name, files in image_folders(args.external, 0).items()}
    extractors = sources(args.bundle)
    found = {name: vectors(paths, extractors, name) for name, paths in {**split, **groups}.items()}
    results: dict = {"command": "python -m bench.feature_ood " + " ".join(argv), "machine": machine_facts(),
                     "bundle": str(args.bundle), "k": DEFAULT_K, "quantile": DEFAULT_QUANTILE,
                     "images": {name: len(paths) for name, paths in {**split, **groups}.items()}, "sources": {},
                     "limit": args.limit}  # fmt: skip
    for source in extractors:
        reference = normalise(found["train"][source]).astype(np.float16).astype(np.float32)
        distance = {name: knn_distances(reference, found[name][source], DEFAULT_K) for name in found if name != "train"}
        threshold = float(np.quantile(distance["val"], DEFAULT_QUANTILE))
        rows_out = {}
        for name, values in distance.items():
            row = {"referred": float((values > threshold).mean()), "median_distance": float(np.median(values))}
            if name.startswith("other lab"):
                y = np.r_[np.zeros(len(distance["test"])), np.ones(len(values))]
                row["auroc_vs_test"] = float(roc_auc_score(y, np.r_[distance["test"], values]))
            rows_out[name] = row
        results["sources"][source] = {"threshold": threshold, "rows": rows_out}
    return results


def markdown_table(results: dict) -> str:
    lines = [f"# Unfamiliarity on each feature source ({results['command']})", "",
             f"kNN cosine distance (k={results['k']}) to the train split; threshold at the val split's "
             f"{results['quantile']} quantile. AUROC: the other lab's images against the test split.", "",
             "| images | n | " + " | ".join(f"{s}: referred | AUROC" for s in results["sources"]) + " |",
             "|---|---|" + "---|---|" * len(results["sources"])]  # fmt: skip
    names = next(iter(results["sources"].values()))["rows"]
    for name in names:
        cells = []
        for source in results["sources"].values():
            row = source["rows"][name]
            auroc = row.get("auroc_vs_test")
            cells.append(f"{row['referred']:.3f} | {'-' if auroc is None else f'{auroc:.3f}'}")
        lines.append(f"| {name} | {results['images'][name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_name(results: dict) -> str:
    return "feature-ood" + (f"-limit{results['limit']}" if results.get("limit") else "")


def main(argv: list[str] | None = None) -> int:
    return run_script(argv, parse_args, measure, markdown_table, results_name)


if __name__ == "__main__":
    sys.exit(main())
