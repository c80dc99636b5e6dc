"""The split manifest: which image is in train, val or test, read by every stage after training.

The manifest (CSV: path, sha256, class, split, group) is written once by ``train`` and read by the
conversion drift check, the OOD calibration and the benchmarks, so they all report on exactly the
test images training held out. Paths are relative to the dataset root; ``group`` is the duplicate
group, which never straddles two splits. Making a split is training's job (``train/split.py``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smearscope_core.console import progress
from smearscope_core.errors import DatasetError
from smearscope_core.files import sha256_of
from smearscope_core.imaging import model_pixels

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "sha256", "class", "split", "group")


@dataclass(frozen=True)
class ManifestRow:
    path: str
    sha256: str
    class_name: str
    split: str
    group: int


def write_manifest(rows: list[ManifestRow], path: Path) -> str:
    """Write the manifest CSV and return its sha256 (recorded in the model card)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for row in rows:
            writer.writerow([row.path, row.sha256, row.class_name, row.split, row.group])
    return sha256_of(path)


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
    for index, row in enumerate(progress(rows, f"loading images at {size}px")):
        images[index] = model_pixels(root / row.path, size)
    labels = np.array([class_names.index(r.class_name) for r in rows], dtype=np.int32)
    return images, labels
