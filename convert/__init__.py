"""Conversion stage: float Keras run folder -> full-integer int8 TFLite bundle, with a drift gate.

``python -m convert --run RUN --out BUNDLE`` (see docs/conversion.md). Importing this package is
cheap: TensorFlow is imported only by the modules that need it, when they are used.

Errors and exit statuses are the shared ones (``smearscope_core.errors``): a bad run folder, card,
manifest, dataset or flag raises ``InputError`` (``ExitCode.BAD_INPUT``), a failing converter or
runtime ``ConversionError`` (``ExitCode.FAILED``), and a failed gate exits ``ExitCode.GATE_FAILED``.
"""

from smearscope_core.errors import ExitCode, SmearScopeError


class ConversionError(SmearScopeError, RuntimeError):
    """The TFLite converter or runtime failed on a valid input: one sentence."""

    exit_code = ExitCode.FAILED
