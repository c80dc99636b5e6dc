"""Conversion stage: float Keras run folder -> full-integer int8 TFLite bundle, with a drift gate.

``python -m convert --run RUN --out BUNDLE`` (see docs/conversion.md). Importing this package is
cheap: TensorFlow is imported only by the modules that need it, when they are used.
"""

EXIT_OK = 0
EXIT_GATE_FAILED = 1  # the int8 model drifts too far from the float model, or is not integer-only
EXIT_BAD_INPUT = 2  # missing/broken run folder, card, manifest or dataset; bad flags
EXIT_CONVERSION_FAILED = 3  # the TFLite converter or the runtime failed


class InputError(ValueError):
    """A problem with what the user gave us (run folder, card, manifest, dataset, flags): one sentence."""


class ConversionError(RuntimeError):
    """The TFLite converter or runtime failed on a valid input: one sentence."""
