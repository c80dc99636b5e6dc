"""Unfamiliarity from what the model sees: how far an image's embedding lies from the training images'.

The image-statistics check (``smearscope_core.ood``) looks at colour, focus and texture. The model can
still be confident on an image whose statistics look ordinary but whose content it has never seen.
So the int8 model also outputs its embedding (the pooled backbone features its last layer reads),
and this check compares it with the embeddings of the training split, computed by the same int8
model at conversion time: the cosine distance to the k-th nearest training embedding (Sun et al.,
"Out-of-distribution detection with deep nearest neighbors", ICML 2022), refused above the value
that only a small share of validation images exceed.

Chosen by measurement (docs/out-of-lab.md): on the default model's int8 embeddings, kNN on
L2-normalised features separated the real test split from normal cells of other labs (AUROC
0.96-0.98) and from grayscale, hue-turned and non-smear images better than class-conditional
Mahalanobis with shrinkage (0.77-0.86) and energy; all three are weak on zoom, which the field-scale
check covers. The training embeddings ship beside the model (``REFERENCE_FILE``, float16, its
sha256 in the card's ``embedding_ood`` section).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smearscope_core.files import sha256_of

METHOD = "knn-cosine"
REFERENCE_FILE = "embedding_reference.npy"
SECTION = "embedding_ood"
DEFAULT_K = 5
DEFAULT_QUANTILE = 0.995  # of validation distances: the threshold


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero."""
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)


def knn_distances(reference: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """1 - cosine similarity to the k-th nearest row of ``reference`` (already normalised), per embedding."""
    similarity = normalise(embeddings) @ reference.T
    k = min(k, reference.shape[0])
    return np.clip(1.0 - np.partition(similarity, -k, axis=1)[:, -k], 0.0, 2.0)  # float rounding: never below 0


class EmbeddingCalibrationError(ValueError):
    """The card's ``embedding_ood`` section and its reference file do not fit together (one sentence)."""


@dataclass(frozen=True)
class EmbeddingDetector:
    reference: np.ndarray  # float32 [N, D], L2-normalised training embeddings
    k: int
    threshold: float

    @classmethod
    def from_card(cls, card: dict, folder: Path) -> EmbeddingDetector | None:
        """The detector for a bundle, or None when its card has no ``embedding_ood`` section (an older bundle)."""
        section = card.get(SECTION)
        if not section:
            return None
        if section["method"] != METHOD:
            raise EmbeddingCalibrationError(f"The card's embedding check uses {section['method']!r}, not {METHOD!r}.")
        path = Path(folder) / section["reference"]["file"]
        if not path.is_file() or path.parent.resolve() != Path(folder).resolve():
            raise EmbeddingCalibrationError(f"The embedding reference {path.name} is missing from {folder}.")
        if sha256_of(path) != section["reference"]["sha256"]:
            raise EmbeddingCalibrationError(f"The embedding reference {path.name} in {folder} does not match its card.")
        reference = np.load(path, allow_pickle=False)
        if reference.ndim != 2 or reference.shape[1] != int(section["dimensions"]):
            raise EmbeddingCalibrationError(f"The embedding reference in {folder} has shape {reference.shape}.")
        return cls(normalise(reference), int(section["k"]), float(section["threshold"]))

    def distance(self, embedding: np.ndarray) -> float:
        return float(knn_distances(self.reference, embedding, self.k)[0])

    def reason(self, distance: float) -> str | None:
        """The referral reason (with what to do) when the embedding is unfamiliar, else None."""
        if distance <= self.threshold:
            return None
        return (
            f"the model sees something unlike the smears it was trained on (feature unfamiliarity {distance:.3f} > "
            f"{self.threshold:.3f}): photograph it as the Model tab describes, or calibrate the model for this "
            "microscope"
        )


def fit_embedding_ood(
    train: np.ndarray, val: np.ndarray, k: int = DEFAULT_K, quantile: float = DEFAULT_QUANTILE
) -> tuple[dict, np.ndarray]:
    """The card section (without the reference file's sha256, known once written) and the reference array.

    ``train`` and ``val`` are the int8 model's embeddings of those splits. The reference is the normalised
    training embeddings as float16 (half the size; the distances change by < 1e-3).
    """
    reference = normalise(train).astype(np.float16)
    distances = knn_distances(reference.astype(np.float32), val, k)
    threshold = float(np.quantile(distances, quantile))
    section = {
        "method": METHOD,
        "output": "embedding",
        "dimensions": int(reference.shape[1]),
        "k": int(k),
        "threshold": threshold,
        "quantile": float(quantile),
        "reference": {"file": REFERENCE_FILE, "rows": int(reference.shape[0]), "dtype": "float16"},
        "fitted_on": {"reference": "train", "threshold": "val", "model": "int8"},
        "val_referred_rate": float((distances > threshold).mean()),
    }
    return section, reference
