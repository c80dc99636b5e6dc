"""Site calibration on real images (skipped without ../shared): a simulated other-lab camera made from the real
val and test split (bench.site_sim), calibrated on the committed default bundle as a clinic would, and its held-out
side screened through the app's core. The full measurement is ``python -m bench.site_calibration``
(docs/site-calibration.md); this keeps its main claim under test: calibrating turns referrals into answers there,
without ALL smears answered benign, in the edge environment's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.site_sim import build, plan
from edge_app.bundle import load_bundle
from edge_app.screening import Screener
from edge_app.site_fit import SiteCalibration
from smearscope_core.imaging import open_image
from smearscope_core.manifest import read_manifest
from tests.factories import PROJECT_ROOT
from train.dataset import load_class_metadata

REAL_DATA = PROJECT_ROOT.parent / "shared" / "datasets" / "all-4class"
DEFAULT_BUNDLE = PROJECT_ROOT / "edge_app" / "models" / "default"
CALIBRATION_PER_CLASS, HELDOUT_PER_CLASS = 24, 10

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real dataset not found at {REAL_DATA} (it is never committed)"),
]


def test_calibrating_a_simulated_other_lab_turns_referrals_into_answers(tmp_path: Path) -> None:
    manifest = PROJECT_ROOT / "runs" / "default" / "manifest.csv"
    rows = read_manifest(manifest)
    classes = load_class_metadata(REAL_DATA, sorted({r.class_name for r in rows}))[0]
    wanted = {"calibration": CALIBRATION_PER_CLASS, "heldout": HELDOUT_PER_CLASS}
    chosen, taken = set(), {}
    for placement in plan(rows, classes, "source", 0.5, seed=0):
        key = (placement.class_name, placement.side)
        if taken.get(key, 0) < wanted[placement.side]:
            taken[key] = taken.get(key, 0) + 1
            chosen.add(placement.row.path)
    site = tmp_path / "site"
    build(site, REAL_DATA, manifest, "other-lab-camera", only=chosen)

    base = load_bundle(DEFAULT_BUNDLE)
    calibration = SiteCalibration(site / "calibration", base, num_threads=1)
    fit = calibration.fit()
    figures = fit.metrics["cross_validated"]
    assert fit.gate_passed, fit.gate_reasons
    assert figures["sensitivity"] >= 0.95 and figures["macro_f1"] >= 0.90
    bundle = calibration.write(tmp_path / "site-bundle")

    heldout = sorted(p for p in (site / "heldout").rglob("*.jpg"))
    assert len(heldout) == 4 * HELDOUT_PER_CLASS
    before, after = Screener(base, num_threads=1), Screener(bundle, num_threads=1)
    referred = {"before": 0, "after": 0}
    all_answered_benign = 0
    for path in heldout:
        image = open_image(path.read_bytes(), path.name)
        referred["before"] += before.screen_image(image, path.name).inconclusive
        result = after.screen_image(image, path.name)
        referred["after"] += result.inconclusive
        all_answered_benign += path.parent.name != "Benign" and not result.inconclusive and not result.malignant
    assert referred["after"] < referred["before"], referred
    assert all_answered_benign <= 1
