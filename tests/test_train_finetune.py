"""``python -m train --finetune RUN --data SITE_DATA``: a run's float model fine-tuned on a site's own images.

The slow test fine-tunes the tiny run of tests/conftest.py (``tiny_run``, 32 px) on a synthetic site for two
epochs; the refusals need no trained model (they come before any model or image is read).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smearscope_core.errors import DatasetError, ExitCode
from smearscope_core.files import sha256_of
from smearscope_core.manifest import check_no_group_leak, read_manifest
from smearscope_core.model_card import read_card
from tests.factories import CLASS_STYLES, PROJECT_ROOT, RUN_FILES, make_dataset, valid_card

REFUSAL = "Fine-tuning needs the base run's classes"


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_finetune_writes_a_run_that_starts_from_the_base(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = tiny_run
    site = make_dataset(tmp_path / "site", per_class=16, seed=1)  # other images; no classes.json: the base's metadata
    out = tmp_path / "tuned"
    result = _train(
        "--finetune", str(base), "--data", str(site), "--out", str(out),
        "--finetune-epochs", "2", "--batch-size", "16", "--seed", "5", "--lr", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--lr do not apply to a fine-tune and were ignored" in result.stdout + result.stderr
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    assert "No class is marked malignant" not in result.stderr  # the site's lack of metadata does not matter

    card, base_card = read_card(out / "model_card.json"), read_card(base / "model_card.json")  # both validate
    record = card["training"]["finetuned_from"]
    assert record["name"] == base_card["name"] and record["model_sha256"] == sha256_of(base / "model.keras")
    assert record["card_sha256"] == sha256_of(base / "model_card.json")
    assert 0 <= record["val_before"]["macro_f1"] <= 1
    assert card["name"] == f"{base_card['name']}-finetuned-site"
    # the model's classes (order and metadata) and shape are the base's, though the command named neither
    assert card["classes"] == base_card["classes"]
    assert card["input"] == base_card["input"] and card["input"]["height"] == 32
    assert card["training"]["architecture"] == base_card["training"]["architecture"]
    # the same routine with a tenth of the base's peak learning rate, over the fine-tune's epochs
    base_rate = base_card["training"]["settings"]["learning_rate"]
    assert card["training"]["settings"]["learning_rate"] == pytest.approx(base_rate * 0.1)
    assert record["settings"]["learning_rate_factor"] == 0.1 and record["settings"]["epochs"] == 2
    assert card["training"]["epochs_run"] == 2
    history = json.loads((out / "history.json").read_text())
    assert max(epoch["learning_rate"] for epoch in history) <= base_rate * 0.1 * (1 + 1e-6)
    # the site's own leakage-free split, and the usual evaluation sections
    rows = read_manifest(out / "manifest.csv")
    check_no_group_leak(rows)
    assert all((site / r.path).is_file() for r in rows) and {r.split for r in rows} == {"train", "val", "test"}
    assert card["training"]["dataset"]["name"] == "site"
    assert card["training"]["dataset"]["manifest_sha256"] == sha256_of(out / "manifest.csv")
    assert {"calibration", "ood", "shortcuts", "acquisition"} <= set(card)
    assert "finetuned_from" not in base_card["training"]  # a run from scratch has no such record

    from train.model import load_float_model

    tuned, original = load_float_model(out / "model.keras"), load_float_model(base / "model.keras")
    pairs = list(zip(tuned.get_weights(), original.get_weights(), strict=True))
    assert all(a.shape == b.shape for a, b in pairs)
    assert any(not np.array_equal(a, b) for a, b in pairs)  # trained, not copied


def _fake_base(folder: Path) -> Path:
    """A run folder whose card names the synthetic classes; its model is never read before the class check."""
    folder.mkdir()
    card = valid_card()
    card["classes"] = [
        {"id": i, "name": n, "display_name": n, "malignant": i > 0, "severity": i, "description": ""}
        for i, n in enumerate(CLASS_STYLES)
    ]
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "model.keras").write_bytes(b"not read")
    return folder


@pytest.mark.parametrize("change", ["subset", "unknown class"])
def test_a_site_without_the_base_classes_gets_one_sentence_and_exit_2(
    change: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.__main__ import main

    site = make_dataset(tmp_path / "site", per_class=2)
    if change == "subset":
        shutil.rmtree(site / "Gamma")
    else:
        shutil.copytree(site / "Gamma", site / "Delta")
    out = tmp_path / "tuned"
    code = main(["--finetune", str(_fake_base(tmp_path / "base")), "--data", str(site), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == ExitCode.BAD_INPUT
    assert error.startswith(f"error: {REFUSAL} (Alpha, Beta, Gamma)") and "\n" not in error
    assert "python -m edge_app.calibrate" in error and error.count(". ") == 0
    assert not out.exists()  # refused before anything was written


def test_a_base_that_is_not_a_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.__main__ import main

    site = make_dataset(tmp_path / "site", per_class=2)
    code = main(["--finetune", str(tmp_path / "nothing"), "--data", str(site), "--out", str(tmp_path / "tuned")])
    assert code == ExitCode.BAD_INPUT
    assert "is not a training run folder" in capsys.readouterr().err


def test_site_class_metadata_that_contradicts_the_base_is_refused(tmp_path: Path) -> None:
    from train.dataset import ClassInfo, PreparedData
    from train.run import BaseRun, TrainConfig, _with_base_classes

    names = list(CLASS_STYLES)
    base = BaseRun([ClassInfo(i, n, n.upper(), i > 0, i, "") for i, n in enumerate(names)], [], {})
    site_classes = [ClassInfo(i, n, n, False, 0, "") for i, n in enumerate(names)]  # the site's own defaults
    data = PreparedData(site_classes, "site", [], "0" * 64, {}, [])
    config = TrainConfig(data=tmp_path, out=tmp_path / "out")
    assert _with_base_classes(config, data, base).classes == base.classes  # no classes.json: the base's metadata
    (tmp_path / "classes.json").write_text(json.dumps({"classes": {"Beta": {"malignant": False}}}))
    with pytest.raises(DatasetError, match=r"marks Beta, Gamma malignant differently from the base run"):
        _with_base_classes(config, data, base)
