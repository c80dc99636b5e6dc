"""What one conversion is asked to do: every setting once, with its default, flag and help text.

``python -m convert`` builds its options from these fields (smearscope_core/options.py), so a default is
written here (the gate's in convert/gate.py) and nowhere else. Each field's metadata,
``option(flag, help, group)``, is its flag, its help text and its heading in ``--help``. This module
imports no TensorFlow, scikit-learn or matplotlib, so ``--help`` stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from convert.gate import Thresholds
from smearscope_core.errors import InputError
from smearscope_core.options import option
from smearscope_core.paths import DEFAULT_DATASET, EXTERNAL_DEV_DATASET

GATE = "gate"
REMEDY = "diagnosis and remedy"
FEATURES = "feature extractor (features.tflite, for site calibration; convert/features.py)"
EFFICIENTNET_LITE0 = "efficientnet-lite0"
NO_FEATURES = "none"
FEATURE_CHOICES = (EFFICIENTNET_LITE0, NO_FEATURES)


@dataclass
class ConvertConfig:
    run: Path = field(metadata=option("--run", "training run folder (model.keras, model_card.json)"))
    out: Path = field(metadata=option("--out", "bundle folder to write (e.g. edge_app/models/NAME)"))
    data: Path = field(default=DEFAULT_DATASET, metadata=option("--data", "dataset root the run's manifest refers to"))
    float_out: Path | None = field(
        default=None,
        metadata=option(
            "--float-out", "where the float32 .tflite goes (default: <out>-float32.tflite beside the bundle)"
        ),
    )
    representative_size: int = field(
        default=200, metadata=option("--representative-size", "train images for int8 calibration (stratified)")
    )
    seed: int = field(default=42, metadata=option("--seed", "seed of the representative-image draw"))
    thresholds: Thresholds = field(default_factory=Thresholds, metadata={"group": GATE})  # its fields are options
    allow_float_ops: bool = field(
        default=False,
        metadata=option("--allow-float-ops", "accept a model that is not integer-only (float fallback)", GATE),
    )
    debug_layers: bool = field(  # the per-layer report also runs by itself when the gate fails
        default=False,
        metadata=option(
            "--debug-layers",
            "always write the per-layer error report (it is written anyway when the gate fails)",
            REMEDY,
        ),
    )
    debug_samples: int = field(
        default=50, metadata=option("--debug-samples", "representative images the per-layer report uses", REMEDY)
    )
    float_layers: int = field(
        default=0,
        metadata=option(
            "--float-layers",
            "keep the N layers with the worst quantization error in float; this explicitly allows float ops "
            "(the model is then no longer integer-only)",
            REMEDY,
            metavar="N",
        ),
    )
    xnnpack_hard_swish: bool = field(  # (x / 6) * relu6(x + 3): faster int8 on XNNPACK, see docs/performance.md
        default=False,
        metadata=option(
            "--xnnpack-hard-swish",
            "write hard-swish as (x/6)*relu6(x+3) so XNNPACK runs the whole int8 graph (2.8x faster invoke on "
            "the default model, but one more test image flips: see docs/performance.md)",
            REMEDY,
        ),
    )
    num_threads: int = field(default=1, metadata=option("--threads", "LiteRT threads for the drift evaluation", REMEDY))
    features: str = field(
        default=EFFICIENTNET_LITE0,
        metadata=option(
            "--features",
            "the ImageNet feature extractor to put in the bundle as features.tflite (int8), or none",
            FEATURES,
            choices=FEATURE_CHOICES,
        ),
    )
    external_data: Path = field(
        default=EXTERNAL_DEV_DATASET,
        metadata=option(
            "--external-data",
            "other labs' images that calibrate and measure the feature extractor beside the training images "
            "(left out where the folder is absent)",
            FEATURES,
        ),
    )
    features_cache: Path | None = field(
        default=None,
        metadata=option(
            "--features-cache",
            "folder of converted feature extractors, reused when the checkpoint, images and tools are the same "
            "(default: $XDG_CACHE_HOME/smearscope/features, i.e. ~/.cache/smearscope/features)",
            FEATURES,
        ),
    )

    def validate(self) -> None:
        if self.representative_size < 1:
            raise InputError("--representative-size must be at least 1.")
        if not 0.0 <= self.thresholds.min_agreement_percent <= 100.0:
            raise InputError("--min-agreement is a percentage between 0 and 100.")
        if self.thresholds.max_accuracy_drop_points < 0 or self.thresholds.max_recall_drop_points < 0:
            raise InputError("--max-accuracy-drop and --max-recall-drop are percentage points, 0 or more.")
        if self.float_layers < 0:
            raise InputError("--float-layers must be 0 or more.")
        if self.debug_samples < 1:
            raise InputError("--debug-samples must be at least 1.")
        if self.features not in FEATURE_CHOICES:
            raise InputError(f"--features must be one of {', '.join(FEATURE_CHOICES)}.")
