"""The dataset report: counts per class and split, duplicates found, files rejected and why."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from smearscope_core.manifest import ManifestRow, split_counts
from train.dataset import ScanResult
from train.dedup import DuplicateGroups


def dataset_report(scan: ScanResult, duplicates: DuplicateGroups, rows: list[ManifestRow]) -> dict:
    names = [c.name for c in scan.classes]
    records = scan.records
    sizes = Counter(len(m) for m in duplicates.members().values())
    multi = [m for m in duplicates.members().values() if len(m) > 1]
    return {
        "dataset": scan.dataset_name,
        "root": str(scan.root),
        "class_metadata": scan.metadata_source,
        "files_readable": len(records),
        "files_rejected": len(scan.rejected),
        "rejected": [{"path": r.path, "reason": r.reason} for r in scan.rejected],
        "classes_scanned": scan.class_counts(),
        "duplicates": {
            "near_duplicate_max_hamming_distance": duplicates.max_distance,
            "exact_duplicate_copies_dropped": sum(len(c) for c in duplicates.exact_copies.values()),
            "exact_duplicates": [
                {"kept": records[k].path, "dropped": [records[i].path for i in copies]}
                for k, copies in sorted(duplicates.exact_copies.items())
            ],
            "near_duplicate_pairs": duplicates.near_pairs,
            "groups_with_more_than_one_image": len(multi),
            "group_size_histogram": {str(k): v for k, v in sorted(sizes.items())},
            "mixed_class_groups": [
                [records[i].path for i in m] for m in multi if len({records[i].label for i in m}) > 1
            ],
        },
        "split_counts": split_counts(rows, names),
        "images_in_manifest": len(rows),
    }


def write_dataset_report(report: dict, folder: Path) -> None:
    (folder / "dataset_report.json").write_text(json.dumps(report, indent=2) + "\n")
    names = list(report["classes_scanned"])
    lines = [
        f"# Dataset report: {report['dataset']}",
        "",
        f"Readable files: {report['files_readable']}; rejected: {report['files_rejected']}; "
        f"images in the split manifest: {report['images_in_manifest']}.",
        "",
        "| split | " + " | ".join(names) + " | total |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for split, counts in report["split_counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(counts[n]) for n in names) + f" | {sum(counts.values())} |")
    dup = report["duplicates"]
    lines += [
        "",
        "## Duplicates",
        f"- Exact copies dropped (byte-identical, one kept): {dup['exact_duplicate_copies_dropped']}",
        f"- Near-duplicate pairs (pHash distance <= {dup['near_duplicate_max_hamming_distance']}, "
        f"flips/rotations included): {dup['near_duplicate_pairs']}",
        f"- Groups of more than one image (each kept wholly in one split): {dup['groups_with_more_than_one_image']}",
        f"- Groups that mix classes: {len(dup['mixed_class_groups'])}",
        "",
        "## Rejected files",
    ]
    lines += [f"- `{r['path']}`: {r['reason']}" for r in report["rejected"]] or ["None."]
    (folder / "dataset_report.md").write_text("\n".join(lines) + "\n")
