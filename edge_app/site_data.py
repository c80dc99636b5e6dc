"""A site's own labelled images for calibration: folder per class, an optional ``classes.json``, near-duplicates.

The layout is training's (``SITE_DATA/<class>/<images>``, sub-folders allowed), so a clinic can reuse the habit.
Class metadata comes from the optional ``classes.json`` beside the class folders, in training's format
(``{"classes": {"blast": {"display_name": ..., "malignant": true, "severity": 3, "description": ...}}}``);
a folder named like one of the base model's classes takes that class's metadata for what the file leaves out. A
class the base model does not know must say in ``classes.json`` whether it is malignant: guessing "benign" for
a folder called ``blast`` would be the most dangerous default there is.

What stops a calibration (``SiteScan.problems``, one sentence each; exit 2): a missing folder, fewer than two
classes, an empty class, a class with too few readable images to cross-validate, no malignant or no benign
class, an unreadable ``classes.json``. Files that cannot be decoded are listed (``SiteScan.skipped``) and left
out; the rest is calibrated.

Near-duplicates (the same field photographed twice, a re-saved or rotated copy) must stay on one side of every
cross-validation split, or the figures flatter the head. They are grouped by sha256 and by a 64-bit DCT
perceptual hash (pHash, as imagehash computes it: 32 x 32 grey, the 8 x 8 lowest frequencies against their
median) under the 8 flips and rotations, within a Hamming distance of 8: training's rule (train/dedup.py), in
numpy and Pillow only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from edge_app.screening import check_size
from edge_app.settings import IMAGE_SUFFIXES
from smearscope_core.files import sha256_of
from smearscope_core.imaging import ImageError, open_image

CLASSES_FILE = "classes.json"
MIN_IMAGES_TO_FIT = 5  # per class: fewer cannot be cross-validated at all (the gate wants 20)
MIN_GROUPS_TO_FIT = 3  # per class: distinct images (near-duplicate groups), for at least 3 folds
MIN_SIDE = 32  # pixels: smaller files are not smear photographs (training's MIN_IMAGE_SIDE)
NEAR_DUPLICATE_DISTANCE = 8  # pHash bits (training's DEFAULT_MAX_DISTANCE, measured there)
HASH_SIDE, HASH_LOW = 32, 8
METADATA_KEYS = ("display_name", "malignant", "severity", "description")


@dataclass(frozen=True)
class SiteImage:
    path: Path
    relative: str  # to SITE_DATA, POSIX separators: how reports and the card name it
    label: int  # index into SiteScan.classes
    sha256: str


@dataclass
class SiteScan:
    """What a site folder holds: classes (card format, ids 0..C-1), readable images and their near-duplicate
    groups, skipped files, and the problems that stop a calibration."""

    root: Path
    classes: list[dict] = field(default_factory=list)
    images: list[SiteImage] = field(default_factory=list)
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # group id per image
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: files left out
    problems: list[str] = field(default_factory=list)  # sentences: the calibration cannot go on
    notes: list[str] = field(default_factory=list)  # sentences worth reading that do not stop it
    metadata_source: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def labels(self) -> np.ndarray:
        return np.array([image.label for image in self.images], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Readable images per class name."""
        counts = {c["name"]: 0 for c in self.classes}
        for image in self.images:
            counts[self.classes[image.label]["name"]] += 1
        return counts

    @property
    def group_count(self) -> int:
        return len(np.unique(self.groups))


