"""Site calibration measured: before and after, by images per class, variant by variant, on held-out images.

``python -m bench.site_calibration --site DIR [--two-label DIR] [--finetune-run RUN]`` reads a simulated site made
by ``python -m bench.site_sim`` (its ``calibration/`` pool and ``heldout/`` side, near-duplicate groups kept on
one side) and, for every size in ``--sizes`` and ``--repeats`` seeded draws from the pool, calibrates each variant
of ``VARIANTS`` (one table, one routine) on that draw and screens every held-out image through the app's own
``Screener`` with its refer rules. It reports, per variant and size: the accuracy and macro-F1 of the answered
images, malignant sensitivity and specificity (answered images), the referral rate and the ALL images answered
"benign"; the base bundle as it is ("before"); a two-label site; fine-tuning the float model on the same draw
(``python -m train --finetune``, then conversion with its drift gate) where ``--finetune-run`` is given; the time to
calibrate 200 images in the edge environment; and, on real other-lab images (external-dev PBC cells), the
cross-validated figures of a head on each feature source. Draws smaller than the gate's 20 images per class are
written with ``force`` (the gate would refuse them) so that the learning curve has its left end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.external import reason_kind
from bench.measure import PROJECT_ROOT, machine_facts, run_script
from edge_app.bundle import load_bundle
from edge_app.classify import Result, map_colours
from edge_app.screening import Screener
from edge_app.site_data import CLASSES_FILE
from edge_app.site_fit import SiteCalibration
from smearscope_core.console import logger, progress
from smearscope_core.errors import InputError
from smearscope_core.imaging import open_image
from smearscope_core.paths import EXTERNAL_DEV_DATASET
from smearscope_core.stain import ColourMapping, fit_colour_mapping

DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TARGET_PER_CLASS = 30  # the target point: answered accuracy >= 0.95, referral <= 15%, <= 1 ALL -> benign

log = logger("bench")


@dataclass(frozen=True)
class Variant:
    """One way of calibrating for a site; ``head`` None: the colour mapping alone, on the base model and rules."""

    description: str
    mapping: str
    head: str | None = "logistic"
    features: str = "features"


VARIANTS = {
    "default (auto)": Variant(
        "what `python -m edge_app.calibrate` does by default: Macenko mapping, then a logistic head on whichever "
        "feature source does better on the site's own images",
        "macenko",
        features="auto",
    ),
    "mapping alone": Variant("colour mapping (Macenko) on the base model and its refer rules", "macenko", None),
    "head alone": Variant("logistic head on the EfficientNet-Lite0 features, no colour mapping", "none"),
    "mapping + head": Variant("colour mapping (Macenko), then the logistic head on EfficientNet-Lite0", "macenko"),
    "mapping + head (Reinhard)": Variant("colour mapping (Reinhard in Lab), then the same head", "reinhard-lab"),
    "mapping + head on embedding": Variant(
        "colour mapping (Macenko), then a logistic head on the default model's own 576-d embedding",
        "macenko",
        features="embedding",
    ),
    "mapping + LDA head": Variant(
        "colour mapping (Macenko), then shrinkage LDA on EfficientNet-Lite0", "macenko", "lda"
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.site_calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, required=True, help="a bench.site_sim output folder (four classes)")
    parser.add_argument("--two-label", type=Path, help="the same site built with --labels two")
    parser.add_argument("--base", type=Path, default=DEFAULT_BUNDLE, help="the base bundle")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 30, 50, 100], help="images per class")
    parser.add_argument("--repeats", type=int, default=3, help="seeded draws per size")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--finetune-run", type=Path, help="fine-tune this run on the target draw (training env)")
    parser.add_argument("--external", type=Path, default=EXTERNAL_DEV_DATASET, help="other labs' images")
    parser.add_argument("--edge-python", default=os.environ.get("SMEARSCOPE_EDGE_PYTHON", ""),
                        help="the edge environment's python, for the 200-image timing")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="at most N held-out images, every k-th (0: all)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- data


def class_files(side: Path) -> dict[str, list[Path]]:
    """The image files of each class folder of one side of a simulated site, sorted."""
    if not side.is_dir():
        raise InputError(f"{side} does not exist: build the site with python -m bench.site_sim first.")
    return {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(side.iterdir())
        if folder.is_dir()
    }


def draw(pool: dict[str, list[Path]], per_class: int, seed: int, folder: Path, classes_json: Path) -> Path:
    """A calibration folder of ``per_class`` images per class (all of a smaller class), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    for name, files in pool.items():
        (folder / name).mkdir(parents=True)
        for index in sorted(rng.permutation(len(files))[:per_class]):
            shutil.copy2(files[index], folder / name / files[index].name)
    shutil.copy2(classes_json, folder / CLASSES_FILE)
    return folder


