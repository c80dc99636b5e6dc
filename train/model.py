"""MobileNetV3 classifier that takes raw RGB pixels and returns logits.

Normalization (x / 127.5 - 1) lives inside the model (keras.applications' preprocessing layer),
so the app and the int8 model feed raw 0-255 RGB and never repeat the math. With
``colour_standardise`` a first layer removes each image's own per-channel colour mean and contrast
(``ColourStandardisation``), so the network cannot learn the photo session's colour and the int8
model carries the step too. The output is logits,
not probabilities, so that a temperature fitted on validation data calibrates them
(softmax(logits / T)) without the loss of precision that re-scaling quantized probabilities has.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
from keras.src.applications import mobilenet_v3

ARCHITECTURES = {
    "small": keras.applications.MobileNetV3Small,
    "large": keras.applications.MobileNetV3Large,
}

# keras.applications builds MobileNetV3 with BatchNormalization momentum 0.999: the moving
# statistics then take thousands of steps to follow the weights, and a from-scratch model scores
# as a single constant class in inference mode for the whole of a short CPU run (measured).
# 0.9 lets them track within a few dozen steps.
BN_MOMENTUM = 0.9
COLOUR_LAYER = "colour_standardisation"


@keras.saving.register_keras_serializable(package="smearscope")
class ColourStandardisation(keras.layers.Layer):
    """Each image's per-channel mean and spread set to one value: the model sees cells, not the session's colour.

    Out: (x - mean) / sqrt(variance + 1) * 42.5 + 127.5 per image and channel, so about +-3 spreads span the
    0-255 range the backbone's own preprocessing expects. The +1 (in pixel units squared) keeps a blank field
    from being stretched into noise. Mean, square, rsqrt and mul are all int8 TFLite ops. No weights.
    """

    SPREAD = 42.5

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        mean = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
        centred = inputs - mean
        variance = keras.ops.mean(keras.ops.square(centred), axis=(1, 2), keepdims=True)
        return centred * keras.ops.rsqrt(variance + 1.0) * self.SPREAD + 127.5


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer (nested too); return how many."""
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def build_model(
    num_classes: int,
    image_size: int,
    architecture: str = "small",
    dropout: float = 0.2,
    bn_momentum: float = BN_MOMENTUM,
    init_weights: Path | None = None,
    colour_standardise: bool = False,
    xnnpack_hard_swish: bool = False,
) -> keras.Model:
    """Input: float32 [batch, image_size, image_size, 3] raw RGB in [0, 255]. Output: logits.

    ``xnnpack_hard_swish`` builds hard-swish as (x / 6) * relu6(x + 3) (see ``_delegate_friendly_hard_swish``),
    so the float model trained is the one whose int8 form runs as one XNNPACK partition.
    """
    if xnnpack_hard_swish:
        with _delegate_friendly_hard_swish():
            return build_model(num_classes, image_size, architecture, dropout, bn_momentum, init_weights,
                               colour_standardise)  # fmt: skip
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}.")
    backbone = ARCHITECTURES[architecture](
        input_shape=(image_size, image_size, 3),
        include_top=False,
        weights=None,
        pooling="avg",
        include_preprocessing=True,
    )
    if init_weights is not None:
        if not Path(init_weights).is_file():
            raise FileNotFoundError(f"The initial weights file {init_weights} does not exist.")
        backbone.load_weights(str(init_weights))
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = backbone(ColourStandardisation(name=COLOUR_LAYER)(inputs) if colour_standardise else inputs)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    model = keras.Model(inputs, logits, name=f"mobilenet_v3_{architecture}_{image_size}")
    set_batchnorm_momentum(model, bn_momentum)
    return model


EMBEDDING_OUTPUT = "embedding"
LOGITS_OUTPUT = "logits"


def with_embedding(model: keras.Model) -> keras.Model:
    """The same network (shared weights) with two named outputs: ``logits`` and ``embedding``, the backbone's pooled
    features that the dense layer reads. The app's unfamiliarity check measures how far an image's embedding lies
    from the training images' (smearscope_core.features): what the model sees, not only the image's statistics.
    Named outputs survive the converter, which may reorder them (the runtime reads them by signature name).
    """
    features = model.get_layer(LOGITS_OUTPUT).input  # what the dense layer reads, as the outer graph sees it
    return keras.Model(model.inputs, {LOGITS_OUTPUT: model.output, EMBEDDING_OUTPUT: features}, name=model.name)


def architecture_name(architecture: str) -> str:
    return ARCHITECTURES[architecture].__name__


def predict_logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's logits for a batch of uint8 [N, H, W, 3] images, in inference mode."""
    return model.predict(images.astype("float32"), batch_size=64, verbose=0)


def load_float_model(path: Path) -> keras.Model:
    """A run folder's ``model.keras`` (this module registers the custom layers it may hold)."""
    return keras.saving.load_model(path, compile=False)


def has_colour_standardisation(model: keras.Model) -> bool:
    return any(layer.name == COLOUR_LAYER for layer in model.layers)


@contextmanager
def _delegate_friendly_hard_swish() -> Iterator[None]:
    """Build MobileNetV3 with hard-swish written as (x / 6) * relu6(x + 3).

    The TFLite converter fuses Keras' hard-swish (and x * relu6(x + 3) / 6 in any order it
    recognizes) into one HARD_SWISH op, which LiteRT's XNNPACK delegate does not take in int8:
    measured, each one splits the delegated graph (18 of them gave 19 partitions and an int8
    model 2.4x slower than float32). Scaling x first is the same function but stays ADD (with a
    fused ReLU6) and MUL ops, which XNNPACK runs in int8 (measured: one partition).
    """
    original = mobilenet_v3.hard_swish

    def hard_swish(x: keras.KerasTensor) -> keras.KerasTensor:
        return keras.layers.Multiply()([x * (1.0 / 6.0), keras.layers.ReLU(6.0)(x + 3.0)])

    mobilenet_v3.hard_swish = hard_swish
    try:
        yield
    finally:
        mobilenet_v3.hard_swish = original


def delegate_friendly_twin(model: keras.Model, check: np.ndarray | None = None) -> keras.Model:
    """The same trained network, rebuilt with the delegate-friendly hard-swish, for export.

    Activations carry no weights, so the weights copy over one to one. With ``check`` (a batch of
    raw pixels), refuses a twin whose logits differ from the original's by more than 1e-3.
    """
    backbone = next(layer for layer in model.layers if layer.name.startswith("MobileNetV3"))
    architecture = "large" if backbone.name.endswith("Large") else "small"
    dropout = float(model.get_layer("dropout").rate)
    twin = build_model(int(model.output_shape[-1]), int(model.input_shape[1]), architecture, dropout,
                       colour_standardise=has_colour_standardisation(model), xnnpack_hard_swish=True)  # fmt: skip
    twin.set_weights(model.get_weights())
    if check is not None:
        batch = check.astype("float32")
        gap = float(np.abs(np.asarray(twin(batch, training=False)) - np.asarray(model(batch, training=False))).max())
        if gap > 1e-3:
            raise ValueError(f"The delegate-friendly rebuild differs from the trained model (max logit gap {gap:.2g}).")
    return twin
