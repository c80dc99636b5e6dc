"""Leakage-free, deterministic, stratified train/val/test split, written as the manifest.

The manifest itself (row type, CSV read/write, loading its images) is the shared contract in
``smearscope_core.manifest``: every later stage reads it. Byte-identical copies are kept once (the
extra copies are listed in the dataset report); every duplicate group lands wholly in one split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from smearscope_core.errors import DatasetError
from smearscope_core.manifest import ManifestRow
from train.dataset import ImageRecord, ScanResult

if TYPE_CHECKING:  # importing scipy (through dedup) only to name a type would slow the split's import
    from train.dedup import DuplicateGroups


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
