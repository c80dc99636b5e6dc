"""build/pi_check.py's comparison, and (where `make pi-check` has made its sysroot) a short run under qemu.

The emulated run needs the cached aarch64 sysroot (.pi-sysroot/, made by `make pi-check`; minutes to make,
so the suite never makes it), qemu-aarch64-static, the x86 edge environment and the real images: it skips
with its reason without them (CI starts from a fresh clone, so there it skips).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from smearscope_core.paths import DEFAULT_DATASET
from tests.factories import PROJECT_ROOT

SYSROOT = PROJECT_ROOT / ".pi-sysroot" / "root"
spec = importlib.util.spec_from_file_location("pi_check", PROJECT_ROOT / "build" / "pi_check.py")
pi_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pi_check)


def results(machine: str, images: list[dict]) -> dict:
    return {"machine": machine, "python": "3.11", "libc": "glibc 2.36", "packages": {}, "images": images,
            "screen_seconds": 1.0}  # fmt: skip


def image(path: str, label: str = "Benign", outcome: str = "benign", p: float = 0.9, reasons=(), ood=1.0) -> dict:
    other = round(1 - p, 6)
    return {"path": path, "truth": "Benign", "outcome": outcome, "label": label, "inconclusive": outcome == "refer",
            "reasons": list(reasons), "confidence": p, "p_malignant": other,
            "probabilities": {"Benign": p, "Pre": other}, "logits": [1.0, 0.0], "ood_distance": ood,
            "feature_distance": None, "scale_ratio": None}  # fmt: skip


def test_identical_results_compare_equal(tmp_path: Path) -> None:
    same = results("x86_64", [image("a.jpg"), image("b.jpg", p=0.8)])
    found = pi_check.compare(same, results("aarch64", [image("a.jpg"), image("b.jpg", p=0.8)]))
    assert found["identical_predictions"]
    assert found["images"] == 2
    assert found["max_probability_difference"] == 0.0
    assert not found["prediction_differences"] and not found["reason_differences"]


def test_each_difference_is_named(tmp_path: Path) -> None:
    reference = results("x86_64", [image("a.jpg"), image("b.jpg"), image("c.jpg", ood=2.0), image("d.jpg")])
    other = results("aarch64", [
        image("a.jpg", p=0.9001),  # a small probability difference only
        image("b.jpg", label="Pre", outcome="malignant", p=0.4),  # another class: a prediction difference
        image("c.jpg", outcome="refer", reasons=["unfamiliar"], ood=2.5),  # refer: a prediction difference
        image("e.jpg"),  # d.jpg missing, e.jpg extra
    ])  # fmt: skip
    found = pi_check.compare(reference, other)
    assert not found["identical_predictions"]
    named = {item["path"] for item in found["prediction_differences"]}
    assert named == {"b.jpg", "c.jpg", "d.jpg", "e.jpg"}
    assert found["max_probability_difference"] == pytest.approx(0.5)
    assert found["max_ood_distance_difference"] == pytest.approx(0.5)

    first, second = tmp_path / "x86_64.json", tmp_path / "aarch64.json"
    first.write_text(json.dumps(reference))
    second.write_text(json.dumps(other))
    assert pi_check.main(["compare", str(first), str(second), "--out", str(tmp_path / "summary.json")]) == 1
    assert pi_check.main(["compare", str(first), str(first)]) == 0
    assert not json.loads((tmp_path / "summary.json").read_text())["comparisons"]["aarch64"]["identical_predictions"]


def test_reason_differences_are_reported_apart() -> None:
    found = pi_check.compare(
        results("x86_64", [image("a.jpg", reasons=["too dark"])]), results("aarch64", [image("a.jpg")])
    )
    assert found["identical_predictions"]
    assert found["reason_differences"] == [{"path": "a.jpg", "reference": ["too dark"], "other": []}]


EDGE_PYTHON = Path(os.environ.get("SMEARSCOPE_EDGE_PYTHON", PROJECT_ROOT / ".venv-edge" / "bin" / "python"))


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(
    not any(SYSROOT.glob(".complete-*")), reason="no aarch64 sysroot: run `make pi-check` once (.pi-sysroot/)"
)
@pytest.mark.skipif(shutil.which("qemu-aarch64-static") is None, reason="no qemu-aarch64-static (qemu-user-static)")
@pytest.mark.skipif(not EDGE_PYTHON.is_file(), reason=f"no x86 edge environment ({EDGE_PYTHON})")
@pytest.mark.skipif(not DEFAULT_DATASET.is_dir(), reason=f"no dataset at {DEFAULT_DATASET}")
def test_a_few_test_images_screen_the_same_on_aarch64(tmp_path: Path) -> None:
    env = {**os.environ, "PI_LIMIT": "3", "PI_CPUS": "cortex-a76", "PI_RESULTS": str(tmp_path),
           "EDGE_PYTHON": str(EDGE_PYTHON)}  # fmt: skip
    done = subprocess.run(["bash", "build/pi_check.sh"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    selftest = json.loads((tmp_path / "selftest-aarch64-cortex-a76.json").read_text())
    assert selftest["selftest"] == "ok" and selftest["tensorflow_loaded"] is False
    summary = json.loads((tmp_path / "summary.json").read_text())["comparisons"]["aarch64-cortex-a76"]
    assert summary["images"] == 3 and summary["identical_predictions"]
    aarch64 = json.loads((tmp_path / "aarch64-cortex-a76.json").read_text())
    assert aarch64["machine"] == "aarch64" and aarch64["runtime"] == "ai-edge-litert"
