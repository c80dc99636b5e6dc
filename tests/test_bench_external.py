"""``python -m bench.external``: counts that add up on a tiny synthetic tree, the real external-dev images on the
shipped model (no silent malignant answer), and the command in the app's own environment (no TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.external import OVERALL, main, markdown_table
from edge_app.screening import Screener
from smearscope_core.errors import ExitCode
from smearscope_core.paths import EXTERNAL_DEV_DATASET
from tests.factories import NEVER_UNSURE, PROJECT_ROOT, io_png, smears, write_bundle

SHIPPED = PROJECT_ROOT / "edge_app" / "models" / "default"
COUNTS = ("referred", "confident_benign", "confident_malignant")


def external_like(root: Path) -> Path:
    """Two labs' folders as in external-dev: cells/a (3), cells/b (2 and a broken file), fields (3), a note."""
    layout = {"cells/a": smears(0, 3), "cells/b": smears(10, 2), "fields": smears(20, 3)}
    for folder, images in layout.items():
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            (root / folder / f"{i}.png").write_bytes(io_png(image))
    (root / "cells" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "DATASET.md").write_text("not an image")
    return root


def assert_counts_add_up(results: dict) -> None:
    for name, row in results["folders"].items():
        for key, figures in row.items():
            assert sum(figures[c] for c in COUNTS) == figures["n"], (name, key, figures)
            assert figures["confident_malignant"] <= figures["raw_malignant"] <= figures["n"], (name, key)
            assert len(figures["silent_wrong"]) == figures["confident_malignant"]
    for key in results["bundles"]:
        overall = results["folders"][OVERALL][key]
        for count in ("n", *COUNTS, "raw_malignant"):
            assert overall[count] == sum(row[key][count] for n, row in results["folders"].items() if n != OVERALL)


@pytest.fixture(scope="module")
def bundles(tiny_tflite: bytes, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny model twice: as it is, and with a calibration that is never unsure (other refer decisions)."""
    models = tmp_path_factory.mktemp("external") / "models"
    return [write_bundle(models / "tiny", tiny_tflite),
            write_bundle(models / "sure", tiny_tflite, {"calibration": NEVER_UNSURE})]  # fmt: skip


def test_counts_add_up_and_results_are_written(
    bundles: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = external_like(tmp_path / "external")
    args = ["--data", str(data), "--out", str(tmp_path / "out")]
    assert main([*args, "--bundle", str(bundles[0]), "--bundle", str(bundles[1])]) == ExitCode.OK
    [json_file] = (tmp_path / "out").glob("*-external.json")
    results = json.loads(json_file.read_text())
    table = json_file.with_suffix(".md").read_text()
    assert table == markdown_table(results) and table in capsys.readouterr().out
    assert list(results["folders"]) == ["cells/a", "cells/b", "fields", OVERALL]
    sha = Screener(bundles[0]).bundle.sha256[:12]
    assert list(results["bundles"]) == [f"tiny@{sha}", f"sure@{sha}"]  # one column set per bundle
    assert [results["folders"][f][f"tiny@{sha}"]["n"] for f in ("cells/a", "cells/b", "fields", OVERALL)] == [
        3,
        2,
        3,
        8,
    ]
    assert [u.split(":")[0] for u in results["unreadable"]] == ["cells/b/broken.jpg"]
    assert_counts_add_up(results)
    # the app's own answers, image by image
    screener = Screener(bundles[0])
    answers = [screener.screen_bytes(p.read_bytes()) for p in sorted(data.rglob("*.png"))]
    overall = results["folders"][OVERALL][f"tiny@{sha}"]
    assert overall["referred"] == sum(r.inconclusive for r in answers)
    assert overall["raw_malignant"] == sum(r.malignant for r in answers)
    assert f"| **{OVERALL}** | 8 |" in table and "cells/b/broken.jpg" in table


def test_missing_data_or_bundle_is_bad_input(bundles: list[Path], tmp_path: Path, capsys) -> None:
    data = external_like(tmp_path / "external")
    assert main(["--data", str(tmp_path / "absent"), "--bundle", str(bundles[0])]) == ExitCode.BAD_INPUT
    assert main(["--data", str(data), "--bundle", str(tmp_path / "no-model")]) == ExitCode.BAD_INPUT
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "absent does not exist" in errors[0] and "no-model does not exist" in errors[1]


@pytest.mark.skipif(
    not EXTERNAL_DEV_DATASET.is_dir(),
    reason=f"external-dev images not found at {EXTERNAL_DEV_DATASET} (normal cells from other labs; see DATASET.md)",
)
def test_shipped_model_never_silently_malignant_on_external_images(tmp_path: Path) -> None:
    assert main(["--limit", "20", "--out", str(tmp_path)]) == ExitCode.OK
    [json_file] = tmp_path.glob("*-external-limit20.json")
    results = json.loads(json_file.read_text())
    [key] = results["bundles"]
    assert results["bundles"][key]["path"] == str(SHIPPED) and not results["unreadable"]
    folders = {name: row[key] for name, row in results["folders"].items()}
    assert len(folders) == 6 and all(f["n"] == 20 for name, f in folders.items() if name != OVERALL)
    assert_counts_add_up(results)
    assert folders[OVERALL]["confident_malignant"] == 0, (
        f"the shipped model shows a malignant class without referring on normal out-of-lab images: "
        f"{folders[OVERALL]['silent_wrong']}"
    )


def test_runs_in_the_app_environment_without_tensorflow(bundles: list[Path], tmp_path: Path) -> None:
    python = os.environ.get("SMEARSCOPE_EDGE_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("set SMEARSCOPE_EDGE_PYTHON to the edge venv's python (make test does; .venv-edge) to run this")
    done = subprocess.run([python, "-m", "bench.external", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "--bundle" in done.stdout, done.stderr[-2000:]
    data = external_like(tmp_path / "external")
    done = subprocess.run([python, "-m", "bench.external", "--bundle", str(bundles[0]), "--data", str(data),
                           "--out", str(tmp_path / "out")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| **overall** | 8 |" in done.stdout
