"""The training loss: cross-entropy, plus an optional extra price on the screening error that matters most.

A malignant image called benign sends a patient home; a benign image called malignant sends one for a
confirmatory test. Plain cross-entropy prices both the same. ``ScreeningCrossEntropy`` adds, for each
malignant training image, ``screening_weight`` x -log P(any malignant class): the mass the model puts on the
benign classes of a malignant image costs more than the mass it moves between subtypes, so its doubt on an
ALL image leans to the malignant (and, through the app, to the refer) side. With weight 0 it is plain sparse
categorical cross-entropy on logits.
"""

from __future__ import annotations

import keras
import numpy as np

from train.metrics import has_screening_question


class ScreeningCrossEntropy(keras.losses.Loss):
    """Per-image sparse cross-entropy on logits + ``screening_weight`` x -log P(malignant) on malignant images."""

    def __init__(self, malignant: list[bool], screening_weight: float = 0.0, name: str = "screening_cross_entropy"):
        super().__init__(name=name)
        if screening_weight < 0:
            raise ValueError(f"screening_weight must be >= 0, not {screening_weight}")
        if screening_weight and not has_screening_question(malignant):
            raise ValueError("a screening weight needs at least one malignant and one benign class")
        self.malignant = [bool(m) for m in malignant]
        self.screening_weight = float(screening_weight)
        self._mask = np.asarray(self.malignant, dtype="float32")

    def call(self, y_true: keras.KerasTensor, y_pred: keras.KerasTensor) -> keras.KerasTensor:
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        loss = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        if not self.screening_weight:
            return loss
        mask = keras.ops.convert_to_tensor(self._mask, dtype=y_pred.dtype)
        # log P(malignant) = logsumexp over the malignant logits - logsumexp over all: stable for confident logits
        masked = y_pred + keras.ops.log(mask)[None, :]  # -inf on benign classes
        log_p_malignant = keras.ops.logsumexp(masked, axis=-1) - keras.ops.logsumexp(y_pred, axis=-1)
        is_malignant = keras.ops.take(mask, labels)
        return loss - self.screening_weight * is_malignant * log_p_malignant

    def get_config(self) -> dict:
        return {"name": self.name, "malignant": self.malignant, "screening_weight": self.screening_weight}
