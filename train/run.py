"""One training run: data -> split manifest -> fit -> evaluate -> run folder with a model card.

A run folder holds: model.keras (float, no optimizer state), manifest.csv, dataset_report.json/.md,
metrics.json, confusion_matrix.png/.json, curves.png, history.json and model_card.json.

``--finetune RUN`` is the same run started from RUN's weights (its network shape and class order) with a lower
peak learning rate, on a site's own images and split; its card records the base run in ``training.finetuned_from``.

Under ``--strategy multiworker`` the same command runs on every machine that ``TF_CONFIG`` lists; each one
makes the same split, fits its share of every batch and evaluates, and only the chief keeps what it writes
(docs/training.md, "Training across machines").
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_class_weight

from smearscope_core.calibration import BENIGN_MIN_PROBABILITY, choose_abstain_threshold, fit_temperature, softmax
from smearscope_core.console import logger
from smearscope_core.errors import DatasetError, InputError
from smearscope_core.files import CARD_FILE, KERAS_FILE, MANIFEST_FILE, sha256_of
from smearscope_core.manifest import check_no_group_leak, load_images, read_manifest, split_counts, write_manifest
from smearscope_core.model_card import ModelCardError, read_card, write_card
from train.card import Evaluation, FitResult, build_card, build_metrics
from train.config import STRATEGIES, TrainConfig
from train.dataset import METADATA_FILE, ClassInfo, PreparedData, load_class_metadata, scan_dataset
from train.dedup import group_duplicates, perceptual_hashes
from train.input_pipeline import make_dataset
from train.loss import ScreeningCrossEntropy
from train.metrics import (
    classification_metrics,
    expected_calibration_error,
    has_screening_question,
    macro_f1,
    selective,
)
from train.model import (
    ARCHITECTURES,
    architecture_name,
    build_model,
    has_colour_standardisation,
    load_float_model,
    predict_logits,
)
from train.ood_calibration import calibrate_ood
from train.plots import plot_confusion_matrix, plot_curves
from train.report import dataset_report, write_dataset_report
from train.run_folder import RunSplit
from train.shortcuts import shortcuts_section
from train.split import make_split

log = logger("train")


def prepare_data(config: TrainConfig) -> PreparedData:
    """Scan, group duplicates, split and write manifest + dataset report (or reuse a manifest)."""
    config.out.mkdir(parents=True, exist_ok=True)
    manifest_path = config.out / MANIFEST_FILE
    if config.manifest is not None:
        if not Path(config.data).is_dir():
            raise DatasetError(f"The dataset folder {config.data} does not exist.")
        rows = read_manifest(config.manifest)
        class_names = sorted({r.class_name for r in rows})
        classes, name, citation, _ = load_class_metadata(Path(config.data), class_names, config.classes_file)
        missing = [r.path for r in rows if not (Path(config.data) / r.path).is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} manifest images are missing from {config.data}, e.g. {missing[0]}.")
        log.info(f"reusing split manifest {config.manifest} ({len(rows)} images)")
    else:
        started = time.perf_counter()
        scan = scan_dataset(config.data, config.classes_file)
        log.info(
            f"scanned {config.data}: {len(scan.records)} readable images, {len(scan.rejected)} rejected, "
            f"classes {scan.class_counts()} [{scan.metadata_source}]"
        )
        hashes = perceptual_hashes(scan.root, scan.records)
        duplicates = group_duplicates(scan.records, hashes, config.near_duplicate_distance)
        rows = make_split(scan, duplicates, config.val_fraction, config.test_fraction, config.seed)
        report = dataset_report(scan, duplicates, rows)
        write_dataset_report(report, config.out)
        dup = report["duplicates"]
        log.info(
            f"duplicates: {dup['exact_duplicate_copies_dropped']} exact copies dropped, "
            f"{dup['near_duplicate_pairs']} near-duplicate pairs, "
            f"{dup['groups_with_more_than_one_image']} groups kept whole ({time.perf_counter() - started:.0f}s)"
        )
        classes, name, citation = scan.classes, scan.dataset_name, scan.citation
    check_no_group_leak(rows)
    sha = write_manifest(rows, manifest_path)
    counts = split_counts(rows, [c.name for c in classes])
    for split, per_class in counts.items():
        log.info(f"  {split:5s} {sum(per_class.values()):5d}  {per_class}")
    return PreparedData(classes, name, citation, sha, counts, rows)


class MacroF1EarlyStopping(keras.callbacks.Callback):
    """Evaluate val macro-F1 in inference mode each epoch; keep the best weights; stop on a plateau."""

    def __init__(self, val_data: tf.data.Dataset, val_labels: np.ndarray, num_classes: int, patience: int, epochs: int):
        super().__init__()
        self.val_data, self.val_labels = val_data, val_labels
        self.num_classes, self.patience, self.epochs = num_classes, patience, epochs
        self.history: list[dict] = []
        self.best_f1, self.best_epoch, self.best_weights = -1.0, 0, None
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        logits = self.model.predict(self.val_data, verbose=0)
        probs = softmax(logits)
        predicted = probs.argmax(1)
        f1 = macro_f1(self.val_labels, predicted, self.num_classes)
        entry = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", np.nan)),
            "accuracy": float(logs.get("accuracy", np.nan)),
            "val_loss": float(log_loss(self.val_labels, probs, labels=list(range(self.num_classes)))),
            "val_accuracy": float((predicted == self.val_labels).mean()),
            "val_macro_f1": f1,
            "val_predicted_classes": len(np.unique(predicted)),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": time.perf_counter() - self._started,
        }
        self.history.append(entry)
        if f1 > self.best_f1:
            self.best_f1, self.best_epoch, self.best_weights = f1, epoch + 1, self.model.get_weights()
        log.info(
            f"epoch {epoch + 1:3d}/{self.epochs}  loss {entry['loss']:.4f}  acc {entry['accuracy']:.4f}  "
            f"val_loss {entry['val_loss']:.4f}  val_acc {entry['val_accuracy']:.4f}  "
            f"val_macro_f1 {f1:.4f}  lr {entry['learning_rate']:.2e}  {entry['seconds']:.0f}s"
            f"  (best {self.best_f1:.4f} @ {self.best_epoch})"
        )
        if epoch + 1 - self.best_epoch >= self.patience:
            log.info(f"early stop: val macro-F1 has not improved for {self.patience} epochs")
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            log.info(f"restored best weights from epoch {self.best_epoch} (val macro-F1 {self.best_f1:.4f})")


def make_optimizer(config: TrainConfig, schedule: keras.optimizers.schedules.LearningRateSchedule) -> keras.Optimizer:
    """AdamW with the run's weight decay and, with ``ema_momentum``, an exponential moving average of the weights."""
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        use_ema=config.ema_momentum > 0,
        ema_momentum=config.ema_momentum or 0.99,
    )


