"""Command line: ``python -m train --data DATASET --out RUN_FOLDER [options]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from smearscope_core.paths import DEFAULT_DATASET


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a MobileNetV3 smear classifier on a folder-per-class dataset and write a run folder.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="dataset root with one folder per class")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--arch", choices=["small", "large"], default="small", help="MobileNetV3 size")
    parser.add_argument("--image-size", type=int, default=128, help="square model input side in pixels")
    parser.add_argument("--epochs", type=int, default=60, help="maximum epochs")
    parser.add_argument("--patience", type=int, default=15, help="epochs without val macro-F1 gain before stopping")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument(
        "--near-dup-distance", type=int, default=8, help="pHash Hamming distance for near-duplicates (-1: off)"
    )
    parser.add_argument("--classes-file", type=Path, help="class metadata JSON (default: DATA/classes.json)")
    parser.add_argument("--manifest", type=Path, help="reuse this split manifest instead of making a new split")
    parser.add_argument("--init-weights", type=Path, help="local backbone weights file to start from")
    parser.add_argument(
        "--strategy",
        choices=["default", "mirrored"],
        default="default",
        help="tf.distribute strategy ('mirrored' trains on every local GPU)",
    )
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--name", help="model name for the card")
    parser.add_argument("--scan-only", action="store_true", help="write the manifest and dataset report, then stop")
    parser.add_argument(
        "--calibrate-ood-only",
        action="store_true",
        help="refresh the out-of-distribution calibration (card section 'ood') of the existing run folder --out",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from smearscope_core.errors import DatasetError
    from smearscope_core.model_card import ModelCardError
    from train.run import TrainConfig, prepare_data, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        architecture=args.arch,
        image_size=args.image_size,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        near_duplicate_distance=args.near_dup_distance,
        classes_file=args.classes_file,
        manifest=args.manifest,
        init_weights=args.init_weights,
        strategy=args.strategy,
        augment=not args.no_augment,
        name=args.name,
    )
    try:
        if args.calibrate_ood_only:
            from train.ood_calibration import calibrate_run

            ood = calibrate_run(args.out, args.data)
            print(
                f"ood threshold {ood['threshold']:.2f}: refers {ood['val_referred_rate']:.1%} of val, "
                f"{ood['test_referred_rate']:.1%} of test"
            )
        elif args.scan_only:
            prepare_data(config)
        else:
            train(config)
    except (DatasetError, ModelCardError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
