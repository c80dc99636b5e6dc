"""Command line: ``python -m convert --run RUN_FOLDER --out BUNDLE_FOLDER [--data DATASET_ROOT] [options]``.

Exit status: 0 gate passed (bundle written), 1 gate failed (nothing at --out changed; the candidate
and its report are in <out>.rejected/), 2 bad input, 3 the converter or runtime failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from convert import EXIT_BAD_INPUT, EXIT_CONVERSION_FAILED, EXIT_GATE_FAILED, EXIT_OK, ConversionError, InputError
from convert.gate import Thresholds
from smearscope_core.paths import DEFAULT_DATASET


class _Parser(argparse.ArgumentParser):
    """Usage errors end with one sentence and exit status 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see python -m convert --help).", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Thresholds()
    parser = _Parser(
        prog="python -m convert",
        description="Convert a training run's float Keras model to a full-integer int8 TFLite model bundle, "
        "measure its drift against the float model on the run's test split, and gate it.",
    )
    parser.add_argument("--run", type=Path, required=True, help="training run folder (model.keras, model_card.json)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (e.g. edge_app/models/NAME)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="dataset root the run's manifest refers to")
    parser.add_argument(
        "--float-out",
        type=Path,
        help="where the float32 .tflite goes (default: <out>-float32.tflite beside the bundle)",
    )
    parser.add_argument(
        "--representative-size", type=int, default=200, help="train images for int8 calibration (stratified)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the representative-image draw")
    gate = parser.add_argument_group("gate")
    gate.add_argument(
        "--min-agreement",
        type=float,
        default=defaults.min_agreement_percent,
        help="minimum top-1 agreement with the float model, percent (default %(default)s)",
    )
    gate.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=defaults.max_accuracy_drop_points,
        help="maximum test accuracy drop, percentage points (default %(default)s)",
    )
    gate.add_argument(
        "--max-recall-drop",
        type=float,
        default=defaults.max_recall_drop_points,
        help="maximum recall drop of any class, percentage points (default %(default)s)",
    )
    gate.add_argument(
        "--allow-float-ops", action="store_true", help="accept a model that is not integer-only (float fallback)"
    )
    fix = parser.add_argument_group("diagnosis and remedy")
    fix.add_argument(
        "--debug-layers",
        action="store_true",
        help="always write the per-layer error report (it is written anyway when the gate fails)",
    )
    fix.add_argument("--debug-samples", type=int, default=50, help="representative images the per-layer report uses")
    fix.add_argument(
        "--float-layers",
        type=int,
        default=0,
        metavar="N",
        help="keep the N layers with the worst quantization error in float; this explicitly allows float ops "
        "(the model is then no longer integer-only)",
    )
    fix.add_argument(
        "--xnnpack-hard-swish",
        action="store_true",
        help="write hard-swish as (x/6)*relu6(x+3) so XNNPACK runs the whole int8 graph (2.8x faster invoke on "
        "the default model, but one more test image flips: see docs/performance.md)",
    )
    fix.add_argument("--threads", type=int, default=1, help="LiteRT threads for the drift evaluation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from convert.pipeline import ConvertConfig, convert_run

    config = ConvertConfig(
        run=args.run,
        out=args.out,
        data=args.data,
        float_out=args.float_out,
        representative_size=args.representative_size,
        seed=args.seed,
        thresholds=Thresholds(args.min_agreement, args.max_accuracy_drop, args.max_recall_drop),
        allow_float_ops=args.allow_float_ops,
        float_layers=args.float_layers,
        xnnpack_hard_swish=args.xnnpack_hard_swish,
        debug_layers=args.debug_layers,
        debug_samples=args.debug_samples,
        num_threads=max(1, args.threads),
    )
    try:
        outcome = convert_run(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONVERSION_FAILED
    except OSError as error:  # e.g. --out on a read-only disk
        print(f"error: cannot write {error.filename or 'the output'}: {error.strerror or error}.", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not outcome.passed:
        print(outcome.sentence, file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