def fit_callbacks(config: TrainConfig, stopper: MacroF1EarlyStopping) -> list[keras.callbacks.Callback]:
    """The stopper, after a swap of the averaged weights into the model at each epoch's end when the run averages
    them: validation then reads, and the stopper keeps and finally restores, the averaged weights."""
    if not config.ema_momentum:
        return [stopper]
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True), stopper]


CLUSTER_JOBS = ("chief", "worker")  # the TF_CONFIG jobs that train; TensorFlow's chief is "chief", else worker 0
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}")  # host:port, [IPv6]:port


def cluster_task(tf_config: str | None) -> tuple[str, int, int]:
    """``TF_CONFIG`` checked for a multi-worker run: (this task's job, its index, the number of training tasks).

    Raises ``InputError`` with one sentence when it is missing or malformed, before TensorFlow reads it.
    """
    if not (tf_config or "").strip():
        raise InputError(
            "--strategy multiworker needs the TF_CONFIG environment variable (every worker's host:port and this "
            "process's task, docs/training.md 'Training across machines'), and it is not set."
        )
    try:
        spec = json.loads(tf_config)
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error.msg} at character {error.pos}).") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(job) for job in CLUSTER_JOBS):
        raise InputError('TF_CONFIG has no "cluster" with a "worker" list of "host:port" addresses.')
    if other := sorted(set(cluster) - set(CLUSTER_JOBS)):
        raise InputError(f'TF_CONFIG lists jobs {other} that --strategy multiworker does not run: use "worker".')
    jobs = {job: cluster.get(job, []) for job in CLUSTER_JOBS}
    for job, addresses in jobs.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in addresses):
            raise InputError(f'TF_CONFIG\'s "{job}" must be a list of "host:port" addresses, not {addresses!r}.')
    everyone = jobs["chief"] + jobs["worker"]
    if len(jobs["chief"]) > 1 or len(set(everyone)) < len(everyone):
        raise InputError("TF_CONFIG's cluster lists more than one chief or the same address twice.")
    task = spec.get("task")
    if not isinstance(task, dict) or task.get("type") not in CLUSTER_JOBS or type(task.get("index")) is not int:
        raise InputError('TF_CONFIG has no "task" naming this process, such as {"type": "worker", "index": 0}.')
    job, index = task["type"], task["index"]
    if not 0 <= index < len(jobs[job]):
        raise InputError(f'TF_CONFIG\'s task index {index} is outside its {len(jobs[job])} "{job}" addresses.')
    return job, index, len(everyone)


