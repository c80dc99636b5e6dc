"""``python -m bench.field_scale``: does the magnification check refer zoomed fields and pass the same smear?

``smearscope_core.scale.field_scale`` measures the cells' typical diameter in model pixels. This fits the card
section (``fit_scale``: the train split's median, the band from the train and val splits) on the split in the
run's manifest, then measures the held-out test split as it is and changed the ways a clinic's picture differs:

- zoomed 1.25/1.5/2/3x: the centre 1/z of the original image resized back to its size (bicubic), as a higher
  magnification or a digital zoom shows it; these must be referred (1.25x may pass: a clinic's normal spread);
- a larger camera frame of the same field (the original upsampled 2/3/4x, bicubic), flipped, turned 90/180/270
  degrees, re-encoded as JPEG quality 75: the same smear, which must pass;
- the other microscopes of ``train/microscopes.py`` (stain, gamma, white balance, blur, JPEG, zoom), applied to the
  model pixels, and out-of-focus (Gaussian blur, radius 1 px at the model's size) and grayscale copies;
- a lower magnification (0.5x: four test images tiled 2 x 2; 0.67x: the centre 3/4 of such a tile);
- the external-dev folders (another lab's single cells at a higher magnification, another lab's fields).

Per set: the median ratio to the training median, its 5th and 95th percentiles, and the share outside the band
(referred by this check), larger and smaller; the targets the issue sets are checked. Two simpler scale figures
are fitted and measured the same way for comparison (``--compare``): the luminance autocorrelation half-width
(``ood.image_features``' ``log_correlation_length``) and the peak of the radially averaged power spectrum.
The median cost of ``field_scale`` per image is timed with ``time.perf_counter`` on 500 images.

Writes bench/results/<date>-<host>-field-scale.{json,md} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.measure import PROJECT_ROOT, limit_suffix, machine_facts, run_script
from smearscope_core.console import logger, progress
from smearscope_core.errors import InputError
from smearscope_core.files import CARD_FILE
from smearscope_core.imaging import load_rgb, model_pixels
from smearscope_core.manifest import read_manifest
from smearscope_core.model_card import read_card
from smearscope_core.ood import FEATURE_NAMES, image_features
from smearscope_core.paths import DEFAULT_DATASET, EXTERNAL_DEV_DATASET
from smearscope_core.scale import METHOD, METHOD_VERSION, ScaleCheck, field_scale, fit_scale
from train.microscopes import MICROSCOPES, simulate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
ZOOMS = (1.25, 1.5, 2.0, 3.0)
FRAMES = (2, 3, 4)
TIMED_IMAGES = 500
# set name -> (at most this share referred) or (at least this share referred); the targets
TARGETS = {
    "test as it is": ("max", 0.01),
    **{f"camera frame {f}x larger": ("max", 0.01) for f in FRAMES},
    "flipped": ("max", 0.01),
    **{f"turned {a}": ("max", 0.01) for a in (90, 180, 270)},
    "JPEG quality 75": ("max", 0.01),
    "zoomed 1.5x": ("min", 0.90),
    "zoomed 2x": ("min", 0.99),
    "zoomed 3x": ("min", 0.99),
}

log = logger("bench")
Images = Callable[[], np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.field_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="the training dataset's folder")
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "runs" / "default" / "manifest.csv",
                        help="the split manifest (a run folder's manifest.csv)")  # fmt: skip
    parser.add_argument("--external", type=Path, default=EXTERNAL_DEV_DATASET, help="folder of other labs' images")
    parser.add_argument("--size", type=int, help="the model's input side in pixels (default: the manifest's run's)")
    parser.add_argument("--limit", type=int, default=0, help="every k-th image, at most N per split (0: all)")
    parser.add_argument("--compare", action="store_true", help="also fit and measure two simpler scale figures")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error("--limit must be 0 (all images) or more")
    if args.size is None:  # the check is fitted at the input side of the model it ships with
        card = args.manifest.parent / CARD_FILE
        if not card.is_file():
            parser.error(f"--size is needed: {card} does not exist to say the model's input side")
        args.size = int(read_card(card)["input"]["height"])
    return args


def every_kth(items: list, limit: int) -> list:
    return items[:: max(1, len(items) // limit)][:limit] if limit else items


def zoom(image: Image.Image, factor: float) -> Image.Image:
    """The centre 1/factor of the image resized back to its size: a higher magnification (or a digital zoom)."""
    w, h = image.size
    side_w, side_h = round(w / factor), round(h / factor)
    left, top = (w - side_w) // 2, (h - side_h) // 2
    return image.crop((left, top, left + side_w, top + side_h)).resize((w, h), Image.Resampling.BICUBIC)


def camera_frame(image: Image.Image, factor: int) -> Image.Image:
    """The same field from a camera with ``factor`` times more pixels a side."""
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def tiled(images: list[Image.Image], index: int, crop: float = 1.0) -> Image.Image:
    """Four different images side by side (2 x 2), the centre ``crop`` of it: a field at a lower magnification."""
    tiles = [images[(index + k * 37) % len(images)] for k in range(4)]
    w, h = tiles[0].size
    canvas = Image.new("RGB", (2 * w, 2 * h))
    for k, tile in enumerate(tiles):
        canvas.paste(tile.resize((w, h)), ((k % 2) * w, (k // 2) * h))
    side = round(2 * min(w, h) * crop)
    left, top = (2 * w - side) // 2, (2 * h - side) // 2
    return canvas.crop((left, top, left + side, top + side))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def shifted_sets(originals: list[Image.Image], pixels: np.ndarray, size: int) -> dict[str, Images]:
    """Each changed copy of the test split, made when it is measured (one at a time keeps memory small)."""

    def from_originals(change: Callable[[Image.Image], Image.Image]) -> Images:
        return lambda: np.stack([model_pixels(change(im), size) for im in originals])

    def from_pixels(change: Callable[[np.ndarray], np.ndarray]) -> Images:
        return lambda: np.stack([change(p) for p in pixels])

    sets: dict[str, Images] = {"test as it is": lambda: pixels}
    for factor in ZOOMS:
        sets[f"zoomed {factor:g}x"] = from_originals(lambda im, f=factor: zoom(im, f))
    for factor in FRAMES:
        sets[f"camera frame {factor}x larger"] = from_originals(lambda im, f=factor: camera_frame(im, f))
    sets["flipped"] = from_pixels(lambda p: p[:, ::-1])
    for turns, angle in ((1, 90), (2, 180), (3, 270)):
        sets[f"turned {angle}"] = from_pixels(lambda p, k=turns: np.rot90(p, k))
    sets["JPEG quality 75"] = from_originals(lambda im: jpeg(im, 75))
    for name, scope in MICROSCOPES.items():
        sets[f"microscope: {name}"] = lambda s=scope: simulate(pixels, s)
    sets["out of focus (blur 1 px)"] = from_pixels(
        lambda p: np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(1.0)))
    )
    sets["grayscale"] = from_pixels(lambda p: np.asarray(Image.fromarray(p).convert("L").convert("RGB")))
    sets["lower magnification 0.5x (2 x 2 tiles)"] = lambda: np.stack(
        [model_pixels(tiled(originals, i), size) for i in range(len(originals))]
    )
    sets["lower magnification 0.67x"] = lambda: np.stack(
        [model_pixels(tiled(originals, i, 0.75), size) for i in range(len(originals))]
    )
    return sets


def external_sets(root: Path, size: int, limit: int) -> dict[str, Images]:
    if not root.is_dir():
        log.info(f"no external images at {root}: skipped")
        return {}
    folders = sorted({p.parent for p in image_files(root)})
    return {
        f"external: {folder.relative_to(root).as_posix()}": (
            lambda f=folder: np.stack([model_pixels(p, size) for p in every_kth(image_files(f), limit)])
        )
        for folder in folders
    }


def autocorrelation_width(pixels: np.ndarray) -> float:
    """The luminance autocorrelation's half-width in pixels (the unfamiliar-image check's texture feature)."""
    return math.exp(image_features(pixels)[FEATURE_NAMES.index("log_correlation_length")])


def spectrum_peak(pixels: np.ndarray) -> float:
    """The scale (Gaussian-derivative sigma, pixels) of most luminance energy in the radially averaged power
    spectrum (Hann window): the classic texture-scale estimate."""
    lum = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    n = lum.shape[0]
    window = np.outer(np.hanning(n), np.hanning(lum.shape[1]))
    power = np.abs(np.fft.rfft2((lum - lum.mean()) * window)) ** 2
    power[:, 1 : (lum.shape[1] + 1) // 2] *= 2
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(lum.shape[1])[None, :])
    radial = np.bincount(np.round(radius * n).astype(int).ravel(), power.ravel())
    freq = np.arange(radial.size) / n
    sigmas = np.geomspace(0.7, 40.0, 48)
    u = freq[None, :] * sigmas[:, None]
    energy = ((u**2) * np.exp(-((2 * np.pi * u) ** 2))) @ radial  # squared gradient-of-Gaussian response
    return float(sigmas[int(np.argmax(energy))])


MEASURES: dict[str, Callable[[np.ndarray], float]] = {
    f"{METHOD} v{METHOD_VERSION} (field_scale)": field_scale,
    "autocorrelation half-width": autocorrelation_width,
    "power spectrum peak": spectrum_peak,
}


def measured(images: np.ndarray, measure: Callable[[np.ndarray], float], label: str) -> np.ndarray:
    return np.array([measure(p) for p in progress(images, label, total=len(images))])


def summary(values: np.ndarray, check: ScaleCheck) -> dict:
    ratios = values / check.median
    ok = ratios[np.isfinite(ratios)]
    larger, smaller = int((ok > check.high).sum()), int((ok < check.low).sum())
    share = (larger + smaller) / len(ok) if len(ok) else None
    quantiles = np.percentile(ok, [5, 50, 95]) if len(ok) else [math.nan] * 3
    return {
        "n": len(values),
        "unmeasured": int(len(values) - len(ok)),
        "ratio_p5": float(quantiles[0]),
        "ratio_median": float(quantiles[1]),
        "ratio_p95": float(quantiles[2]),
        "referred": larger + smaller,
        "referred_share": share,
        "larger": larger,
        "smaller": smaller,
    }


def target_met(name: str, share: float | None) -> bool | None:
    if name not in TARGETS or share is None:
        return None
    kind, limit = TARGETS[name]
    return share <= limit if kind == "max" else share >= limit


def timing(images: np.ndarray, count: int = TIMED_IMAGES) -> dict:
    chosen = [images[i % len(images)] for i in range(count)]
    field_scale(chosen[0])  # warm-up
    seconds = []
    for pixels in chosen:
        started = time.perf_counter()
        field_scale(pixels)
        seconds.append(time.perf_counter() - started)
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "n": count}


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    if not args.manifest.is_file():
        raise InputError(f"There is no split manifest at {args.manifest}: train a model first (python -m train).")
    if not args.data.is_dir():
        raise InputError(f"The training dataset is not at {args.data} (see docs/training.md).")
    rows = read_manifest(args.manifest)
    splits = {s: every_kth([r for r in rows if r.split == s], args.limit) for s in ("train", "val", "test")}
    measures = MEASURES if args.compare else dict(list(MEASURES.items())[:1])
    pixels = {
        split: np.stack([model_pixels(args.data / r.path, args.size) for r in progress(chosen, f"loading {split}")])
        for split, chosen in splits.items()
    }
    fitted = {
        name: {split: measured(pixels[split], fn, f"{name}: {split}") for split in ("train", "val")}
        for name, fn in measures.items()
    }
    sections = {name: fit_scale(v["train"], v["val"], image_size=args.size) for name, v in fitted.items()}
    checks = {name: ScaleCheck(s["median"], s["band"]["low"], s["band"]["high"]) for name, s in sections.items()}
    originals = [load_rgb(args.data / r.path) for r in splits["test"]]
    sets = {**shifted_sets(originals, pixels["test"], args.size), **external_sets(args.external, args.size, args.limit)}
    rows_out: dict[str, dict] = {}
    for set_name, make in sets.items():
        images = make()
        rows_out[set_name] = {}
        for name, fn in measures.items():
            figures = summary(measured(images, fn, f"{name}: {set_name}"), checks[name])
            figures["target_met"] = target_met(set_name, figures["referred_share"])
            rows_out[set_name][name] = figures
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.field_scale", *argv]),
        "machine": machine_facts(),
        "data": str(args.data),
        "manifest": str(args.manifest),
        "external": str(args.external),
        "size": args.size,
        "limit": args.limit,
        "sections": sections,
        "targets": {name: {"kind": kind, "share": share} for name, (kind, share) in TARGETS.items()},
        "sets": rows_out,
        "timing": {"field_scale": timing(pixels["test"])},
    }


def _share(figures: dict) -> str:
    share = figures["referred_share"]
    return "-" if share is None else f"{share:.1%} ({figures['referred']})"


def _target(name: str, figures: dict) -> str:
    if name not in TARGETS:
        return ""
    kind, limit = TARGETS[name]
    text = f"{'<=' if kind == 'max' else '>='} {limit:.0%}"
    return f"{text} {'met' if figures['target_met'] else '**not met**'}"


def markdown_table(results: dict) -> str:
    names = list(results["sections"])
    main_name = names[0]
    section = results["sections"][main_name]
    limited = f", every k-th image, at most {results['limit']} per split and folder" if results["limit"] else ""
    lines = [
        f"Magnification check (`smearscope_core/scale.py`, {main_name}){limited}. Command: `{results['command']}`.",
        "",
        f"Fitted on the manifest's split ({section['n']['train']} train, {section['n']['val']} val images): typical "
        f"cell diameter {section['median']:.2f} model pixels at {results['size']} px; the band of ratios that passes "
        f"is {section['band']['low']:.3f} to {section['band']['high']:.3f} (the train and val ratios' "
        f"{section['quantiles'][0]:.1%}/{section['quantiles'][1]:.1%} quantiles, divided by "
        f"{section['margin']['low']:g} and multiplied by {section['margin']['high']:g}). "
        f"Median cost {results['timing']['field_scale']['p50_ms']:.2f} ms per image "
        f"(p95 {results['timing']['field_scale']['p95_ms']:.2f} ms, {results['timing']['field_scale']['n']} images, "
        f"one thread, {results['machine'].get('cpu', 'this machine')}).",
        "",
        "| images | n | median ratio | ratio p5-p95 | referred by this check | larger / smaller | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, row in results["sets"].items():
        f = row[main_name]
        lines.append(
            f"| {set_name} | {f['n']} | {f['ratio_median']:.2f} | {f['ratio_p5']:.2f}-{f['ratio_p95']:.2f} | "
            f"{_share(f)} | {f['larger']} / {f['smaller']} | {_target(set_name, f)} |"
        )
    if len(names) > 1:
        lines += [
            "",
            "Simpler scale figures, fitted and banded the same way (median ratio / referred):",
            "",
            "| images | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for set_name, row in results["sets"].items():
            cells = [f"{row[n]['ratio_median']:.2f} / {_share(row[n])}" for n in names]
            lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratio: the image's typical cell diameter over the training images' median. Referred: outside the band "
        "(this check only; the app's other checks refer more). Zoomed: the centre 1/z of the original resized "
        "back (bicubic); camera frame: the original upsampled (bicubic) before the model's resize; microscopes: "
        "`train/microscopes.py` on the model pixels.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_script(argv, parse_args, measure, markdown_table, lambda results: "field-scale" + limit_suffix(results))


if __name__ == "__main__":
    sys.exit(main())
