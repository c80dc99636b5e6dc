"""File names shared by the stages, and the one sha256 helper.

A run folder (written by ``train``) holds the float model ``model.keras``, the card and the split
manifest; a bundle (written by ``convert``, read by the app) holds ``model.tflite`` and the card.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CARD_FILE = "model_card.json"  # in run folders and bundles alike
KERAS_FILE = "model.keras"  # the float model in a run folder
TFLITE_FILE = "model.tflite"  # the int8 model in a bundle
FEATURES_FILE = "features.tflite"  # the int8 ImageNet feature extractor in a bundle (card section features)
MANIFEST_FILE = "manifest.csv"  # the split manifest in a run folder
_CHUNK = 1 << 20


def sha256_of(source: Path | str | bytes) -> str:
    """Hex sha256 of a file (read in 1 MB chunks) or of bytes already in memory."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