class _KerasReduce:
    """``reduce`` as Keras 3's ``fit`` calls it on a multi-worker strategy (keras-team/keras#20585).

    Keras reduces a whole (images, labels) batch at once, which ``MirroredStrategy`` takes and the collective
    strategies refuse, and the per-replica loss and accuracy with ``axis=0``, which a scalar has not: reduce each
    element of a structure on its own, and a scalar across replicas only.
    """

    def reduce(self, reduce_op: str | tf.distribute.ReduceOp, value: object, axis: int | None = None) -> object:
        def one(item: tf.Tensor) -> tf.Tensor:
            scalar = len(self.experimental_local_results(item)[0].shape) == 0
            return super(_KerasReduce, self).reduce(reduce_op, item, None if scalar else axis)

        return tf.nest.map_structure(one, value)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy ``STRATEGIES[name]`` describes; a cluster one checks ``TF_CONFIG`` first."""
    spec = STRATEGIES[name]
    if spec.cluster:
        job, index, workers = cluster_task(os.environ.get("TF_CONFIG"))
        log.info(f"multi-worker training: this is {job} {index}, one of {workers} workers (TF_CONFIG)")
    if spec.tf_class is None:
        return tf.distribute.get_strategy()
    strategy_class = getattr(tf.distribute, spec.tf_class)
    if spec.cluster:
        strategy_class = type(spec.tf_class, (_KerasReduce, strategy_class), {})
    return strategy_class()


def _check_same_split(strategy: tf.distribute.Strategy, manifest_sha256: str) -> None:
    """Refuse to train unless every worker made the same split (the same data and seed): else they would silently
    train on different images, and evaluate with different labels."""
    digest = tf.constant([int(manifest_sha256[:12], 16)], tf.int64)
    everyone = strategy.gather(strategy.run(lambda: tf.identity(digest)), axis=0).numpy()
    if len(set(everyone.tolist())) > 1:
        raise DatasetError(
            "The workers made different splits: give every worker the same dataset (the same files at --data) "
            "and the same --seed, or the same --manifest."
        )


@dataclass
class BaseRun:
    """The run a fine-tune starts from: its classes (in its order), its float model's weights, and the
    ``training.finetuned_from`` record the fine-tuned run's card keeps."""

    classes: list[ClassInfo]
    weights: list[np.ndarray]
    record: dict


