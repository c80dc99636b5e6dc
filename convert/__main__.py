"""Command line: ``python -m convert --run RUN_FOLDER --out BUNDLE_FOLDER [--data DATASET_ROOT] [options]``.

The options are ``ConvertConfig``'s fields (and its ``Thresholds``'), each with the flag, help text
and default written once in convert/config.py and convert/gate.py (made into options by smearscope_core/options.py).

Exit status (``smearscope_core.errors.ExitCode``): 0 gate passed (bundle written), 1 gate failed
(nothing at --out changed; the candidate and its report are in <out>.rejected/), 2 bad input, 3 the
converter or runtime failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from convert.config import ConvertConfig
from smearscope_core.errors import ExitCode, SmearScopeError, report
from smearscope_core.options import add_options, from_options


class _Parser(argparse.ArgumentParser):
    """Usage errors end with one sentence and exit status 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see python -m convert --help).", file=sys.stderr)
        raise SystemExit(ExitCode.BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m convert",
        description="Convert a training run's float Keras model to a full-integer int8 TFLite model bundle, "
        "measure its drift against the float model on the run's test split, and gate it.",
    )
    add_options(parser, ConvertConfig)
    return parser


def parse_config(argv: list[str] | None = None) -> ConvertConfig:
    config = from_options(ConvertConfig, build_parser().parse_args(argv))
    config.num_threads = max(1, config.num_threads)
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from convert.conversion import Conversion

    try:
        outcome = Conversion(config).run()
    except SmearScopeError as error:
        return report(error)
    except OSError as error:  # e.g. --out on a read-only disk
        print(f"error: cannot write {error.filename or 'the output'}: {error.strerror or error}.", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if not outcome.passed:
        print(outcome.sentence, file=sys.stderr)
        return ExitCode.GATE_FAILED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