@dataclass
class Heldout:
    images: list  # decoded PIL images
    labels: list[str]
    names: list[str]

    @classmethod
    def read(cls, side: Path, limit: int) -> Heldout:
        files = [(name, path) for name, paths in class_files(side).items() for path in paths]
        if limit:
            files = files[:: max(1, len(files) // limit)][:limit]
        images = [open_image(path.read_bytes(), path.name) for _, path in progress(files, "reading held-out")]
        return cls(images, [name for name, _ in files], [path.name for _, path in files])


# ---------------------------------------------------------------- scoring


def tally(results: list[Result], labels: list[str], malignant: dict[str, bool]) -> dict:
    """Answered accuracy and macro-F1, sensitivity/specificity of the answered, referral rate, ALL -> benign."""
    answered = [(r, label) for r, label in zip(results, labels, strict=True) if not r.inconclusive]
    truth = [label for _, label in answered]
    said = [r.label for r, _ in answered]
    classes = sorted(set(labels))
    f1s = []
    for name in classes:
        tp = sum(t == name and s == name for t, s in zip(truth, said, strict=True))
        fp = sum(t != name and s == name for t, s in zip(truth, said, strict=True))
        fn = sum(t == name and s != name for t, s in zip(truth, said, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    ill = [(r, t) for r, t in answered if malignant[t]]
    well = [(r, t) for r, t in answered if not malignant[t]]
    return {
        "n": len(results),
        "referred": 1 - len(answered) / len(results) if results else None,
        "answered": len(answered),
        "accuracy_answered": float(np.mean([t == s for t, s in zip(truth, said, strict=True)])) if answered else None,
        "macro_f1_answered": float(np.mean(f1s)) if answered else None,
        "sensitivity_answered": float(np.mean([r.malignant for r, _ in ill])) if ill else None,
        "specificity_answered": float(np.mean([not r.malignant for r, _ in well])) if well else None,
        "raw_accuracy": float(np.mean([r.label == t for r, t in zip(results, labels, strict=True)]))
        if results
        else None,
        "all_answered_benign": sum(1 for r, _ in ill if not r.malignant),
        "benign_answered_malignant": sum(1 for r, _ in well if r.malignant),
        "referred_by": dict(Counter(reason_kind(reason) for r in results for reason in r.reasons).most_common()),
    }


def screen(screener: Screener, heldout: Heldout, mapping: ColourMapping | None = None) -> list[Result]:
    return [
        screener.screen_image(map_colours(image, mapping), name)
        for image, name in zip(heldout.images, heldout.names, strict=True)
    ]


def site_malignant(side: Path) -> dict[str, bool]:
    """Each class's malignant flag, from the side's classes.json (training's format: {"classes": {name: {...}}})."""
    metadata = json.loads((side / CLASSES_FILE).read_text())
    return {name: bool(meta["malignant"]) for name, meta in metadata.get("classes", metadata).items()}


def calibrate_variant(variant: Variant, folder: Path, base_folder: Path, out: Path) -> tuple[Screener, dict, float]:
    """A site bundle for ``variant`` from ``folder`` (written with force), its screener, its CV figures, seconds."""
    started = time.perf_counter()
    base = load_bundle(base_folder)
    calibration = SiteCalibration(folder, base, features=variant.features, mapping=variant.mapping,
                                  head=variant.head or "logistic", num_threads=1)  # fmt: skip
    fit = calibration.fit()
    calibration.write(out, force=True)
    seconds = time.perf_counter() - started
    return Screener(out, num_threads=1), {"cross_validated": fit.metrics.get("cross_validated"),
                                          "gate_passed": fit.gate_passed}, seconds  # fmt: skip


def mapping_alone(variant: Variant, folder: Path, base: Screener) -> ColourMapping:
    from smearscope_core.imaging import load_rgb

    images = [load_rgb(path) for path in sorted(folder.rglob("*")) if path.suffix.lower() in IMAGE_SUFFIXES]
    return ColourMapping.from_section(fit_colour_mapping(variant.mapping, images, base.bundle.card["colour_reference"]))


# ---------------------------------------------------------------- measuring


def learning_curves(args: argparse.Namespace, site: Path, work: Path) -> dict:
    """Before, and every variant at every size (mean and spread over the draws), on the site's held-out side."""
    pool = class_files(site / "calibration")
    heldout = Heldout.read(site / "heldout", args.limit)
    malignant = site_malignant(site / "heldout")
    base = Screener(args.base, num_threads=1)
    rows = {"before": {"as is": tally(screen(base, heldout), heldout.labels, malignant)}}
    for name in args.variants:
        variant = VARIANTS[name]
        rows[name] = {}
        for size in args.sizes:
            draws = []
            for repeat in range(args.repeats):
                folder = draw(pool, size, 1000 * size + repeat, work / f"{name}-{size}-{repeat}".replace(" ", "_"),
                              site / "calibration" / CLASSES_FILE)  # fmt: skip
                if variant.head is None:
                    started = time.perf_counter()
                    mapping = mapping_alone(variant, folder, base)
                    figures = tally(screen(base, heldout, mapping), heldout.labels, malignant)
                    figures["fit_seconds"] = time.perf_counter() - started
                else:
                    screener, cv, seconds = calibrate_variant(variant, folder, args.base, folder.with_suffix(".bundle"))
                    figures = tally(screen(screener, heldout), heldout.labels, malignant) | cv
                    figures["fit_seconds"] = seconds
                draws.append(figures)
                log.info(f"{site.name} {name} {size}/class draw {repeat}: {summary_line(figures)}")
            rows[name][str(size)] = combine(draws)
    return {"site": str(site), "heldout": len(heldout.images), "rows": rows}


def combine(draws: list[dict]) -> dict:
    """The draws' mean of each figure, with min and max, and the draws themselves."""
    keys = ("referred", "raw_accuracy", "accuracy_answered", "macro_f1_answered", "sensitivity_answered",
            "specificity_answered", "all_answered_benign", "benign_answered_malignant", "fit_seconds")  # fmt: skip
    out: dict = {"draws": draws}
    for key in keys:
        values = [d[key] for d in draws if d.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
            out[f"{key}_range"] = [float(min(values)), float(max(values))]
    return out


def summary_line(figures: dict) -> str:
    def show(key: str, form: str = ".3f") -> str:
        value = figures.get(key)
        return "-" if value is None else format(value, form)

    return (f"referred {show('referred')}, answered accuracy {show('accuracy_answered')}, macro-F1 "
            f"{show('macro_f1_answered')}, sensitivity {show('sensitivity_answered')}, ALL->benign "
            f"{show('all_answered_benign', '.1f')}")  # fmt: skip


def finetune(args: argparse.Namespace, site: Path, work: Path) -> dict | None:
    """Fine-tune the float model on the target draw, convert it behind the drift gate, screen the held-out side."""
    if args.finetune_run is None:
        return None
    folder = draw(class_files(site / "calibration"), TARGET_PER_CLASS, 1000 * TARGET_PER_CLASS, work / "finetune-data",
                  site / "calibration" / CLASSES_FILE)  # fmt: skip
    run, bundle = work / "finetune-run", work / "finetune-bundle"
    started = time.perf_counter()
    commands = [
        [sys.executable, "-m", "train", "--finetune", str(args.finetune_run), "--data", str(folder), "--out", str(run)],
        [sys.executable, "-m", "convert", "--run", str(run), "--data", str(folder), "--out", str(bundle),
         "--features", "none"],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"failed": " ".join(command[2:4]), "exit": done.returncode, "output_tail": tail}
    heldout = Heldout.read(site / "heldout", args.limit)
    figures = tally(screen(Screener(bundle, num_threads=1), heldout), heldout.labels, site_malignant(site / "heldout"))
    return figures | {"per_class": TARGET_PER_CLASS, "seconds": time.perf_counter() - started}


def time_200(args: argparse.Namespace, site: Path, work: Path) -> dict:
    """``python -m edge_app.calibrate`` on 50 images per class (200), in the edge environment where given."""
    folder = draw(class_files(site / "calibration"), 50, 7, work / "timing-data", site / "calibration" / CLASSES_FILE)
    python = args.edge_python or sys.executable
    started = time.perf_counter()
    command = [python, "-m", "edge_app.calibrate", str(folder), "--base", str(args.base), "--out",
               str(work / "timing-bundle"), "--force"]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    images = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return {"images": images, "seconds": time.perf_counter() - started, "exit": done.returncode,
            "python": python, "cores": os.cpu_count()}  # fmt: skip


def external_sites(args: argparse.Namespace, work: Path) -> dict:
    """Real other-lab images (external-dev PBC single cells, 150 per type): how well a logistic head on each feature
    source separates the cell types (four labels) and lymphoid from myeloid cells (two), with 50 images per label
    to fit on and the rest to score, over five seeded draws. None of them is malignant, so the site calibration's
    gate (which needs a malignant class) does not apply: this measures the features, with scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from edge_app.runtime import TFLiteModel
    from smearscope_core.imaging import model_pixels

    cells = args.external / "pbc-normal-cells"
    if not cells.is_dir():
        return {"skipped": f"{cells} is absent"}
    base = load_bundle(args.base)
    kinds = sorted(p.name for p in cells.iterdir() if p.is_dir())
    files = [(kind, path) for kind in kinds for path in sorted((cells / kind).iterdir())]
    images = [open_image(path.read_bytes(), path.name) for _, path in progress(files, "reading PBC cells")]
    kind_of = np.array([kinds.index(kind) for kind, _ in files])
    sources = {"EfficientNet-Lite0 features": (TFLiteModel(str(base.folder / base.card["features"]["file"]),
                                                           num_threads=1), "features", 224),
               "default model embedding": (TFLiteModel(str(base.model_path), num_threads=1), "embedding",
                                           int(base.card["input"]["height"]))}  # fmt: skip
    mapping = ColourMapping.from_section(fit_colour_mapping("macenko", [np.asarray(i) for i in images[::5]],
                                                           base.card["colour_reference"]))  # fmt: skip
    tasks = {"four cell types": kind_of, "lymphoid vs myeloid": (kind_of != kinds.index("lymphocyte")).astype(int)}
    out: dict = {"images": len(files), "per_label_fit": 50, "draws": 5}
    for source, (model, output, size) in sources.items():
        for mapped in (False, True):
            shown = [map_colours(i, mapping) for i in images] if mapped else images
            vectors = np.stack([model.run_all(model_pixels(i, size))[output] for i in progress(shown, source)])
            for task, labels in tasks.items():
                scores = []
                for seed in range(5):
                    rng = np.random.default_rng(seed)
                    fit = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:50] for c in np.unique(labels)])
                    rest = np.setdiff1d(np.arange(len(labels)), fit)
                    head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
                    predicted = head.fit(vectors[fit], labels[fit]).predict(vectors[rest])
                    scores.append((float((predicted == labels[rest]).mean()),
                                   float(f1_score(labels[rest], predicted, average="macro"))))  # fmt: skip
                key = f"{task} | {source}{' | colour-mapped' if mapped else ''}"
                out[key] = {"accuracy": float(np.mean([s[0] for s in scores])),
                            "macro_f1": float(np.mean([s[1] for s in scores]))}  # fmt: skip
    return out


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    results: dict = {"command": "python -m bench.site_calibration " + " ".join(argv), "machine": machine_facts(),
                     "base": str(args.base), "variants": {k: VARIANTS[k].description for k in args.variants},
                     "sizes": args.sizes, "repeats": args.repeats, "limit": args.limit}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="smearscope-site-") as temporary:
        work = Path(temporary)
        results["four_label"] = learning_curves(args, args.site, work / "four")
        if args.two_label:
            two = argparse.Namespace(**{**vars(args), "sizes": [TARGET_PER_CLASS], "variants": args.variants[:1]})
            results["two_label"] = learning_curves(two, args.two_label, work / "two")
        results["finetune"] = finetune(args, args.site, work / "finetune")
        results["calibrate_200"] = time_200(args, args.site, work / "timing")
        results["external"] = external_sites(args, work / "external")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y-%m-%d')}-{results['machine']['host'] or 'host'}-{results_name(results)}"
    results["plot"] = str(plot_learning_curves(results, args.out / f"{stem}.png"))
    return results


def _cell(value: object, form: str = ".3f") -> str:
    return "-" if value is None else format(value, form) if isinstance(value, float) else str(value)


def markdown_table(results: dict) -> str:
    lines = [
        f"# Site calibration ({results['command']})",
        "",
        "Held-out images of the simulated site, screened with the app's own refer rules; each size is the mean of "
        f"{results['repeats']} seeded draws (min-max in brackets for the referral rate).",
        "",
        "| site | variant | images per class | referred | raw accuracy | answered accuracy | answered macro-F1 | "
        "sensitivity | specificity | ALL answered benign | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ("four_label", "two_label"):
        block = results.get(key)
        if not block:
            continue
        for variant, sizes in block["rows"].items():
            for size, f in sizes.items():
                span = f.get("referred_range")
                referred = _cell(f.get("referred")) + (f" ({span[0]:.3f}-{span[1]:.3f})" if span else "")
                site = Path(block["site"]).name
                lines.append(
                    f"| {site} | {variant} | {size} | {referred} | {_cell(f.get('raw_accuracy'))} | "
                    f"{_cell(f.get('accuracy_answered'))}"
                    f" | {_cell(f.get('macro_f1_answered'))} | {_cell(f.get('sensitivity_answered'))} | "
                    f"{_cell(f.get('specificity_answered'))} | {_cell(f.get('all_answered_benign'), '.1f')} | "
                    f"{_cell(f.get('fit_seconds'), '.1f')} |"
                )
    if finetuned := results.get("finetune"):
        lines += ["", f"Fine-tuning ({TARGET_PER_CLASS} per class): `{json.dumps(finetuned)}`"]
    timing = results["calibrate_200"]
    lines += ["", f"`python -m edge_app.calibrate` on {timing['images']} images: {timing['seconds']:.1f} s "
              f"(exit {timing['exit']}, {timing['python']}, {timing['cores']} cores)."]  # fmt: skip
    external = results.get("external") or {}
    if "skipped" in external:
        lines += ["", f"External-dev: skipped ({external['skipped']})."]
    else:
        lines += ["", f"Real other-lab images (external-dev PBC, {external['images']} single cells): a logistic "
                  f"head fitted on {external['per_label_fit']} images per label, scored on the rest, mean of "
                  f"{external['draws']} draws:", "", "| task | features | accuracy | macro-F1 |",
                  "|---|---|---|---|"]  # fmt: skip
        for key, figures in external.items():
            if isinstance(figures, dict):
                task, features = key.split(" | ", 1)
                features = features.replace(" | ", ", ")
                lines.append(f"| {task} | {features} | {figures['accuracy']:.3f} | {figures['macro_f1']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_learning_curves(results: dict, path: Path) -> Path:
    """The learning curves (referral rate and answered accuracy by images per class, per variant) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for key, style in (("four_label", "-"), ("two_label", "--")):
        block = results.get(key)
        if not block:
            continue
        site = Path(block["site"]).name
        for variant, sizes in block["rows"].items():
            points = sorted((int(size), f) for size, f in sizes.items() if size.isdigit())
            if not points:
                continue
            x = [size for size, _ in points]
            for axis, figure_key in zip(axes, ("referred", "accuracy_answered", "all_answered_benign"), strict=True):
                axis.plot(x, [f.get(figure_key) for _, f in points], style, marker="o", label=f"{site}: {variant}")
    for axis, title in zip(axes, ("referred (share)", "accuracy of answered images", "ALL images answered benign"),
                           strict=True):  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("images per class")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].axhline(0.15, color="grey", lw=0.8)
    axes[1].axhline(0.95, color="grey", lw=0.8)
    axes[2].axhline(1, color="grey", lw=0.8)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def results_name(results: dict) -> str:
    site = Path(results["four_label"]["site"]).name
    return f"site-calibration-{site}" + (f"-limit{results['limit']}" if results.get("limit") else "")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--plot":  # redraw the plot of a results file
        results = json.loads(Path(sys.argv[2]).read_text())
        print(plot_learning_curves(results, Path(sys.argv[2]).with_suffix(".png")))
        return 0
    return run_script(argv, parse_args, measure, markdown_table, results_name)


if __name__ == "__main__":
    sys.exit(main())