def _site_class_names(config: TrainConfig) -> list[str]:
    """The class names a site brings: its manifest's, or its class folders' (as ``scan_dataset`` finds them)."""
    if config.manifest is not None:
        return sorted({r.class_name for r in read_manifest(config.manifest)})
    root = Path(config.data)
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {root} does not exist.")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def prepare_finetune(config: TrainConfig) -> tuple[TrainConfig, BaseRun]:
    """The settings a fine-tune of ``config.finetune`` runs with, and what it starts from.

    The network's shape (architecture, input size, dropout, colour standardisation) is read from the base model, so
    its weights fit; the peak learning rate is ``finetune_lr_factor`` times the base run's, over ``finetune_epochs``
    with a shorter warm-up and no weight average: the training routine itself is unchanged. Refuses a site whose
    classes are not the base run's (one sentence), before any image is read.
    """
    base = Path(config.finetune)
    if not (base / KERAS_FILE).is_file():
        raise InputError(f"--finetune {base} is not a training run folder: it has no {KERAS_FILE}.")
    try:
        card = read_card(base / CARD_FILE)
    except ModelCardError as error:
        raise InputError(f"The base run's model card cannot be used: {error}") from None
    names = [c["name"] for c in card["classes"]]
    site = _site_class_names(config)
    if sorted(site) != sorted(names):
        raise InputError(
            f"Fine-tuning needs the base run's classes ({', '.join(names)}) and {config.data} has "
            f"{', '.join(site) or 'none'}: for a site with its own label set, use the head-only calibration on "
            f"the run's converted bundle, `python -m edge_app.calibrate {config.data} --base BUNDLE --out SITE_BUNDLE`."
        )
    model = load_float_model(base / KERAS_FILE)
    backbone = next(layer for layer in model.layers if layer.name.startswith("MobileNetV3"))
    settings = card["training"].get("settings", {})
    # the factor applies to the from-scratch rate, also when the base is itself a fine-tune (it does not compound)
    earlier = card["training"].get("finetuned_from", {}).get("settings", {})
    base_learning_rate = float(earlier.get("base_learning_rate", settings.get("learning_rate", config.learning_rate)))
    tuned = replace(
        config,
        architecture=next(k for k, v in ARCHITECTURES.items() if backbone.name == v.__name__),
        image_size=int(model.input_shape[1]),
        dropout=float(model.get_layer("dropout").rate),
        colour_standardise=has_colour_standardisation(model),
        xnnpack_hard_swish=bool(settings.get("xnnpack_hard_swish", config.xnnpack_hard_swish)),
        init_weights=None,
        learning_rate=base_learning_rate * config.finetune_lr_factor,
        epochs=config.finetune_epochs,
        warmup_epochs=config.finetune_warmup_epochs,
        # no weight average: over a fine-tune's few hundred steps one at 0.99 would keep much of the base's weights
        # (the from-scratch default's average spans about 100 steps of a 4,320-step run)
        ema_momentum=0.0,
        name=config.name or f"{card['name']}-finetuned-{Path(config.data).name}",
    )
    defaults = TrainConfig(out=config.out)
    overridden = [flag for flag, field_name in (("--arch", "architecture"), ("--image-size", "image_size"),
                                                ("--lr", "learning_rate"), ("--epochs", "epochs"),
                                                ("--init-weights", "init_weights"),
                                                ("--ema-momentum", "ema_momentum"))
                  if getattr(config, field_name) != getattr(defaults, field_name)]  # fmt: skip
    if overridden:
        ignored = ", ".join(overridden)
        log.warning(f"{ignored} do not apply to a fine-tune and were ignored: the network is the base run's, the "
                    f"rate {config.finetune_lr_factor} x its rate, the epochs --finetune-epochs, no weight "
                    "average")  # fmt: skip
    record = {
        "name": card["name"],
        "run_folder": str(base),
        "model_sha256": sha256_of(base / KERAS_FILE),
        "card_sha256": sha256_of(base / CARD_FILE),
        "settings": {
            "learning_rate_factor": config.finetune_lr_factor,
            "base_learning_rate": base_learning_rate,
            "learning_rate": tuned.learning_rate,
            "epochs": tuned.epochs,
            "warmup_epochs": tuned.warmup_epochs,
        },
    }
    keys = {f.name for f in fields(ClassInfo)}
    classes = [ClassInfo(**{k: c[k] for k in keys}) for c in card["classes"]]
    return tuned, BaseRun(classes, model.get_weights(), record)


def _with_base_classes(config: TrainConfig, data: PreparedData, base: BaseRun) -> PreparedData:
    """The site's prepared data in the base run's classes: their order (the model's outputs) and metadata.

    A site ``classes.json`` that calls a class malignant where the base run does not (or the reverse) is refused:
    the fine-tuned model keeps the base's classes, and its screening figures would silently follow the other.
    """
    site = {c.name: c for c in data.classes}
    metadata = config.classes_file or Path(config.data) / METADATA_FILE
    differ = [c.name for c in base.classes if c.malignant != site[c.name].malignant]
    if Path(metadata).is_file() and differ:
        raise DatasetError(
            f"{metadata} marks {', '.join(differ)} malignant differently from the base run, whose classes a "
            "fine-tune keeps: make them agree, or leave the file out to use the base run's class metadata."
        )
    names = [c.name for c in base.classes]
    return replace(data, classes=base.classes, counts=split_counts(data.rows, names))


