"""``python -m edge_app.screen``, the headless batch command, on a tiny int8 bundle and synthetic smears.

Its rows must be the app's own (``edge_app.records.csv_row`` of the app's ``Screener`` on the same file, after
a ``case`` column) in CSV and JSONL, referred rows included; a bad file is one line on stderr and exit 1, bad
arguments exit 2; ``--shard`` partitions the list exactly; ``--workers 2`` writes the rows of ``--workers 1``;
no Streamlit (nor TensorFlow) is imported. The command runs in the app's environment ($SMEARSCOPE_EDGE_PYTHON,
which ``make test`` sets to .venv-edge's python; this interpreter where it is not set).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from edge_app import screen
from edge_app.records import CSV_FIELDS, csv_row
from edge_app.screening import Screener
from smearscope_core.errors import ExitCode
from smearscope_core.imaging import ImageError
from tests.factories import NEVER_UNSURE, PROJECT_ROOT, smears, write_bundle

EDGE_PYTHON = os.environ.get("SMEARSCOPE_EDGE_PYTHON") or sys.executable
CASE = "CASE-7"
FIELDS = ["case", *CSV_FIELDS]
NOT_LOADED = ("streamlit", "tensorflow", "keras")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, tiny_tflite: bytes) -> Path:
    """The tiny bundle, never unsure: a referral comes from the image checks (a blank field), not from chance."""
    return write_bundle(tmp_path_factory.mktemp("screen") / "models" / "tiny", tiny_tflite,
                        {"calibration": NEVER_UNSURE})  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smears in a folder and a subfolder (PNG, JPEG, TIFF), a blank field (referred), a corrupt JPEG, and what
    a folder walk leaves out: a hidden image, a hidden folder and a text file."""
    root = tmp_path_factory.mktemp("smears") / "case"
    (root / "field-2" / ".thumbs").mkdir(parents=True)
    for i, image in enumerate(smears(900, 10)):
        folder = root if i < 5 else root / "field-2"
        image.save(folder / f"smear-{i:02d}.{('png', 'jpg', 'tif')[i % 3]}")
    Image.new("RGB", (96, 96), (240, 240, 240)).save(root / "blank.png")
    (root / "field-2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    smears(950, 1)[0].save(root / ".hidden.png")
    smears(951, 1)[0].save(root / "field-2" / ".thumbs" / "thumb.png")
    (root / "notes.txt").write_text("not an image")
    return root


def expected_lines(bundle: Path, files: list[Path]) -> tuple[list[dict], list[str]]:
    """What the app's own core says of each file, by the same name: the rows (no time) and the bad-file lines."""
    screener = Screener(bundle, num_threads=1)
    rows, errors = [], []
    for path in files:
        try:
            result = screener.screen_file(path.read_bytes(), str(path)).result
        except ImageError as error:
            errors.append(str(error))
            continue
        rows.append({"case": CASE, **csv_row(result, "")})
    return rows, errors


def listed(images: Path) -> list[Path]:
    """The files the command must screen, in its order: sorted, hidden ones and non-images left out."""
    return sorted(p for p in images.rglob("*") if p.is_file() and p.suffix != ".txt" and ".thumbs" not in p.parts
                  and not p.name.startswith("."))  # fmt: skip


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == FIELDS
        return list(reader)


def without_time(rows: list[dict]) -> list[dict]:
    return [{key: str(value) for key, value in row.items() if key != "time"} for row in rows]


def run_command(*args: str, importtime: bool = True) -> subprocess.CompletedProcess:
    """``python -m edge_app.screen ARGS`` in the app's environment, every import logged (-X importtime) unless
    told otherwise."""
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([EDGE_PYTHON, *flags, "-m", "edge_app.screen", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def messages(stderr: str) -> list[str]:
    """stderr without -X importtime's lines and the runtime's own INFO line."""
    return [line for line in stderr.splitlines() if not line.startswith(("import time:", "INFO:"))]


@pytest.fixture(scope="module")
def first_run(bundle: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run over the folder, plus one of its files named again (screened once), to CSV and JSONL."""
    out = tmp_path_factory.mktemp("out")
    done = run_command(str(images), str(images / "smear-00.png"), "--bundle", str(bundle), "--case", CASE,
                       "--csv", str(out / "rows.csv"), "--jsonl", str(out / "rows.jsonl"))  # fmt: skip
    return {"done": done, "csv": out / "rows.csv", "jsonl": out / "rows.jsonl", "out": out}


def test_rows_are_the_apps_own(first_run: dict, bundle: Path, images: Path) -> None:
    done = first_run["done"]
    assert done.returncode == ExitCode.GATE_FAILED, done.stderr[-3000:]  # one file could not be read
    files = listed(images)
    rows, errors = expected_lines(bundle, files)
    assert len(files) == 12 and len(rows) == 11 and len(errors) == 1
    written = read_csv(first_run["csv"])
    assert without_time(written) == without_time(rows)
    for row in written:
        datetime.fromisoformat(row["time"])
    referred = [row for row in written if row["inconclusive"] == "True"]
    assert [row["source"] for row in referred] == [str(images / "blank.png")]
    assert referred[0]["verdict"].startswith("Inconclusive") and referred[0]["reasons"]
    assert any(row["inconclusive"] == "False" for row in written)
    # the bad file: its one sentence on stderr, the same as the page's, then the summary line
    assert messages(done.stderr) == [*errors, "screened 11 of 12 files (1 referred); 1 could not be read"]


def test_jsonl_has_the_csv_rows_keys_and_values(first_run: dict) -> None:
    lines = first_run["jsonl"].read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert all(list(o) == FIELDS for o in objects)
    assert without_time(objects) == without_time(read_csv(first_run["csv"]))
    assert [o["time"] for o in objects] == [r["time"] for r in read_csv(first_run["csv"])]


def test_no_streamlit_or_tensorflow_in_the_import_chain(first_run: dict) -> None:
    imported = [line.split("|")[-1].strip() for line in first_run["done"].stderr.splitlines()
                if line.startswith("import time:")]  # fmt: skip
    assert "edge_app.screen" in imported or "edge_app.screening" in imported
    assert not [name for name in imported if name.split(".")[0] in NOT_LOADED]


def test_two_workers_write_the_rows_of_one(first_run: dict, bundle: Path, images: Path) -> None:
    out = first_run["out"] / "two.csv"
    # no -X importtime: the workers pass it on, and two processes' import lines on one stderr can interleave
    done = run_command(str(images), "--bundle", str(bundle), "--case", CASE, "--workers", "2", "--csv", str(out),
                       importtime=False)  # fmt: skip
    assert done.returncode == ExitCode.GATE_FAILED, done.stderr[-3000:]
    assert without_time(read_csv(out)) == without_time(read_csv(first_run["csv"]))
    lines = done.stderr.splitlines()  # the workers' runtime prints its INFO line at any moment: look for ours
    assert all(line in lines for line in messages(first_run["done"].stderr))


def test_shards_partition_the_list_exactly(bundle: Path, images: Path, tmp_path: Path, capsys) -> None:
    full = tmp_path / "all.csv"
    assert screen.main([str(images), "--bundle", str(bundle), "--csv", str(full)]) == ExitCode.GATE_FAILED
    every = without_time(read_csv(full))
    capsys.readouterr()
    shards = []
    for index in range(3):
        out = tmp_path / f"shard-{index}.csv"
        code = screen.main([str(images), "--bundle", str(bundle), "--shard", f"{index}/3", "--csv", str(out)])
        shards.append(without_time(read_csv(out)))
        assert code == (ExitCode.GATE_FAILED if "broken.jpg" in capsys.readouterr().err else ExitCode.OK)
    files = [str(p) for p in listed(images)]
    for index, rows in enumerate(shards):  # every third file of the sorted list, bad ones left out
        assert [row["source"] for row in rows] == [f for f in files[index::3] if not f.endswith("broken.jpg")]
    assert sorted(row["source"] for rows in shards for row in rows) == sorted(row["source"] for row in every)
    assert sum(len(rows) for rows in shards) == len(every)


def test_a_shard_with_no_files_is_a_header(bundle: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.jsonl"
    files = str(images / "smear-00.png")
    assert screen.main([files, "--bundle", str(bundle), "--shard", "1/2", "--jsonl", str(out)]) == ExitCode.OK
    assert out.read_text() == ""


@pytest.mark.parametrize(
    "args",
    [
        ["{images}/no-such-folder"],
        ["{images}", "--shard", "3/3"],
        ["{images}", "--shard", "1"],
        ["{images}", "--shard", "-1/2"],
        ["{images}", "--workers", "0"],
        ["{images}", "--workers", "two"],
        ["{images}", "--csv", "-", "--jsonl", "-"],
        ["{images}", "--bundle", "{images}", "--models", "{images}"],
        ["{images}", "--no-such-option"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], images: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        screen.main([a.format(images=images) for a in args])
    assert stop.value.code == ExitCode.BAD_INPUT
    assert "error:" in capsys.readouterr().err


def test_bad_input_exits_2(bundle: Path, images: Path, tmp_path: Path, capsys) -> None:
    """Arguments that parse but cannot be used: one sentence each, exit 2, nothing screened."""
    empty = tmp_path / "no-images"
    empty.mkdir()
    shutil.copy(images / "notes.txt", empty / "notes.txt")
    cases = {
        "There are no images": [str(empty), "--bundle", str(bundle)],
        "has no model.tflite": [str(images), "--bundle", str(images)],
        "cannot be written": [str(images), "--bundle", str(bundle), "--csv", str(tmp_path / "missing" / "x.csv")],
    }
    for sentence, args in cases.items():
        assert screen.main(args) == ExitCode.BAD_INPUT
        assert sentence in capsys.readouterr().err
