"""``python -m bench.site_sim``: a simulated clinic ("site") built from the real validation and test images.

No second lab with labelled ALL images is available, so site calibration (``python -m edge_app.calibrate``) and
fine-tuning (``python -m train --finetune``) are measured on a documented, reproducible simulation: every val and
test image of the split manifest is passed through ONE fixed simulated site (an entry of ``SITES``: one table, one
routine, as train/microscopes.py's ``MICROSCOPES``) and written as a folder-per-class dataset:

    DIR/calibration/<class>/*.jpg + classes.json   the pool a clinic would label (about half)
    DIR/heldout/<class>/*.jpg + classes.json       never fitted on: what the figures are reported on
    DIR/site_manifest.csv                           which source file went where (paths, not pixels)
    DIR/site.json                                   the site's parameters, seed, sources and counts

The split is group-aware (a near-duplicate group of train/dedup.py never straddles the two sides) and stratified
by source class; it depends only on the manifest and the seed, so every site and both label sets hold out the same
source images. The steps, at the image's full resolution, in the order light meets them (docs/site-calibration-sim.md
gives the literature): stain shift in HED space (Ruifrok & Johnston colour deconvolution, Tellez et al.'s
scale-and-shift form), magnification (centre crop resized back), focus blur, the circular field of a phone held to
the eyepiece (dark outside, soft edge, brightness falling off towards the rim), sensor noise, the camera's JPEG
re-encoding; the file is then saved as JPEG quality 90 at the source size. Seeded per image: the same inputs and
seed give the same bytes. The images are the dataset's (never to be committed): write them under runs/ or /tmp.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from smearscope_core.console import logger, progress
from smearscope_core.errors import DatasetError, ExitCode, InputError, SmearScopeError, report
from smearscope_core.files import sha256_of
from smearscope_core.imaging import load_rgb
from smearscope_core.manifest import ManifestRow, read_manifest
from smearscope_core.paths import DEFAULT_DATASET, PROJECT_ROOT
from train.dataset import METADATA_FILE, ClassInfo, load_class_metadata

SOURCE_SPLITS = ("val", "test")  # the images training never fitted on
SIDES = ("calibration", "heldout")
SAVE_QUALITY = 90  # what a camera writes
SITE_FILE = "site.json"
SITE_MANIFEST = "site_manifest.csv"
SITE_MANIFEST_FIELDS = ("file", "side", "class", "source", "source_sha256", "source_class", "source_split", "group")
LABEL_SETS = ("source", "two")
MALIGNANT, BENIGN = "malignant", "benign"  # the two-label site's folders

log = logger("bench")


@dataclass(frozen=True)
class Site:
    """One simulated clinic: its stain batch, optics and camera. Lengths are fractions of the image's short side,
    so a site does the same to a 224-px crop and a full camera frame."""

    description: str
    hed_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # stain amount per H, E, D channel
    hed_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # optical density added per channel
    jitter_scale: float = 0.0  # slide to slide: each image's scale times U(1 - j, 1 + j) per channel
    jitter_shift: float = 0.0  # slide to slide: each image's shift plus U(-j, j) per channel
    zoom: float = 1.0  # magnification relative to the training lab's
    blur: float = 0.0  # Gaussian radius (focus), fraction of the short side
    field: float | None = None  # diameter of the eyepiece's circular field, fraction of the short side; None: none
    field_edge: float = 0.02  # width of the field's soft edge, fraction of the short side
    rim_falloff: float = 0.0  # brightness lost at the field's rim (quadratic from the centre)
    outside_level: float = 4.0  # grey level outside the field (0-255)
    noise: float = 0.0  # sensor noise, standard deviation in grey levels (0-255)
    jpeg_quality: int | None = None  # the camera's or phone's own JPEG compression before the file is saved


SITES = {
    "phone-eyepiece": Site(
        "a phone held to the eyepiece: stronger hematoxylin and weaker eosin in HED space, 1.3x magnification, "
        "soft focus, circular field of 0.92 of the short side with 25% rim fall-off, sensor noise, JPEG 70",
        hed_scale=(1.15, 0.8, 1.05), hed_shift=(0.02, -0.02, 0.0), jitter_scale=0.04, jitter_shift=0.01,
        zoom=1.3, blur=0.005, field=0.92, field_edge=0.02, rim_falloff=0.25, noise=4.0, jpeg_quality=70,
    ),
    "other-lab-camera": Site(
        "another lab's microscope camera: weaker hematoxylin and stronger eosin in HED space, 1.25x "
        "magnification, mild JPEG (85)",
        hed_scale=(0.85, 1.2, 1.0), hed_shift=(-0.02, 0.03, 0.01), jitter_scale=0.04, jitter_shift=0.01,
        zoom=1.25, jpeg_quality=85,
    ),
}  # fmt: skip

# Ruifrok & Johnston (2001) stain vectors as rows (hematoxylin, eosin, DAB) in RGB optical density, as in
# scikit-image's rgb_from_hed: optical density = concentrations @ RGB_FROM_HED.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


# ---------------------------------------------------------------- the site's steps


def rgb_to_hed(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] -> stain concentrations [..., 3] (H, E, D); optical density as in train/microscopes.py
    (-log of (level + 1) / 256), unclipped so that ``hed_to_rgb`` inverts it exactly."""
    density = -np.log((pixels.astype(np.float64) + 1.0) / 256.0)
    return density @ HED_FROM_RGB


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Stain concentrations [..., 3] -> float RGB levels [..., 3] (0-255, not rounded)."""
    return np.clip(np.exp(-(hed @ RGB_FROM_HED)) * 256.0 - 1.0, 0.0, 255.0)


def shift_stain(pixels: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """A stain batch's change, c' = scale * c + shift per HED channel, on uint8 RGB; float levels back."""
    return hed_to_rgb(rgb_to_hed(pixels) * scale + shift)


def zoom(image: Image.Image, factor: float) -> Image.Image:
    """A higher magnification: the centre 1/factor of the field resized back to the same size (bicubic)."""
    if factor == 1.0:
        return image
    width, height = image.size
    crop_w, crop_h = width / factor, height / factor
    box = ((width - crop_w) / 2, (height - crop_h) / 2, (width + crop_w) / 2, (height + crop_h) / 2)
    return image.resize((width, height), Image.Resampling.BICUBIC, box=box)


def vignette(levels: np.ndarray, diameter: float, edge: float, falloff: float, outside: float) -> np.ndarray:
    """The circular field of an eyepiece seen by a phone: float levels [H, W, 3] dark outside a centred circle of
    ``diameter`` (fraction of the short side) with a soft edge, and dimmer towards the rim inside it."""
    height, width = levels.shape[:2]
    short = min(height, width)
    radius = diameter * short / 2
    yy, xx = np.mgrid[:height, :width]
    r = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)
    inside = 1.0 / (1.0 + np.exp(np.clip((r - radius) / max(edge * short / 4, 1e-6), -50, 50)))  # logistic edge
    shading = 1.0 - falloff * np.minimum(r / radius, 1.0) ** 2
    gain = (inside * shading)[..., None]
    return levels * gain + outside * (1.0 - inside[..., None])


def image_rng(seed: int, source: str) -> np.random.Generator:
    """The random draws of one image: from the seed and the source path, so they do not depend on order."""
    return np.random.default_rng([seed, zlib.crc32(source.encode())])


def simulate(image: Image.Image, site: Site, rng: np.random.Generator) -> Image.Image:
    """``image`` (RGB, any size) as ``site`` would have taken it, at the same size; before the file is saved."""
    scale = np.asarray(site.hed_scale) * rng.uniform(1 - site.jitter_scale, 1 + site.jitter_scale, 3)
    shift = np.asarray(site.hed_shift) + rng.uniform(-site.jitter_shift, site.jitter_shift, 3)
    picture = Image.fromarray(_to_uint8(shift_stain(np.asarray(image), scale, shift)))
    picture = zoom(picture, site.zoom)
    short = min(picture.size)
    if site.blur:
        picture = picture.filter(ImageFilter.GaussianBlur(site.blur * short))
    levels = np.asarray(picture, dtype=np.float64)
    if site.field is not None:
        levels = vignette(levels, site.field, site.field_edge, site.rim_falloff, site.outside_level)
    if site.noise:
        levels = levels + rng.normal(0.0, site.noise, levels.shape)
    picture = Image.fromarray(_to_uint8(levels))
    if site.jpeg_quality is not None:
        picture = Image.open(io.BytesIO(jpeg_bytes(picture, site.jpeg_quality))).convert("RGB")
    return picture


def _to_uint8(levels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(levels), 0, 255).astype(np.uint8)


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# ---------------------------------------------------------------- the split


@dataclass(frozen=True)
class Placement:
    """One source image in the site: its side, its class in the site, and its file relative to DIR."""

    row: ManifestRow
    side: str
    class_name: str
    file: str


def assign_sides(rows: list[ManifestRow], share: float, seed: int) -> dict[int, str]:
    """Near-duplicate group -> side. Per source class (a group counts for its most frequent class), the groups
    in a seeded order each go to the side furthest below its target (``share`` of the class's images for
    calibration), so groups stay whole and every class is split about ``share`` : 1 - ``share``."""
    members: dict[int, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        members[row.group].append(row)
    by_class: dict[str, list[int]] = defaultdict(list)
    for group in sorted(members):
        majority = Counter(r.class_name for r in members[group]).most_common(1)[0][0]
        by_class[majority].append(group)
    rng = np.random.default_rng(seed)
    sides: dict[int, str] = {}
    for class_name in sorted(by_class):
        groups = [by_class[class_name][i] for i in rng.permutation(len(by_class[class_name]))]
        total = sum(len(members[g]) for g in groups)
        targets = {"calibration": share * total, "heldout": (1 - share) * total}
        filled = dict.fromkeys(SIDES, 0)
        for group in groups:
            side = max(SIDES, key=lambda s: targets[s] - filled[s])  # ties: calibration
            sides[group] = side
            filled[side] += len(members[group])
    return sides


def site_class_of(classes: list[ClassInfo], labels: str) -> dict[str, str]:
    """Source class -> the site's class: the same name, or ``malignant``/``benign`` pooled by the malignant flag."""
    if labels == "source":
        return {c.name: c.name for c in classes}
    if len({c.malignant for c in classes}) != 2:
        raise DatasetError("Two labels need at least one class marked malignant and one not in the class metadata.")
    return {c.name: MALIGNANT if c.malignant else BENIGN for c in classes}