def train(config: TrainConfig) -> dict:
    """Run everything; return the model card.

    Every worker of a multi-worker strategy runs all of it (their collective ops must match, evaluation included);
    only the chief writes ``config.out``, the others write to a temporary folder and discard it (the Keras pattern).
    """
    strategy = make_strategy(config.strategy)  # first: a multi-worker strategy must exist before any other TF op
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise InputError(
            f"--batch-size {config.batch_size} is the global batch and does not split evenly over the {replicas} "
            f"replicas; choose a multiple of {replicas}."
        )
    if replicas > 1:
        log.info(f"{replicas} replicas in sync: global batch {config.batch_size}, {config.batch_size // replicas} each")
    base = None
    if config.finetune is not None:
        config, base = prepare_finetune(config)
        log.info(
            f"fine-tuning {base.record['name']} ({config.finetune}): {architecture_name(config.architecture)} at "
            f"{config.image_size}px, its classes {[c.name for c in base.classes]} and their metadata, peak learning "
            f"rate {config.learning_rate:.2e} ({config.finetune_lr_factor} x the base run's)"
        )
    if strategy.extended.should_checkpoint:  # the chief, or the only process
        return _train(config, strategy, base)
    with tempfile.TemporaryDirectory(prefix="smearscope-worker-") as scratch:
        log.info(f"not the chief: writing to {scratch}, deleted at the end (the chief writes {config.out})")
        return _train(replace(config, out=Path(scratch) / "run"), strategy, base)


def _train(config: TrainConfig, strategy: tf.distribute.Strategy, base: BaseRun | None = None) -> dict:
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    if base is None:
        data = prepare_data(config)
    else:
        with warnings.catch_warnings():  # the class metadata are the base run's, not the site's defaults
            warnings.filterwarnings("ignore", "No class is marked malignant")
            data = _with_base_classes(config, prepare_data(config), base)
    if STRATEGIES[config.strategy].cluster:
        _check_same_split(strategy, data.manifest_sha256)
    names = [c.name for c in data.classes]
    malignant = [c.malignant for c in data.classes]
    if config.screening_weight and not has_screening_question(malignant):
        log.info("screening weight ignored: every class is of one kind, so there is no benign mass to price")
        config = replace(config, screening_weight=0.0)
    by_split = {s: [r for r in data.rows if r.split == s] for s in ("train", "val", "test")}
    for split, rows in by_split.items():
        if not rows:
            raise DatasetError(f"The {split} split is empty; the dataset is too small for these split fractions.")
    arrays = {s: load_images(Path(config.data), rows, config.image_size, names) for s, rows in by_split.items()}
    log.info(f"loaded images at {config.image_size}px ({time.perf_counter() - started:.0f}s so far)")

    train_x, train_y = arrays["train"]
    train_data = make_dataset(
        train_x, train_y, config.batch_size, config.augmentation if config.augment else None, config.seed
    )
    eval_data = {s: make_dataset(x, y, 64) for s, (x, y) in arrays.items()}
    weights = compute_class_weight("balanced", classes=np.arange(len(names)), y=train_y)
    steps = int(np.ceil(len(train_x) / config.batch_size))
    with strategy.scope():
        model = build_model(
            len(names), config.image_size, config.architecture, config.dropout, init_weights=config.init_weights,
            colour_standardise=config.colour_standardise, xnnpack_hard_swish=config.xnnpack_hard_swish,
        )  # fmt: skip
        if base is not None:
            model.set_weights(base.weights)
        warmup = min(config.warmup_epochs * steps, max(config.epochs * steps - 1, 0))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
            decay_steps=max(config.epochs * steps - warmup, 1),
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        model.compile(
            optimizer=make_optimizer(config, schedule),
            loss=ScreeningCrossEntropy(malignant, config.screening_weight),
            metrics=["accuracy"],
        )
    stopper = MacroF1EarlyStopping(eval_data["val"], arrays["val"][1], len(names), config.patience, config.epochs)
    if base is not None:  # where the site's val split stood before: the figure the fine-tune is to beat
        before = model.predict(eval_data["val"], verbose=0).argmax(1)
        base.record["val_before"] = {
            "accuracy": float((before == arrays["val"][1]).mean()),
            "macro_f1": macro_f1(arrays["val"][1], before, len(names)),
        }
        log.info(f"the base model on the site's val split: macro-F1 {base.record['val_before']['macro_f1']:.4f}")
    log.info(
        f"training {architecture_name(config.architecture)} at {config.image_size}px: {len(train_x)} images, "
        f"{steps} steps/epoch, up to {config.epochs} epochs, class weights {np.round(weights, 3).tolist()}"
    )
    fit_started = time.perf_counter()
    model.fit(
        train_data,
        epochs=config.epochs,
        class_weight=dict(enumerate(weights)),
        callbacks=fit_callbacks(config, stopper),
        shuffle=False,  # the tf.data pipeline already shuffles
        verbose=0,
    )
    fit_seconds = time.perf_counter() - fit_started

    # Evaluate in inference mode; calibrate on val; report on test.
    logits = {s: model.predict(eval_data[s], verbose=0) for s in ("val", "test")}
    labels = {s: arrays[s][1] for s in ("val", "test")}
    temperature = fit_temperature(labels["val"], logits["val"])
    calibrated = {s: softmax(logits[s], temperature) for s in logits}
    raw = {s: softmax(logits[s]) for s in logits}
    threshold = choose_abstain_threshold(labels["val"], calibrated["val"], config.abstain_target_accuracy)
    results = {}
    for split in ("val", "test"):
        result = classification_metrics(labels[split], calibrated[split], names, malignant)
        result["calibration"] = {
            "ece_before": expected_calibration_error(labels[split], raw[split]),
            "ece_after": expected_calibration_error(labels[split], calibrated[split]),
            "nll_before": float(log_loss(labels[split], raw[split], labels=list(range(len(names))))),
            "nll_after": float(log_loss(labels[split], calibrated[split], labels=list(range(len(names))))),
        }
        result["abstain"] = selective(labels[split], calibrated[split], threshold, malignant, BENIGN_MIN_PROBABILITY)
        result["predicted_class_counts"] = np.bincount(calibrated[split].argmax(1), minlength=len(names)).tolist()
        results[split] = result
    test = results["test"]
    log.info(
        f"test: accuracy {test['accuracy']:.4f}  macro-F1 {test['macro']['f1']:.4f}  "
        f"ROC-AUC {test['roc_auc_ovr_macro']}  screening {test['screening']}  "
        f"ECE {test['calibration']['ece_before']:.4f} -> {test['calibration']['ece_after']:.4f} (T={temperature:.3f})"
    )
    ood = calibrate_ood({s: x for s, (x, _) in arrays.items()})  # the images already in memory
    log.info(
        f"out-of-distribution check: threshold {ood['threshold']:.2f}; refers {ood['val_referred_rate']:.1%} of val, "
        f"{ood['test_referred_rate']:.1%} of test"
    )
    splits = {s: RunSplit(x, y, [Path(config.data) / r.path for r in by_split[s]]) for s, (x, y) in arrays.items()}
    shortcuts = shortcuts_section(partial(predict_logits, model), splits, temperature, names, malignant)
    robust, colour_only = shortcuts["colour_robust"]["test"], shortcuts["baselines"]["colour"]
    log.info(
        f"shortcuts: colour alone (6 numbers) reaches test accuracy {colour_only['accuracy']:.3f}; "
        f"the model on colour-standardised test images: accuracy {robust['accuracy']:.4f}, "
        f"macro-F1 {robust['macro_f1']:.4f}, sensitivity {robust['sensitivity']}, specificity {robust['specificity']}"
    )
    evaluation = Evaluation(results, temperature, threshold, ood, shortcuts)
    fit = FitResult(stopper.history, stopper.best_epoch, fit_seconds, base.record if base else None)
    return _write_run(config, data, model, fit, evaluation, time.perf_counter() - started)


