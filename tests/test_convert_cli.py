"""The command line (convert/__main__.py) on bad input and on a failed gate: one sentence, the shared exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.__main__ import main
from convert.gate import Thresholds, evaluate
from smearscope_core.errors import ExitCode
from smearscope_core.manifest import ManifestRow, read_manifest, write_manifest
from tests.factories import crafted_drift, run_convert, valid_card


def crafted_run(folder: Path) -> Path:
    """A run folder whose card and manifest are valid (the model file is a placeholder, never loaded)."""
    folder.mkdir(parents=True)
    rows = [
        ManifestRow(f"{c}/{c}-{i}.png", "0" * 64, c, s, n)
        for n, (c, i, s) in enumerate((c, i, s) for c in ("A", "B") for i, s in enumerate(("train", "val", "test")))
    ]
    sha = write_manifest(rows, folder / "manifest.csv")
    card = valid_card()
    card["name"] = "crafted"
    card["classes"] = [
        {"id": 0, "name": "A", "display_name": "A", "malignant": False, "severity": 0, "description": ""},
        {"id": 1, "name": "B", "display_name": "B", "malignant": True, "severity": 2, "description": ""},
    ]
    card["input"] |= {"height": 32, "width": 32}
    card["training"] |= {"image_size": 32}
    card["training"]["dataset"] |= {"manifest": "manifest.csv", "manifest_sha256": sha}
    card["calibration"]["temperature"] = 1.0
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "model.keras").write_bytes(b"placeholder")
    return folder


def _run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_missing_run_folder_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    result = run_convert("--run", str(tmp_path / "nope"), "--out", str(tmp_path / "bundle"))
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr.strip() == f"error: The run folder {tmp_path / 'nope'} does not exist."
    assert "Traceback" not in result.stderr


def test_broken_card_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    (run / "model_card.json").write_text("{not json")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == ExitCode.BAD_INPUT and "not valid JSON" in err and len(err.strip().splitlines()) == 1

    (run / "model_card.json").write_text(json.dumps({"schema_version": "1.0", "name": "x"}))
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == ExitCode.BAD_INPUT and "Model card field" in err


def test_changed_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    with open(run / "manifest.csv", "a") as handle:
        handle.write(f"A/extra.png,{'0' * 64},A,test,99\n")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "bundle"))
    assert code == ExitCode.BAD_INPUT and "does not match its model card" in err


def test_missing_or_different_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    out = str(tmp_path / "bundle")
    code, err = _run_main(capsys, "--run", str(run), "--out", out, "--data", str(tmp_path / "no-data"))
    assert (
        code == ExitCode.BAD_INPUT
        and err.strip()
        == f"error: The dataset folder {tmp_path / 'no-data'} does not exist (pass --data DATASET_ROOT)."
    )
    data = tmp_path / "data"
    for row in read_manifest(run / "manifest.csv"):
        (data / row.path).parent.mkdir(parents=True, exist_ok=True)
        (data / row.path).write_bytes(b"different bytes")
    code, err = _run_main(capsys, "--run", str(run), "--out", out, "--data", str(data))
    assert code == ExitCode.BAD_INPUT and "differ from the manifest (sha256)" in err
    assert not (tmp_path / "bundle").exists()


def test_bad_flags_and_foreign_out_folder_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = crafted_run(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["--run", str(run)])  # no --out
    assert exit_info.value.code == ExitCode.BAD_INPUT
    code, err = _run_main(capsys, "--run", str(run), "--out", str(tmp_path / "b"), "--min-agreement", "150")
    assert code == ExitCode.BAD_INPUT and "--min-agreement is a percentage" in err
    foreign = tmp_path / "somebody-elses-folder"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = _run_main(capsys, "--run", str(run), "--out", str(foreign), "--data", str(tmp_path))
    assert code == ExitCode.BAD_INPUT and "not part of a model bundle" in err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_gate_failure_exit_status_and_sentence(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from convert.conversion import Conversion, Outcome

    sentence = evaluate(crafted_drift(agreement=0.95), Thresholds()).sentence

    def fake_run(conversion: Conversion) -> Outcome:
        return Outcome(False, sentence, Path("x.rejected"), Path("x-float32.tflite"), {})

    monkeypatch.setattr(Conversion, "run", fake_run)
    code, err = _run_main(capsys, "--run", "r", "--out", "o")
    assert code == ExitCode.GATE_FAILED and err == sentence + "\n"
