"""Command line: ``python -m train --data DATASET --out RUN_FOLDER [options]``.

The options are ``TrainConfig``'s fields (``train/config.py``: each default and help written there
once), plus three that choose what to run: ``--scan-only``, ``--calibrate-ood-only`` and ``--shortcuts-only``.
``--finetune RUN --data SITE_DATA`` trains the same way from RUN's weights on a site's images (``train.run``).
"""

from __future__ import annotations

import argparse
import os
import sys

from smearscope_core.console import logger  # first: the log's clock starts when the command does
from smearscope_core.errors import ExitCode, SmearScopeError, report
from smearscope_core.options import add_options, from_options
from train.config import TrainConfig

log = logger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a MobileNetV3 smear classifier on a folder-per-class dataset (or fine-tune a run's on a "
        "site's images, --finetune) and write a run folder.",
    )
    add_options(parser, TrainConfig)
    parser.add_argument("--scan-only", action="store_true", help="write the manifest and dataset report, then stop")
    parser.add_argument(
        "--calibrate-ood-only",
        action="store_true",
        help="refresh the out-of-distribution calibration and the colour reference (card sections 'ood', "
        "'acquisition', 'colour_reference') of the existing run folder --out",
    )
    parser.add_argument(
        "--shortcuts-only",
        action="store_true",
        help="refresh the shortcut baselines, colour-robust and simulated-microscope figures (card section "
        "'shortcuts') of the existing run folder --out",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = from_options(TrainConfig, args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from train.run import prepare_data, train

    try:
        if args.calibrate_ood_only:
            from train.ood_calibration import calibrate_run

            ood = calibrate_run(config.out, config.data)
            log.info(
                f"ood threshold {ood['threshold']:.2f}: refers {ood['val_referred_rate']:.1%} of val, "
                f"{ood['test_referred_rate']:.1%} of test"
            )
        elif args.shortcuts_only:
            from train.shortcuts import refresh_run

            robust = refresh_run(config.out, config.data)["colour_robust"]["test"]
            log.info(f"colour-robust test: accuracy {robust['accuracy']:.4f}, macro-F1 {robust['macro_f1']:.4f}")
        elif args.scan_only:
            prepare_data(config)
        else:
            train(config)
    except SmearScopeError as error:
        return report(error)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
