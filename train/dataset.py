"""Scan a folder-per-class image dataset: class metadata, decoding to RGB, validation; the prepared dataset.

Any dataset laid out as ``<root>/<class name>/<image files>`` works. Class metadata (display
name, malignant or not, severity 0-3, description) comes from an optional ``classes.json`` beside
the class folders; without one, the built-in defaults in ``train/defaults/`` are used when the
class names match a known dataset (the ALL 4-class set), and plain defaults otherwise.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from smearscope_core.console import progress
from smearscope_core.errors import DatasetError
from smearscope_core.files import sha256_of
from smearscope_core.imaging import load_rgb
from smearscope_core.manifest import ManifestRow

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
METADATA_FILE = "classes.json"
DEFAULTS_DIR = Path(__file__).parent / "defaults"
MIN_IMAGE_SIDE = 32


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    display_name: str
    malignant: bool
    severity: int
    description: str


@dataclass(frozen=True)
class ImageRecord:
    path: str  # relative to the dataset root, POSIX separators
    label: int
    sha256: str
    width: int
    height: int


@dataclass
class Rejected:
    path: str
    reason: str


@dataclass
class ScanResult:
    root: Path
    classes: list[ClassInfo]
    records: list[ImageRecord]
    rejected: list[Rejected] = field(default_factory=list)
    dataset_name: str = ""
    citation: list[str] = field(default_factory=list)
    metadata_source: str = ""

    def class_counts(self) -> dict[str, int]:
        counts = {c.name: 0 for c in self.classes}
        for r in self.records:
            counts[self.classes[r.label].name] += 1
        return counts


@dataclass
class PreparedData:
    """A dataset ready for training: its classes, where it comes from and its split (the manifest's rows)."""

    classes: list[ClassInfo]
    dataset_name: str
    citation: list[str]
    manifest_sha256: str
    counts: dict[str, dict[str, int]]  # split -> class name -> images
    rows: list[ManifestRow]


def _known_defaults(class_names: list[str]) -> tuple[dict, str]:
    for candidate in sorted(DEFAULTS_DIR.glob("*.json")):
        data = json.loads(candidate.read_text())
        if sorted(data["classes"]) == sorted(class_names):
            return data, f"built-in defaults ({candidate.name})"
    return {}, "plain defaults (no classes.json)"


def load_class_metadata(
    root: Path, class_names: list[str], metadata_path: Path | None = None
) -> tuple[list[ClassInfo], str, list[str], str]:
    """Return (classes, dataset name, citation lines, where the metadata came from)."""
    path = metadata_path or root / METADATA_FILE
    if metadata_path is not None and not path.is_file():
        raise DatasetError(f"The class metadata file {path} does not exist.")
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"The class metadata file {path} is not valid JSON ({error}).") from None
        source = str(path)
    else:
        data, source = _known_defaults(class_names)
    per_class = data.get("classes", {})
    unknown = sorted(set(per_class) - set(class_names))
    if unknown:
        raise DatasetError(f"{source} describes classes that have no folder: {', '.join(unknown)}.")
    classes = []
    for index, name in enumerate(class_names):
        meta = per_class.get(name, {})
        severity = int(meta.get("severity", 0))
        if not 0 <= severity <= 3:
            raise DatasetError(f"Class {name!r} has severity {severity}; it must be 0 to 3.")
        classes.append(
            ClassInfo(
                id=index,
                name=name,
                display_name=str(meta.get("display_name", name)),
                malignant=bool(meta.get("malignant", False)),
                severity=severity,
                description=str(meta.get("description", "")),
            )
        )
    if not any(c.malignant for c in classes):
        warnings.warn(
            "No class is marked malignant (add a classes.json beside the class folders): "
            "the malignant-vs-benign screening metrics will be skipped.",
            stacklevel=2,
        )
    dataset = data.get("dataset", {})
    return classes, str(dataset.get("name", root.name)), list(dataset.get("citation", [])), source


def _inspect(path: Path, min_side: int) -> tuple[int, int] | str:
    """Decode fully; return (width, height) or the reason the file is unusable."""
    try:
        with Image.open(path) as image:
            width, height = load_rgb(image).size
    except Image.DecompressionBombError:
        return "too large to decode safely (decompression bomb guard)"
    except Exception as error:  # noqa: BLE001 - any decoder failure means: reject this file
        return f"cannot be decoded ({type(error).__name__}: {error})"
    if min(width, height) < min_side:
        return f"too small ({width}x{height}, need at least {min_side}px per side)"
    return width, height


def scan_dataset(root: str | Path, metadata_path: Path | None = None, min_side: int = MIN_IMAGE_SIDE) -> ScanResult:
    """Find classes and images, decode every file, and report what cannot be used."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} does not exist.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DatasetError(f"The dataset folder {root} needs at least two class folders; it has {len(class_dirs)}.")
    class_names = [p.name for p in class_dirs]
    classes, name, citation, source = load_class_metadata(root, class_names, metadata_path)
    listing: list[tuple[ClassInfo, Path]] = []
    for info, class_dir in zip(classes, class_dirs, strict=True):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DatasetError(f"The class folder {class_dir} is empty.")
        listing += [(info, path) for path in files]
    records: list[ImageRecord] = []
    rejected: list[Rejected] = []
    for info, path in progress(listing, "scanning images", unit="file"):
        relative = path.relative_to(root).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append(Rejected(relative, f"not an image file type ({path.suffix or 'no suffix'})"))
            continue
        outcome = _inspect(path, min_side)
        if isinstance(outcome, str):
            rejected.append(Rejected(relative, outcome))
            continue
        records.append(ImageRecord(relative, info.id, sha256_of(path), *outcome))
    if not records:
        raise DatasetError(f"No readable images were found in {root}.")
    counts = {c.name: 0 for c in classes}
    for record in records:
        counts[classes[record.label].name] += 1
    empty = [n for n, k in counts.items() if k == 0]
    if empty:
        raise DatasetError(f"These classes have no readable images: {', '.join(empty)}.")
    return ScanResult(root, classes, records, rejected, name, citation, source)


def classes_as_dicts(classes: list[ClassInfo]) -> list[dict]:
    return [asdict(c) for c in classes]
