"""Duplicate grouping, the leakage-free stratified split and the manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from smearscope_core.errors import DatasetError
from smearscope_core.manifest import check_no_group_leak, read_manifest, split_counts, write_manifest
from tests.factories import make_dataset
from train.dataset import scan_dataset
from train.dedup import group_duplicates, perceptual_hashes
from train.split import make_split


def _grouped(root: Path):
    scan = scan_dataset(root)
    duplicates = group_duplicates(scan.records, perceptual_hashes(root, scan.records))
    return scan, duplicates


def _group_of(scan, duplicates, path: str) -> int:
    return duplicates.group_of[[r.path for r in scan.records].index(path)]


def test_planted_duplicates_are_grouped(dataset_with_problems: Path) -> None:
    scan, duplicates = _grouped(dataset_with_problems)
    same = [
        ("Alpha/Alpha-000.png", "Alpha/Alpha-000-copy.png"),  # byte-identical
        ("Alpha/Alpha-001.png", "Alpha/Alpha-001-reencoded.jpg"),  # re-encoded as JPEG
        ("Beta/Beta-002.png", "Beta/Beta-002-rotated.png"),  # rotated 90 degrees
        ("Gamma/palette.png", "Gamma/gray.png"),  # same picture, other colour modes
    ]
    for a, b in same:
        assert _group_of(scan, duplicates, a) == _group_of(scan, duplicates, b), (a, b)
    # distinct synthetic images stay apart
    assert _group_of(scan, duplicates, "Alpha/Alpha-002.png") != _group_of(scan, duplicates, "Alpha/Alpha-003.png")
    kept = [scan.records[k].path for k in duplicates.exact_copies]
    assert kept == ["Alpha/Alpha-000-copy.png"] or kept == ["Alpha/Alpha-000.png"]
    assert duplicates.near_pairs >= 3


def test_near_duplicate_search_can_be_switched_off(dataset_with_problems: Path) -> None:
    scan = scan_dataset(dataset_with_problems)
    duplicates = group_duplicates(scan.records, perceptual_hashes(dataset_with_problems, scan.records), -1)
    assert duplicates.near_pairs == 0
    assert len(duplicates.exact_copies) == 1  # exact copies are always grouped


def test_no_group_straddles_two_splits(dataset_with_problems: Path) -> None:
    scan, duplicates = _grouped(dataset_with_problems)
    for seed in range(5):
        rows = make_split(scan, duplicates, 0.2, 0.2, seed=seed)
        check_no_group_leak(rows)
        members = {}
        for row in rows:
            members.setdefault(row.group, set()).add(row.split)
        assert all(len(splits) == 1 for splits in members.values())
        # the byte-identical copy is kept once
        assert len({r.sha256 for r in rows}) == len(rows)


def test_split_is_deterministic_and_stratified(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", per_class=40)
    scan, duplicates = _grouped(root)
    first = make_split(scan, duplicates, 0.15, 0.15, seed=7)
    again = make_split(scan, duplicates, 0.15, 0.15, seed=7)
    other = make_split(scan, duplicates, 0.15, 0.15, seed=8)
    assert first == again
    assert [r.split for r in first] != [r.split for r in other]
    counts = split_counts(first, ["Alpha", "Beta", "Gamma"])
    for split, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        for name in ("Alpha", "Beta", "Gamma"):
            assert abs(counts[split][name] - 40 * fraction) <= 3, (split, name, counts)


def test_manifest_round_trip_and_checksum(tiny_dataset: Path, tmp_path: Path) -> None:
    scan, duplicates = _grouped(tiny_dataset)
    rows = make_split(scan, duplicates, seed=1)
    sha = write_manifest(rows, tmp_path / "manifest.csv")
    assert read_manifest(tmp_path / "manifest.csv") == rows
    assert write_manifest(rows, tmp_path / "again.csv") == sha
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert header == "path,sha256,class,split,group"


def test_leak_check_catches_a_straddling_group(tiny_dataset: Path) -> None:
    scan, duplicates = _grouped(tiny_dataset)
    rows = make_split(scan, duplicates, seed=1)
    test_row = next(r for r in rows if r.split == "test")
    leaked = [*rows, replace(test_row, path="copy.png", split="train")]
    with pytest.raises(DatasetError, match="Leak"):
        check_no_group_leak(leaked)


def test_bad_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="not a split manifest"):
        read_manifest(tmp_path / "m.csv")


def test_split_counts_cover_every_image(tiny_dataset: Path) -> None:
    scan, duplicates = _grouped(tiny_dataset)
    rows = make_split(scan, duplicates, seed=3)
    assert Counter(r.split for r in rows).keys() == {"train", "val", "test"}
    assert sum(sum(c.values()) for c in split_counts(rows, ["Alpha", "Beta", "Gamma"]).values()) == 60