def plan(rows: list[ManifestRow], classes: list[ClassInfo], labels: str, share: float, seed: int) -> list[Placement]:
    """Where every val and test row goes; output names are the source file's stem (the source class prefixed
    where two pooled sources share one)."""
    chosen = sorted((r for r in rows if r.split in SOURCE_SPLITS), key=lambda r: r.path)
    if not chosen:
        raise DatasetError("The manifest has no val or test images to build a site from.")
    sides = assign_sides(chosen, share, seed)
    site_class = site_class_of(classes, labels)
    stems = Counter((sides[r.group], site_class[r.class_name], Path(r.path).stem) for r in chosen)
    placements = []
    for row in chosen:
        side, class_name, stem = sides[row.group], site_class[row.class_name], Path(row.path).stem
        if stems[(side, class_name, stem)] > 1:
            stem = row.path.rsplit(".", 1)[0].replace("/", "__")
        placements.append(Placement(row, side, class_name, f"{side}/{class_name}/{stem}.jpg"))
    return placements


# ---------------------------------------------------------------- class metadata


def class_metadata(classes: list[ClassInfo], dataset: str, citation: list[str], labels: str) -> dict:
    """The site's classes.json, in the dataset's format: the source classes as they are, or the two pooled ones
    (malignant: the highest severity pooled, a cautious indicator when the subtype is not given)."""
    if labels == "source":
        per_class = {c.name: {"display_name": c.display_name, "malignant": c.malignant, "severity": c.severity,
                              "description": c.description} for c in classes}  # fmt: skip
    else:
        malignant = [c for c in classes if c.malignant]
        benign = [c for c in classes if not c.malignant]
        pooled = ", ".join(c.display_name for c in malignant)
        per_class = {
            BENIGN: {
                "display_name": benign[0].display_name if len(benign) == 1 else "Benign",
                "malignant": False,
                "severity": 0,
                "description": f"No malignant cells seen (pooled: {', '.join(c.display_name for c in benign)}).",
            },
            MALIGNANT: {
                "display_name": "Malignant (ALL)" if all("ALL" in c.display_name for c in malignant) else "Malignant",
                "malignant": True,
                "severity": max(c.severity for c in malignant),
                "description": f"Malignant cells, subtype not given (pooled: {pooled}).",
            },
        }
    return {"dataset": {"name": dataset, "citation": citation}, "classes": per_class}


