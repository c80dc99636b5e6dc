"""Model bundles: a folder with ``model.tflite`` and ``model_card.json``, checked before use.

A bundle is refused, with a sentence that says why, when its card breaks the schema, when the
``.tflite`` file's sha256 differs from the one in the card (tampered, truncated or mixed-up
files), when the model's output does not have one value per class in the card, or when its files
are links that lead out of the bundle folder. Only folders directly under a models folder are
offered, never a link out of it: the selector cannot be pointed at files elsewhere on the PC.

A bundle whose card has a ``features`` section also holds that feature extractor (``features.tflite``),
checked the same way (present, inside the folder, same sha256). A site bundle (card section ``site``,
written by ``python -m edge_app.calibrate``) must name the model it was calibrated on: its ``model.tflite``
is the base bundle's, so its sha256 must be the one ``site.base.model_sha256`` records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_app.runtime import TFLiteModel
from smearscope_core.files import CARD_FILE, TFLITE_FILE, sha256_of
from smearscope_core.model_card import ModelCardError, read_card


class BundleError(ValueError):
    """The bundle cannot be used; the message is one clear sentence."""


@dataclass(frozen=True)
class FeatureSource:
    """Where a bundle's feature vectors come from: the model file, its named output and its input's height and width."""

    path: Path
    output: str
    height: int  # the extractor's input, in pixels
    width: int


@dataclass(frozen=True)
class ModelBundle:
    folder: Path
    card: dict
    sha256: str

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def model_path(self) -> Path:
        return self.folder / TFLITE_FILE

    @property
    def class_names(self) -> list[str]:
        return [c["display_name"] for c in self.card["classes"]]

    @property
    def site(self) -> dict | None:
        """The card's site calibration (docs/site-calibration.md), or None for a bundle made by conversion."""
        return self.card.get("site")

    @property
    def decode_side(self) -> int:
        """The largest input side this bundle's models take: what a JPEG may be decoded down to (never below 5x
        it; ``smearscope_core.imaging.open_image``'s ``min_side``). The app, its batch command and a site calibration
        all decode with it, so a site's images are seen the same way when calibrating and when screening."""
        section = self.card.get("features") or {}
        return max(int(self.card["input"]["height"]), int(section.get("input", {}).get("height", 0)))

    @property
    def features_path(self) -> Path | None:
        """The feature extractor the card's ``features`` section names, or None when the bundle has none."""
        section = self.card.get("features")
        return self.folder / section["file"] if section else None

    def feature_source(self, source: str) -> FeatureSource:
        """The feature vectors of ``source``: "features" (the card's feature extractor) or "embedding" (the
        classifier's own embedding output). The one place both the app's site path and a site calibration read
        this from the card."""
        if source == "features":
            section = self.card.get("features")
            if not section:
                raise BundleError(
                    f"The bundle {self.folder} has no feature extractor (features.tflite and the card's features "
                    "section)."
                )
            size = section["input"]
            return FeatureSource(
                self.folder / section["file"], section["output"]["name"], int(size["height"]), int(size["width"])
            )
        size = self.card["input"]
        return FeatureSource(self.model_path, TFLiteModel.EMBEDDING, int(size["height"]), int(size["width"]))

    @property
    def warnings(self) -> list[str]:
        """What every result from this bundle must show beside it: a site calibration written although it failed
        its validation gate (``--force``) has not shown on the site's own images that it can be trusted."""
        site = self.site
        if site and site["gate"]["forced"]:
            return [FORCED_WARNING.format(name=site["name"])]
        return []


FORCED_WARNING = (
    "The site calibration {name} did not pass its local validation gate and was written anyway (--force): its "
    "results are not validated, so review every image by eye and do not rely on this model's answers."
)


def expected_sha256(card: dict) -> str | None:
    """The sha256 of the .tflite recorded by the conversion stage (card['tflite']['sha256'])."""
    tflite = card.get("tflite")
    return tflite.get("sha256") if isinstance(tflite, dict) else None


def load_bundle(folder: str | Path) -> ModelBundle:
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"The model folder {folder} does not exist.")
    model = folder / TFLITE_FILE
    if not model.is_file():
        raise BundleError(f"The model folder {folder} has no {TFLITE_FILE}.")
    for name in (TFLITE_FILE, CARD_FILE):
        if not is_inside(folder / name, folder):
            raise BundleError(f"The model folder {folder} is refused: its {name} is a link to a file outside it.")
    try:
        card = read_card(folder / CARD_FILE)
    except ModelCardError as error:
        raise BundleError(f"The model in {folder} cannot be used: {error}") from None
    expected = expected_sha256(card)
    if not expected:
        raise BundleError(f"The model card in {folder} records no sha256 for {TFLITE_FILE} (tflite.sha256).")
    actual = _checked_sha256(model, expected, "model file", folder)
    _check_features(folder, card)
    site = card.get("site")
    if site and site["base"]["model_sha256"] != actual:
        raise BundleError(
            f"The site calibration in {folder} was made for another model (sha256 {site['base']['model_sha256'][:12]}"
            f"...) than its {TFLITE_FILE} ({actual[:12]}...): calibrate again on this model."
        )
    return ModelBundle(folder, card, actual)


def _check_features(folder: Path, card: dict) -> None:
    """The feature extractor the card names (``features``): in the folder, not a link out of it, same sha256."""
    section = card.get("features")
    if not section:
        return
    path = folder / section["file"]
    if not path.is_file():
        raise BundleError(f"The model folder {folder} has no {section['file']}, the feature extractor its card names.")
    if not is_inside(path, folder):
        raise BundleError(
            f"The model folder {folder} is refused: its {section['file']} is a link to a file outside it."
        )
    _checked_sha256(path, section["sha256"], f"feature extractor {section['file']}", folder)


def _checked_sha256(path: Path, expected: str, what: str, folder: Path) -> str:
    """``path``'s sha256, or a BundleError when it is not the one the card records (one rule for every file)."""
    actual = sha256_of(path)
    if actual != expected:
        raise BundleError(
            f"The {what} in {folder} does not match its card (sha256 {actual[:12]}... instead of "
            f"{expected[:12]}...): it was changed or mixed up with another model."
        )
    return actual


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links followed, stays within ``root`` (no ``..`` or symlink escape)."""
    return path.resolve().is_relative_to(root.resolve())


def list_bundles(*roots: Path) -> list[Path]:
    """Folders directly under each root that hold a model file and a card (not yet validated).

    A folder that is a link leading out of its root is not offered: the selector only ever reads
    inside the models folders it was given.
    """
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(
                p
                for p in root.iterdir()
                if is_inside(p, root) and (p / TFLITE_FILE).is_file() and (p / CARD_FILE).is_file()
            )
    return found
