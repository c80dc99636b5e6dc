"""Every setting of a training run, written once: its default, its help text and its command-line flag.

``TrainConfig`` is what ``train.run.train`` takes. ``python -m train`` makes one option of each field
whose metadata is ``option(flag, help, ...)`` (``smearscope_core.options.add_options``) and builds the
config back from the parsed options (``from_options``), so a default or a help string is never written twice. Fields
without that metadata are settings with no flag (yet). Importing this module does not import
TensorFlow, so ``python -m train --help`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smearscope_core.options import option
from smearscope_core.paths import DEFAULT_DATASET
from train.dedup import DEFAULT_MAX_DISTANCE


@dataclass(frozen=True)
class Augmentation:
    """The random microscopy augmentation of training images (applied by ``train.input_pipeline``)."""

    min_scale: float = 0.8  # crop side as a fraction of the image side, then resized back
    # a deeper zoom for a share of the images: with this probability the crop side is drawn from
    # [deep_zoom_min_scale, min_scale] instead (a higher magnification, while most images keep the training scale)
    deep_zoom_probability: float = 0.0
    deep_zoom_min_scale: float = 0.5
    brightness: float = 0.1  # max delta on [0, 1] pixels
    contrast: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.04  # max hue rotation, fraction of the colour circle
    saturation: tuple[float, float] = (0.7, 1.3)
    blur_probability: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)
    # stain and camera (0 and 1.0 are off): optical density scaled by 1 +- od_scale and shifted by +- od_shift per
    # channel (another stain batch or protocol, Tellez et al. 2019), then white balance and gamma
    od_scale: float = 0.0
    od_shift: float = 0.0
    white_balance: float = 0.0  # per-channel gain 1 +- this
    gamma: tuple[float, float] = (1.0, 1.0)


# The augmentation variants a run can choose (--augmentation): one table, recorded in the card by name and value.
AUGMENTATIONS = {
    "standard": Augmentation(),
    "stain": Augmentation(
        min_scale=0.7, hue=0.06, saturation=(0.6, 1.4), od_scale=0.25, od_shift=0.05, white_balance=0.1,
        gamma=(0.75, 1.33),
    ),
    # standard, with magnification up to 2x (crop side down to half): the zoom a clinic's objective or camera
    # adapter can add; larger changes are left to the app's magnification check (smearscope_core.scale)
    "zoom": Augmentation(min_scale=0.5),
    # standard, with magnification up to 1.5x for every image: the range a clinic's objective and camera adapter
    # give in practice (the magnification check refers fields measured beyond its band)
    "clinic-zoom": Augmentation(min_scale=0.67),
    # standard for half the images, the other half zoomed 1.25x-2x: zoom robustness without losing the training
    # scale (a 2x crop of a malignant field may miss every blast: only half the images run that risk)
    "mixed-zoom": Augmentation(deep_zoom_probability=0.5),
    # mixed-zoom with the stain preset's colour changes: zoom robustness without losing benign specificity under
    # a weaker or stronger stain (mixed-zoom alone called pale benign fields malignant: docs/training.md, round 4)
    "mixed-zoom-stain": Augmentation(
        deep_zoom_probability=0.5, hue=0.06, saturation=(0.6, 1.4), od_scale=0.25, od_shift=0.05, white_balance=0.1,
        gamma=(0.75, 1.33),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Strategy:
    """A tf.distribute strategy a run can choose (--strategy); ``train.run.make_strategy`` builds it."""

    trains_on: str  # for --help and docs/training.md
    tf_class: str | None = None  # the tf.distribute class to build; None: TensorFlow's default strategy
    cluster: bool = False  # TF_CONFIG names the workers; every worker trains, only the chief writes the run folder


# The strategies a run can choose (--strategy): one table, recorded in the card by name.
STRATEGIES = {
    "default": Strategy("one device"),
    "mirrored": Strategy("every local GPU", "MirroredStrategy"),
    "multiworker": Strategy(
        "every machine TF_CONFIG lists (docs/training.md)", "MultiWorkerMirroredStrategy", cluster=True
    ),
}


@dataclass(kw_only=True)
class TrainConfig:
    """One training run's settings; ``python -m train --help`` lists those with a flag."""

    data: Path = field(default=DEFAULT_DATASET, metadata=option("--data", "dataset root with one folder per class"))
    out: Path = field(metadata=option("--out", "run folder to write"))
    architecture: str = field(
        default="small", metadata=option("--arch", "MobileNetV3 size", choices=["small", "large"])
    )
    image_size: int = field(default=160, metadata=option("--image-size", "square model input side in pixels"))
    epochs: int = field(default=60, metadata=option("--epochs", "maximum epochs"))
    patience: int = field(default=60, metadata=option("--patience", "epochs without val macro-F1 gain before stopping"))
    batch_size: int = field(default=32, metadata=option("--batch-size", "training batch size"))
    learning_rate: float = field(default=2e-3, metadata=option("--lr", "peak AdamW learning rate"))
    weight_decay: float = field(default=0.01, metadata=option("--weight-decay", "AdamW weight decay"))
    warmup_epochs: int = 2  # epochs of warm-up to the peak learning rate, then cosine decay
    ema_momentum: float = field(
        default=0.99,
        metadata=option(
            "--ema-momentum",
            "keep an exponential moving average of the weights with this per-step momentum (Polyak averaging, "
            "e.g. 0.99) and validate, choose and save the averaged weights; 0: off",
        ),
    )
    dropout: float = 0.2  # before the classifier layer
    screening_weight: float = field(
        default=1.0,
        metadata=option(
            "--screening-weight",
            "extra loss on each malignant training image: this x -log P(any malignant class), so a malignant image "
            "called benign costs more than a benign one called malignant (train/loss.py); 0: plain cross-entropy",
        ),
    )
    seed: int = field(default=42, metadata=option("--seed", "seed of the split, the weights and the augmentation"))
    val_fraction: float = field(
        default=0.15, metadata=option("--val-fraction", "share of the images held out for validation")
    )
    test_fraction: float = field(
        default=0.15, metadata=option("--test-fraction", "share of the images held out for the test")
    )
    near_duplicate_distance: int = field(
        default=DEFAULT_MAX_DISTANCE,
        metadata=option("--near-dup-distance", "pHash Hamming distance for near-duplicates (-1: off)"),
    )
    classes_file: Path | None = field(
        default=None, metadata=option("--classes-file", "class metadata JSON (default: DATA/classes.json)")
    )
    manifest: Path | None = field(
        default=None, metadata=option("--manifest", "reuse this split manifest instead of making a new split")
    )
    init_weights: Path | None = field(
        default=None, metadata=option("--init-weights", "local backbone weights file to start from")
    )
    # Fine-tuning (docs/training.md "Fine-tuning on a site's images"): the same routine, started from a run's weights.
    finetune: Path | None = field(
        default=None,
        metadata=option(
            "--finetune",
            "run folder whose float model to fine-tune on --data (a site's images in the run's classes); the "
            "network's shape and classes are the run's",
            metavar="RUN",
        ),
    )
    finetune_lr_factor: float = field(
        default=0.1,
        metadata=option("--finetune-lr-factor", "a fine-tune's peak learning rate as a fraction of the base run's"),
    )
    finetune_epochs: int = field(default=20, metadata=option("--finetune-epochs", "maximum epochs of a fine-tune"))
    finetune_warmup_epochs: int = 1  # shorter than a run's: the weights are trained already
    strategy: str = field(
        default="default",
        metadata=option(
            "--strategy",
            "tf.distribute strategy: " + "; ".join(f"'{k}' trains on {v.trains_on}" for k, v in STRATEGIES.items()),
            choices=list(STRATEGIES),
        ),
    )
    augment: bool = field(default=True, metadata=option("--no-augment", "train without augmentation"))
    # The default since 2026-11-24 (docs/training.md, "choosing a colour-robust default"): both on. Input size,
    # patience, weight averaging, screening weight and augmentation are round 6's candidate L (2026-12-07).
    colour_standardise: bool = field(
        default=True,
        metadata=option(
            "--no-colour-standardise",
            "leave out the first layer that removes each image's own colour mean and contrast (without it the "
            "model can learn the photo session's colour)",
        ),
    )
    xnnpack_hard_swish: bool = field(
        default=True,
        metadata=option(
            "--fused-hard-swish",
            "build Keras' own hard-swish (fused into HARD_SWISH, which XNNPACK does not run in int8) instead of "
            "(x/6)*relu6(x+3)",
        ),
    )
    abstain_target_accuracy: float = 0.99  # the abstain threshold is the lowest at which val reaches this accuracy
    name: str | None = field(default=None, metadata=option("--name", "model name for the card"))
    augmentation_preset: str = field(
        default="mixed-zoom",
        metadata=option(
            "--augmentation", "augmentation variant (train/config.py AUGMENTATIONS)", choices=list(AUGMENTATIONS)
        ),
    )

    @property
    def augmentation(self) -> Augmentation:
        return AUGMENTATIONS[self.augmentation_preset]
