"""Leakage-free, deterministic, stratified train/val/test split, its manifest, and loading its images.

The manifest (CSV: path, sha256, class, split, group) is what every later stage reads, so the
conversion drift check and the benchmarks report on exactly the test images training held out.
Byte-identical copies are kept once (the extra copies are listed in the dataset report); every
duplicate group lands wholly in one split.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_app.imaging import model_pixels
from train.dataset import DatasetError, ImageRecord, ScanResult

if TYPE_CHECKING:  # the manifest readers stay light (no scipy/scikit-learn) for the benchmarks on a Pi
    from train.dedup import DuplicateGroups

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "sha256", "class", "split", "group")


@dataclass(frozen=True)
class ManifestRow:
    path: str
    sha256: str
    class_name: str
    split: str
    group: int


def _one_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of one stratified, group-respecting fold of about ``fraction`` of the rows.

    StratifiedGroupKFold gives folds of 1/k; k is the nearest integer to 1/fraction.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1.0 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise DatasetError(f"Too few distinct images ({len(np.unique(groups))}) for a {fraction:.0%} split.")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held_out = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held_out] = True
    return mask


def make_split(
    scan: ScanResult,
    duplicates: DuplicateGroups,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> list[ManifestRow]:
    """Assign each unique image to train/val/test; groups never straddle two splits."""
    dropped = {i for copies in duplicates.exact_copies.values() for i in copies}
    keep = [i for i in range(len(scan.records)) if i not in dropped]
    records: list[ImageRecord] = [scan.records[i] for i in keep]
    labels = np.array([r.label for r in records])
    groups = np.array([duplicates.group_of[i] for i in keep])
    split = np.full(len(records), "train", dtype=object)
    test = _one_fold(labels, groups, test_fraction, seed)
    split[test] = "test"
    rest = np.nonzero(~test)[0]
    val_share = val_fraction / (1.0 - test_fraction)
    val = _one_fold(labels[rest], groups[rest], val_share, seed + 1)
    split[rest[val]] = "val"
    names = [c.name for c in scan.classes]
    rows = [
        ManifestRow(r.path, r.sha256, names[r.label], str(s), int(g))
        for r, s, g in zip(records, split, groups, strict=True)
    ]
    return sorted(rows, key=lambda row: row.path)


def write_manifest(rows: list[ManifestRow], path: Path) -> str:
    """Write the manifest CSV and return its sha256 (recorded in the model card)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow([row.path, row.sha256, row.class_name, row.split, row.group])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(path: Path) -> list[ManifestRow]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise DatasetError(
                f"{path} is not a split manifest (columns {reader.fieldnames}, expected {MANIFEST_FIELDS})."
            )
        rows = [ManifestRow(r["path"], r["sha256"], r["class"], r["split"], int(r["group"])) for r in reader]
    bad = {r.split for r in rows} - set(SPLITS)
    if bad:
        raise DatasetError(f"{path} has unknown split names: {', '.join(sorted(bad))}.")
    return rows


def split_counts(rows: list[ManifestRow], class_names: list[str]) -> dict[str, dict[str, int]]:
    counts = {s: {c: 0 for c in class_names} for s in SPLITS}
    for row in rows:
        counts[row.split][row.class_name] += 1
    return counts


def check_no_group_leak(rows: list[ManifestRow]) -> None:
    """Raise if any duplicate group (or any sha256) appears in more than one split."""
    for key in ("group", "sha256"):
        seen: dict[object, str] = {}
        for row in rows:
            value = getattr(row, key)
            if seen.setdefault(value, row.split) != row.split:
                raise DatasetError(f"Leak: {key} {value} appears in both {seen[value]} and {row.split}.")


def load_images(
    root: Path, rows: list[ManifestRow], size: int, class_names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode, convert to RGB and resize every row: uint8 [N, size, size, 3] and int labels."""
    images = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    for index, row in enumerate(rows):
        images[index] = model_pixels(root / row.path, size)
    labels = np.array([class_names.index(r.class_name) for r in rows], dtype=np.int32)
    return images, labels