def _write_run(
    config: TrainConfig,
    data: PreparedData,
    model: keras.Model,
    fit: FitResult,
    evaluation: Evaluation,
    total_seconds: float,
) -> dict:
    """Write the run folder: the float model, history, figures, metrics and the model card; return the card."""
    out = config.out
    names = [c.name for c in data.classes]
    # Save a fresh copy without optimizer state: smaller, and all the later stages need.
    export = build_model(
        len(names), config.image_size, config.architecture, config.dropout,
        colour_standardise=config.colour_standardise, xnnpack_hard_swish=config.xnnpack_hard_swish,
    )  # fmt: skip
    export.set_weights(model.get_weights())
    export.save(out / KERAS_FILE)
    (out / "history.json").write_text(json.dumps(fit.history, indent=2) + "\n")
    plot_curves(fit.history, out / "curves.png")
    matrix = evaluation.results["test"]["confusion_matrix"]
    (out / "confusion_matrix.json").write_text(json.dumps(matrix, indent=2) + "\n")
    plot_confusion_matrix(matrix["matrix"], names, "Float model, test split", out / "confusion_matrix.png")
    (out / "metrics.json").write_text(json.dumps(build_metrics(evaluation), indent=2) + "\n")
    card = build_card(config, data, fit, evaluation, total_seconds)
    write_card(card, out / CARD_FILE)
    log.info(f"wrote run folder {out} ({total_seconds / 60:.1f} min in all)")
    return card
