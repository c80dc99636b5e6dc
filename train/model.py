"""MobileNetV3 classifier that takes raw RGB pixels and returns logits.

Normalization (x / 127.5 - 1) lives inside the model (keras.applications' preprocessing layer),
so the app and the int8 model feed raw 0-255 RGB and never repeat the math. The output is logits,
not probabilities, so that a temperature fitted on validation data calibrates them
(softmax(logits / T)) without the loss of precision that re-scaling quantized probabilities has.
"""

from __future__ import annotations

from pathlib import Path

import keras

ARCHITECTURES = {
    "small": keras.applications.MobileNetV3Small,
    "large": keras.applications.MobileNetV3Large,
}

# keras.applications builds MobileNetV3 with BatchNormalization momentum 0.999: the moving
# statistics then take thousands of steps to follow the weights, and a from-scratch model scores
# as a single constant class in inference mode for the whole of a short CPU run (measured).
# 0.9 lets them track within a few dozen steps.
BN_MOMENTUM = 0.9


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
) -> keras.Model:
    """Input: float32 [batch, image_size, image_size, 3] raw RGB in [0, 255]. Output: logits."""
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
    features = backbone(inputs)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    model = keras.Model(inputs, logits, name=f"mobilenet_v3_{architecture}_{image_size}")
    set_batchnorm_momentum(model, bn_momentum)
    return model


def architecture_name(architecture: str) -> str:
    return ARCHITECTURES[architecture].__name__
