"""The embedding check (smearscope_core.embedding_ood): kNN cosine distance to the training embeddings.

Synthetic embeddings only (clusters drawn here); the check on a real int8 model's embeddings is
measured by ``python -m bench.outoflab`` (docs/out-of-lab.md) and exercised on the tiny test bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_app.bundle import BundleError
from edge_app.screening import Screener
from smearscope_core.embedding_ood import (
    REFERENCE_FILE,
    EmbeddingCalibrationError,
    EmbeddingDetector,
    fit_embedding_ood,
    knn_distances,
    normalise,
)
from tests.factories import smears, write_bundle


def clusters(seed: int, count: int, dims: int = 32) -> np.ndarray:
    """Embeddings around four fixed directions, as a trained model's classes would give."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(4, dims)) * 3
    return centres[rng.integers(0, 4, count)] + rng.normal(size=(count, dims)) * 0.5


def write_section(folder: Path, section: dict, reference: np.ndarray) -> dict:
    np.save(folder / REFERENCE_FILE, reference, allow_pickle=False)
    from smearscope_core.files import sha256_of

    section["reference"]["sha256"] = sha256_of(folder / REFERENCE_FILE)
    return {"embedding_ood": section}


def test_distance_is_small_near_the_training_embeddings_and_large_away(tmp_path: Path) -> None:
    section, reference = fit_embedding_ood(clusters(1, 400), clusters(2, 200), k=5, quantile=0.99)
    assert reference.dtype == np.float16 and np.allclose(np.linalg.norm(reference.astype(np.float32), axis=1), 1, 1e-3)
    assert section["val_referred_rate"] <= 0.02
    detector = EmbeddingDetector.from_card(write_section(tmp_path, section, reference), tmp_path)
    familiar = [detector.distance(e) for e in clusters(3, 100)]
    unfamiliar = [detector.distance(e) for e in np.random.default_rng(4).normal(size=(100, 32))]
    assert np.mean([d > detector.threshold for d in familiar]) <= 0.05
    assert np.mean([d > detector.threshold for d in unfamiliar]) >= 0.95
    assert detector.reason(min(familiar)) is None
    reason = detector.reason(max(unfamiliar))
    assert reason and "unlike the smears" in reason and ": photograph it" in reason  # what, and what to do


def test_knn_distance_is_the_kth_nearest_cosine_distance() -> None:
    reference = normalise(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    assert knn_distances(reference, np.array([[2.0, 0.0]]), 1)[0] == pytest.approx(0.0)
    assert knn_distances(reference, np.array([[2.0, 0.0]]), 2)[0] == pytest.approx(1.0)  # the next: 90 degrees
    assert knn_distances(reference, np.array([[1.0, 0.0]]), 9)[0] == pytest.approx(2.0)  # k capped at the rows


def test_a_card_without_the_section_has_no_detector_and_a_bad_file_is_refused(tmp_path: Path) -> None:
    assert EmbeddingDetector.from_card({}, tmp_path) is None
    section, reference = fit_embedding_ood(clusters(1, 50), clusters(2, 20))
    card = write_section(tmp_path, section, reference)
    (tmp_path / REFERENCE_FILE).write_bytes((tmp_path / REFERENCE_FILE).read_bytes()[:-8])
    with pytest.raises(EmbeddingCalibrationError, match="does not match its card"):
        EmbeddingDetector.from_card(card, tmp_path)
    (tmp_path / REFERENCE_FILE).unlink()
    with pytest.raises(EmbeddingCalibrationError, match="missing"):
        EmbeddingDetector.from_card(card, tmp_path)
    card["embedding_ood"]["reference"]["file"] = "../elsewhere.npy"
    with pytest.raises(EmbeddingCalibrationError, match="missing"):
        EmbeddingDetector.from_card(card, tmp_path)


def test_screener_measures_the_embedding_and_refers_above_the_threshold(tmp_path: Path, tiny_tflite: bytes) -> None:
    """The untrained tiny model's embedding carries little (distances near 1): the threshold decides, as fitted."""
    folder = write_bundle(tmp_path / "tiny", tiny_tflite)
    screener = Screener(folder)
    assert screener.embedding_detector is not None and screener.missing_checks() == []
    result = screener.screen_image(smears(900, 1)[0], "smear")
    assert result.feature_distance is not None and result.feature_distance <= screener.embedding_detector.threshold
    assert not any("unlike the smears" in reason for reason in result.reasons)
    card = json.loads((folder / "model_card.json").read_text())
    card["embedding_ood"]["threshold"] = result.feature_distance / 2
    (folder / "model_card.json").write_text(json.dumps(card))
    strict = Screener(folder).screen_image(smears(900, 1)[0], "smear")
    assert strict.inconclusive and any("unlike the smears" in reason for reason in strict.reasons)


def test_an_older_bundle_without_the_check_loads_and_says_it_is_missing(tmp_path: Path, tiny_tflite: bytes) -> None:
    folder = write_bundle(tmp_path / "old", tiny_tflite)
    card = json.loads((folder / "model_card.json").read_text())
    del card["embedding_ood"]
    (folder / "model_card.json").write_text(json.dumps(card))
    screener = Screener(folder)
    assert screener.embedding_detector is None
    assert screener.missing_checks() == ["what the model sees (its embedding)"]
    assert screener.screen_image(smears(900, 1)[0], "smear").feature_distance is None


def test_a_tampered_reference_refuses_the_bundle(tmp_path: Path, tiny_tflite: bytes) -> None:
    folder = write_bundle(tmp_path / "tampered", tiny_tflite)
    reference = np.load(folder / REFERENCE_FILE)
    np.save(folder / REFERENCE_FILE, reference[:-1], allow_pickle=False)
    with pytest.raises(BundleError, match="does not match its card"):
        Screener(folder)


def test_screener_refers_a_zoomed_field_and_passes_a_larger_camera_frame(tmp_path: Path, tiny_tflite: bytes) -> None:
    """The magnification check through the app's core: a 2x zoom of a field says "larger"; the same field in a
    camera frame 3x larger is reduced to the model's size first and passes (smearscope_core.scale)."""
    from PIL import Image

    screener = Screener(write_bundle(tmp_path / "tiny", tiny_tflite))
    field = smears(900, 1)[0]
    side = field.size[0]
    zoomed = field.resize(field.size, Image.Resampling.BICUBIC, box=(side / 4, side / 4, 3 * side / 4, 3 * side / 4))
    larger_frame = field.resize((3 * side, 3 * side), Image.Resampling.BICUBIC)
    as_is, zoom, frame = (screener.screen_image(image, name) for image, name in
                          ((field, "field"), (zoomed, "zoom"), (larger_frame, "frame")))  # fmt: skip
    assert zoom.scale_ratio > 1.6 and any("x larger than in the images this model knows" in r for r in zoom.reasons)
    assert abs(frame.scale_ratio - as_is.scale_ratio) < 0.1
    assert not any("larger than" in reason for reason in (*as_is.reasons, *frame.reasons))