# ---------------------------------------------------------------- the build


def prepare_out(out: Path, data: Path) -> None:
    """Refuse a folder inside the dataset or one that holds something else; empty a previous site build."""
    if out.resolve().is_relative_to(data.resolve()):
        raise InputError(f"{out} is inside the dataset {data}; write the site elsewhere (runs/ or /tmp).")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SITE_FILE).is_file():
            raise InputError(f"{out} is not empty and holds no {SITE_FILE}; choose a new or empty folder.")
        for side in SIDES:
            shutil.rmtree(out / side, ignore_errors=True)
        for name in (SITE_MANIFEST, SITE_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def build(
    out: Path,
    data: Path,
    manifest: Path,
    site_name: str,
    labels: str = "source",
    seed: int = 0,
    share: float = 0.5,
    only: set[str] | None = None,
) -> dict:
    """Write the site under ``out``; return site.json's content. ``only``: source paths to write (a quick check
    of a few; the split is still made on the whole manifest)."""
    if site_name not in SITES:
        raise InputError(f"Unknown site {site_name!r}; the sites are {', '.join(SITES)}.")
    if not 0 < share < 1:
        raise InputError(f"The calibration share must be between 0 and 1, not {share}.")
    if not data.is_dir():
        raise DatasetError(f"The dataset folder {data} does not exist.")
    if not manifest.is_file():
        raise DatasetError(f"The split manifest {manifest} does not exist (train writes it into the run folder).")
    rows = read_manifest(manifest)
    class_names = sorted({r.class_name for r in rows})
    classes, dataset, citation, metadata_source = load_class_metadata(data, class_names)
    placements = plan(rows, classes, labels, share, seed)
    if only is not None:
        placements = [p for p in placements if p.row.path in only]
    site = SITES[site_name]
    prepare_out(out, data)
    for side in SIDES:
        (out / side).mkdir()
        for class_name in sorted({p.class_name for p in placements}):
            (out / side / class_name).mkdir()
        metadata = class_metadata(classes, f"{dataset}: simulated site {site_name}, {side} images", citation, labels)
        (out / side / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    for placement in progress(placements, f"site {site_name}"):
        source = data / placement.row.path
        if not source.is_file():
            raise DatasetError(f"{source} is in the manifest but not in the dataset folder.")
        if sha256_of(source) != placement.row.sha256:
            raise DatasetError(f"{source} differs from the manifest's sha256; the manifest is for another copy.")
        picture = simulate(load_rgb(source), site, image_rng(seed, placement.row.path))
        (out / placement.file).write_bytes(jpeg_bytes(picture, SAVE_QUALITY))
    write_site_manifest(placements, out / SITE_MANIFEST)
    counts = {side: {c: 0 for c in sorted({p.class_name for p in placements})} for side in SIDES}
    for placement in placements:
        counts[placement.side][placement.class_name] += 1
    record = {
        "site": site_name,
        "parameters": asdict(site),
        "labels": labels,
        "seed": seed,
        "calibration_share": share,
        "saved_as": f"JPEG quality {SAVE_QUALITY}, source size",
        "source": {
            "dataset": dataset,
            "class_metadata": metadata_source,
            "manifest_sha256": sha256_of(manifest),
            "splits": list(SOURCE_SPLITS),
            "images": len(placements),
        },
        "counts": counts,
        "groups": {side: len({p.row.group for p in placements if p.side == side}) for side in SIDES},
    }
    (out / SITE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def write_site_manifest(placements: list[Placement], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SITE_MANIFEST_FIELDS)
        for p in placements:
            writer.writerow([p.file, p.side, p.class_name, p.row.path, p.row.sha256, p.row.class_name, p.row.split,
                             p.row.group])  # fmt: skip


def counts_table(record: dict) -> str:
    classes = list(record["counts"]["calibration"])
    lines = [f"{'class':<12} {'calibration':>11} {'heldout':>8}"]
    lines += [f"{c:<12} {record['counts']['calibration'][c]:>11} {record['counts']['heldout'][c]:>8}" for c in classes]
    total = {side: sum(record["counts"][side].values()) for side in SIDES}
    lines.append(f"{'total':<12} {total['calibration']:>11} {total['heldout']:>8}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.site_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", choices=sorted(SITES), default="phone-eyepiece")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/site-SITE[-two]; "
                        "git-ignored: the images are the dataset's and are never committed)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="the dataset the manifest points into")
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "runs" / "default" / "manifest.csv")
    parser.add_argument("--labels", choices=LABEL_SETS, default="source",
                        help="source: the dataset's classes; two: malignant and benign pooled")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--share", type=float, default=0.5, help="share of each class for calibration")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = PROJECT_ROOT / "runs" / f"site-{args.site}{'-two' if args.labels == 'two' else ''}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        record = build(args.out, args.data, args.manifest, args.site, args.labels, args.seed, args.share)
    except SmearScopeError as error:
        return report(error)
    print(counts_table(record))
    log.info(f"site {args.site} ({args.labels} labels) written to {args.out} in {time.perf_counter() - started:.1f} s")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
