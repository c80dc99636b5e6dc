"""Refreshing one section of an existing run folder: its splits' images in, the card and metrics.json out.

``--calibrate-ood-only`` (train/ood_calibration.py) and ``--shortcuts-only`` (train/shortcuts.py) both
recompute a section for a run trained before it existed, from the run's own manifest and card; they
share these two steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smearscope_core.files import CARD_FILE
from smearscope_core.manifest import load_images, read_manifest
from smearscope_core.model_card import read_card, write_card

METRICS_FILE = "metrics.json"


@dataclass
class RunSplit:
    """One split of a run's manifest: model-sized images, labels and the image files."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]


def read_run_splits(run: Path, data: Path) -> tuple[dict, dict[str, RunSplit]]:
    """The run's validated card and its train/val/test images, loaded at the card's input size."""
    card = read_card(run / CARD_FILE)
    rows = read_manifest(run / card["training"]["dataset"]["manifest"])
    names, size = [c["name"] for c in card["classes"]], int(card["input"]["height"])
    splits = {}
    for split in ("train", "val", "test"):
        chosen = [r for r in rows if r.split == split]
        images, labels = load_images(data, chosen, size, names)
        splits[split] = RunSplit(images, labels, [data / r.path for r in chosen])
    return card, splits


def write_section(run: Path, card: dict, name: str, section: dict, summary: dict) -> None:
    """Put ``section`` into the card as ``name`` (validated on write) and ``summary`` into metrics.json."""
    card[name] = section
    write_card(card, run / CARD_FILE)
    metrics_path = run / METRICS_FILE
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics[name] = summary
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
