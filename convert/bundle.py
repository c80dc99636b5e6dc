"""The model bundle (contract with the app): ``model.tflite`` + extended ``model_card.json`` + drift report.

A bundle only ever appears complete: everything is written to a staging folder beside ``--out`` and
swapped in when the gate passes. When the gate fails, nothing at ``--out`` changes; the candidate
goes to ``<out>.rejected/`` under names the app does not load (``candidate.tflite``,
``candidate_model_card.json``) so an engineer can inspect it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from convert.report import HTML_FILE, JSON_FILE
from smearscope_core.embedding_ood import REFERENCE_FILE
from smearscope_core.errors import InputError
from smearscope_core.files import CARD_FILE, FEATURES_FILE, TFLITE_FILE
from smearscope_core.model_card import write_card

REJECTED_MODEL_FILE = "candidate.tflite"
REJECTED_CARD_FILE = "candidate_model_card.json"
BUNDLE_FILES = {TFLITE_FILE, CARD_FILE, JSON_FILE, HTML_FILE, REFERENCE_FILE, FEATURES_FILE}


def rejected_folder(out: Path) -> Path:
    return out.with_name(out.name + ".rejected")


def default_float_path(out: Path) -> Path:
    """The float32 .tflite, for comparison only: beside the bundle, never in it."""
    return out.with_name(out.name + "-float32.tflite")


def check_output_folder(out: Path, run: Path) -> None:
    """Refuse to replace a folder that is not a bundle (or is the run folder itself) before any work."""
    out = Path(out)
    if out.resolve() == Path(run).resolve():
        raise InputError("--out must not be the run folder; the bundle is a new folder.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder.")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in BUNDLE_FILES)
        if foreign:
            raise InputError(
                f"{out} already holds files that are not part of a model bundle ({', '.join(foreign[:3])}); "
                "choose another --out."
            )


def _replace_folder(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.rename(old / target.name)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old)


def write_bundle(out: Path, model: bytes, card: dict, report_writer: Callable[[Path], object], passed: bool) -> Path:
    """Write the bundle (gate passed) or the rejected candidate (gate failed); return the folder written.

    ``report_writer(folder)`` writes the drift report files into the staging folder.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary folder
    try:
        (staging / (TFLITE_FILE if passed else REJECTED_MODEL_FILE)).write_bytes(model)
        write_card(card, staging / (CARD_FILE if passed else REJECTED_CARD_FILE))
        report_writer(staging)
        target = out if passed else rejected_folder(out)
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if passed and rejected_folder(out).is_dir():
        shutil.rmtree(rejected_folder(out))  # a stale candidate from an earlier failed attempt
    return target