def class_metadata(root: Path, names: list[str], base_classes: list[dict]) -> tuple[list[dict], list[str], str]:
    """(classes in card format, problems, where the metadata came from) for the class folders ``names``."""
    problems: list[str] = []
    path = root / CLASSES_FILE
    described: dict = {}
    source = f"the base model's classes (no {CLASSES_FILE})"
    if path.is_file():
        source = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            described = data.get("classes", {}) if isinstance(data, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return [], [f"The class metadata file {path} cannot be read as JSON ({error})."], source
        if not isinstance(described, dict) or not all(isinstance(v, dict) for v in described.values()):
            return [], [f'The class metadata file {path} must hold {{"classes": {{"<folder>": {{...}}}}}}.'], source
        unknown = sorted(set(described) - set(names))
        if unknown:
            problems.append(f"{path} describes classes that have no folder: {', '.join(unknown)}.")
    base = {c["name"]: c for c in base_classes}
    classes = []
    for index, name in enumerate(names):
        meta = {k: base[name][k] for k in METADATA_KEYS if name in base}
        meta |= {k: v for k, v in described.get(name, {}).items() if k in METADATA_KEYS}
        if "malignant" not in meta or not isinstance(meta["malignant"], bool):
            problems.append(
                f"The class folder {name!r} is not one of the base model's classes ({', '.join(base)}) and "
                f'{CLASSES_FILE} does not say whether it is malignant: add "{name}": {{"malignant": true}} (or false) '
                f"to {root / CLASSES_FILE}."
            )
            continue
        severity = meta.get("severity", 0)
        if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 3:
            problems.append(f"The class {name!r} has severity {severity!r}; it must be a whole number from 0 to 3.")
            continue
        classes.append({"id": index, "name": name, "display_name": str(meta.get("display_name", name)) or name,
                        "malignant": meta["malignant"], "severity": severity,
                        "description": str(meta.get("description", ""))})  # fmt: skip
    if not problems:
        if not any(c["malignant"] for c in classes):
            problems.append(
                f"No class is marked malignant: a screening model must learn what leukemia looks like here (set "
                f'"malignant": true for the leukemia class in {root / CLASSES_FILE}).'
            )
        if all(c["malignant"] for c in classes):
            problems.append("Every class is marked malignant: add a class of normal (benign) cells from this site.")
    return classes, problems, source


def scan_site(
    root: str | Path,
    base_classes: list[dict],
    on_image: Callable[[int, Image.Image], None] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    min_side: int | None = None,
) -> SiteScan:
    """Find the classes and decode every image once (``on_image(index, image)`` sees each readable one, e.g. to keep
    it); no model work. Problems are collected, not raised, so the caller can show all of them at once."""
    root = Path(root)
    scan = SiteScan(root)
    if not root.is_dir():
        scan.problems.append(f"The site folder {root} does not exist." if not root.exists()
                             else f"{root} is a file, not a folder of class folders.")  # fmt: skip
        return scan
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        found = f" ({folders[0].name})" if folders else ""
        scan.problems.append(
            f"The site folder {root} needs one folder of images per class and at least two classes; it has "
            f"{len(folders)}{found}."
        )
        return scan
    scan.classes, scan.problems, scan.metadata_source = class_metadata(root, [p.name for p in folders], base_classes)
    if scan.problems:
        return scan
    listing = [(label, path) for label, folder in enumerate(folders) for path in _files(folder)]
    hashes = []
    for done, (label, path) in enumerate(listing):
        relative = path.relative_to(root).as_posix()
        reason = _unusable(path, relative)
        image = None
        if reason is None:
            try:
                data = path.read_bytes()
                image = open_image(data, relative, min_side=min_side)  # as the app decodes (bundle.decode_side)
            except ImageError as error:
                reason = str(error)
            except OSError as error:
                reason = f"{relative} could not be read ({error.strerror or error})."
        if image is not None and min(image.size) < MIN_SIDE:
            reason = f"{relative} is too small ({image.width} x {image.height} pixels; at least {MIN_SIDE} needed)."
        if reason is not None:
            scan.skipped.append({"path": relative, "reason": reason})
        else:
            if on_image is not None:
                on_image(len(scan.images), image)
            scan.images.append(SiteImage(path, relative, label, sha256_of(data)))
            hashes.append(perceptual_hash(image))
        if progress is not None:
            progress(done + 1, len(listing), "reading images")
    scan.groups, crossing = near_duplicate_groups(
        [i.sha256 for i in scan.images], np.array(hashes, dtype=np.uint64).reshape(-1, 8), scan.labels
    )
    scan.problems += _count_problems(scan, folders)
    for first, second in crossing:
        a, b = scan.images[first], scan.images[second]
        scan.notes.append(f"{a.relative} and {b.relative} look like the same image filed under two classes: check "
                          "their labels (they are kept in one cross-validation fold).")  # fmt: skip
    return scan


def _files(folder: Path) -> list[Path]:
    """Every file under a class folder, sorted; hidden files and folders (``.DS_Store``, ``._x.jpg``) left out."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def _unusable(path: Path, relative: str) -> str | None:
    """Why a file is left out before it is read, or None."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"{relative} is not an image file this app reads ({', '.join(IMAGE_SUFFIXES)})."
    try:
        check_size(path.stat().st_size, relative)
    except ImageError as error:
        return str(error)
    return None


def _count_problems(scan: SiteScan, folders: list[Path]) -> list[str]:
    problems = []
    skipped_in = {f.name: sum(s["path"].split("/")[0] == f.name for s in scan.skipped) for f in folders}
    groups_per_class = {c["name"]: 0 for c in scan.classes}
    labels = scan.labels
    for label, cls in enumerate(scan.classes):
        groups_per_class[cls["name"]] = len(np.unique(scan.groups[labels == label]))
    for name, count in scan.counts().items():
        if count == 0 and not skipped_in[name]:
            problems.append(f"The class folder {scan.root / name} is empty.")
        elif count == 0:
            problems.append(
                f"The class folder {scan.root / name} has no readable images ({skipped_in[name]} files skipped)."
            )
        elif count < MIN_IMAGES_TO_FIT or groups_per_class[name] < MIN_GROUPS_TO_FIT:
            distinct = f" ({groups_per_class[name]} distinct)" if groups_per_class[name] < count else ""
            problems.append(
                f"The class {name!r} has only {count} readable images{distinct}; calibration needs at least "
                f"{MIN_IMAGES_TO_FIT} distinct images per class to cross-validate (and its gate 20)."
            )
    return problems


# ---------------------------------------------------------------- near-duplicates


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """DCT-II basis [HASH_LOW, HASH_SIDE] (unnormalised: only the order of coefficients matters)."""
    n = np.arange(HASH_SIDE)
    return np.cos(math.pi * (2 * n[None, :] + 1) * np.arange(HASH_LOW)[:, None] / (2 * HASH_SIDE))


def perceptual_hash(image: Image.Image) -> np.ndarray:
    """pHash of the image under each of its 8 flips and rotations: uint64 [8] (the first: as it is)."""
    grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    variants = (grey, grey[:, ::-1], grey[::-1], np.rot90(grey, 1), np.rot90(grey, 2), np.rot90(grey, 3), grey.T,
                np.rot90(grey, 2).T)  # fmt: skip
    basis = _dct_matrix()
    hashes = np.zeros(8, dtype=np.uint64)
    for index, variant in enumerate(variants):
        low = basis @ variant @ basis.T
        bits = (low > np.median(low)).ravel()
        hashes[index] = np.packbits(bits).view(">u8")[0]
    return hashes


def _popcount(values: np.ndarray) -> np.ndarray:
    return np.unpackbits(values.view(np.uint8).reshape(*values.shape, 8), axis=-1).sum(axis=-1)


def near_duplicate_groups(
    sha256s: list[str], hashes: np.ndarray, labels: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Group ids (0.., in order of first image) joining identical files and pHashes within ``max_distance`` under
    any flip or rotation; and the joined pairs whose labels differ (the same image in two classes)."""
    n = len(sha256s)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = []
    first_of: dict[str, int] = {}
    for index, sha in enumerate(sha256s):
        if sha in first_of:
            pairs.append((first_of[sha], index))
        first_of.setdefault(sha, index)
    for i in range(n - 1):
        distance = _popcount(hashes[i, 0] ^ hashes[i + 1 :]).min(axis=1)
        pairs += [(i, int(j) + i + 1) for j in np.flatnonzero(distance <= max_distance)]
    crossing = []
    for a, b in pairs:
        parent[find(b)] = find(a)
        if labels[a] != labels[b]:
            crossing.append((a, b))
    roots: dict[int, int] = {}
    groups = np.array([roots.setdefault(find(i), len(roots)) for i in range(n)], dtype=np.int64)
    return groups, sorted(set(crossing))
