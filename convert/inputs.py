"""Read a training run folder and the images the conversion needs, refusing anything inconsistent.

The drift check is only meaningful on exactly the images training held out, so the manifest must be
the one the card was written with (sha256), and every image used must still be byte-identical to
the one listed in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smearscope_core.errors import DatasetError, InputError
from smearscope_core.files import CARD_FILE, KERAS_FILE, MANIFEST_FILE, sha256_of
from smearscope_core.manifest import ManifestRow, read_manifest
from smearscope_core.model_card import ModelCardError, read_card


@dataclass(frozen=True)
class RunFolder:
    """What conversion reads from a training run folder, already validated."""

    path: Path
    card: dict
    model_path: Path
    manifest_path: Path
    rows: list[ManifestRow]

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.card["classes"]]

    @property
    def malignant(self) -> list[bool]:
        return [bool(c["malignant"]) for c in self.card["classes"]]

    @property
    def image_size(self) -> int:
        return int(self.card["input"]["height"])

    @property
    def temperature(self) -> float:
        return float(self.card["calibration"]["temperature"])

    def split(self, name: str) -> list[ManifestRow]:
        return [r for r in self.rows if r.split == name]


def read_run(run: Path) -> RunFolder:
    """Validate the run folder: model, card (schema), manifest (sha256 recorded in the card)."""
    run = Path(run)
    if not run.is_dir():
        raise InputError(f"The run folder {run} does not exist.")
    model_path = run / KERAS_FILE
    if not model_path.is_file():
        raise InputError(f"The run folder {run} has no {KERAS_FILE} (is it a finished training run?).")
    try:
        card = read_card(run / CARD_FILE)
    except ModelCardError as error:
        raise InputError(f"The run folder's model card cannot be used: {error}") from None
    if card["input"]["height"] != card["input"]["width"]:
        raise InputError(f"The model card of {run} describes a non-square input, which conversion does not support.")
    dataset = card["training"]["dataset"]
    manifest_path = run / str(dataset.get("manifest", MANIFEST_FILE))
    if not manifest_path.is_file():
        raise InputError(f"The run folder {run} has no split manifest {manifest_path.name}.")
    actual = sha256_of(manifest_path)
    if actual != dataset["manifest_sha256"]:
        raise InputError(
            f"The manifest {manifest_path} does not match its model card (sha256 {actual[:12]}... instead of "
            f"{dataset['manifest_sha256'][:12]}...), so the test split cannot be trusted."
        )
    try:
        rows = read_manifest(manifest_path)
    except DatasetError as error:
        raise InputError(str(error)) from None
    names = [c["name"] for c in card["classes"]]
    unknown = sorted({r.class_name for r in rows} - set(names))
    if unknown:
        raise InputError(f"The manifest {manifest_path} has classes the model card does not: {', '.join(unknown)}.")
    folder = RunFolder(run, card, model_path, manifest_path, rows)
    for split in ("train", "test"):
        if not folder.split(split):
            raise InputError(f"The manifest {manifest_path} has no {split} images.")
    return folder


def check_images(data: Path, rows: list[ManifestRow]) -> None:
    """Every row's file exists under ``data`` and still has the manifest's sha256."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"The dataset folder {data} does not exist (pass --data DATASET_ROOT).")
    missing = [r.path for r in rows if not (data / r.path).is_file()]
    if missing:
        raise InputError(f"{len(missing)} manifest images are missing from {data}, e.g. {missing[0]}.")
    changed = [r.path for r in rows if sha256_of(data / r.path) != r.sha256]
    if changed:
        raise InputError(
            f"{len(changed)} images in {data} differ from the manifest (sha256), e.g. {changed[0]}: "
            "this is not the dataset the model was trained and tested on."
        )


def stratified_sample(rows: list[ManifestRow], size: int, seed: int) -> list[ManifestRow]:
    """About ``size`` rows with the class proportions of ``rows`` (largest remainder), at least one per class.

    Deterministic for a given manifest and seed, so a conversion can be repeated exactly.
    """
    rows = sorted(rows, key=lambda r: r.path)
    if size >= len(rows):
        return rows
    by_class: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_class.setdefault(row.class_name, []).append(row)
    names = sorted(by_class)
    exact = np.array([len(by_class[n]) * size / len(rows) for n in names])
    quota = np.maximum(np.floor(exact).astype(int), 1)
    for index in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= size:
            break
        quota[index] += 1
    rng = np.random.default_rng(seed)
    chosen: list[ManifestRow] = []
    for name, count in zip(names, quota, strict=True):
        members = by_class[name]
        picks = rng.choice(len(members), size=min(int(count), len(members)), replace=False)
        chosen += [members[i] for i in sorted(picks)]
    return sorted(chosen, key=lambda r: r.path)


def class_counts(rows: list[ManifestRow], class_names: list[str]) -> dict[str, int]:
    return {name: sum(r.class_name == name for r in rows) for name in class_names}
