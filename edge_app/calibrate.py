"""``python -m edge_app.calibrate SITE_DATA --out BUNDLE_DIR [--base BUNDLE] [--name NAME] [--force]
[--features auto|features|embedding] [--mapping reinhard-lab|macenko|none] [--head logistic|lda]``: calibrate the model
for one clinic's microscope on its own labelled images, in the app's environment (no TensorFlow).

SITE_DATA is a folder per class (and an optional classes.json), as for training. The command fits a colour
mapping, a classification head on the bundle's feature extractor, its calibration and unfamiliarity checks
(edge_app/site_fit.py), cross-validates them on the site's images, and writes a site bundle with its one-page
report (calibration_report.html) when the local validation gate passes. Exit status: 0 written, 1 the gate
refused (one sentence per reason; the report is written beside BUNDLE_DIR), 2 bad input (one sentence per
problem), 3 the runtime failed. See docs/site-calibration.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# One BLAS thread, set before numpy loads: the calibration's matrices are small (hundreds of images), and on two
# cores numpy's threads only fight the runtime's and any other job's (measured for 200 images while a training
# job ran: 21 s with numpy's default threads, 13 s with one). edge_app.screen sets the same for its workers.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from edge_app.bundle import BundleError, load_bundle  # noqa: E402
from edge_app.runtime import RuntimeMissingError  # noqa: E402
from edge_app.settings import DEFAULT_MODELS_DIR  # noqa: E402
from edge_app.site_fit import (  # noqa: E402
    DEFAULT_FEATURES,
    DEFAULT_MAPPING,
    FEATURE_SOURCES,
    HEADS,
    MAPPINGS,
    REPORT_FILE,
    GateRefused,
    SiteCalibration,
    SiteDataError,
    SiteFit,
    check_out,
)
from smearscope_core.errors import ExitCode, SmearScopeError, report  # noqa: E402

DEFAULT_BASE = DEFAULT_MODELS_DIR / "default"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edge_app.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "site_data", type=Path, metavar="SITE_DATA", help="a folder of class folders of the site's images"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="BUNDLE_DIR", help="the site bundle's new folder")
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, metavar="BUNDLE",
                        help="the bundle to calibrate (default: the shipped one)")  # fmt: skip
    parser.add_argument("--name", help="the site bundle's name (default: BASE-site-SITE_DATA)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write the bundle even when the gate refuses it (every result then carries a warning)",
    )
    parser.add_argument("--features", choices=FEATURE_SOURCES, default=DEFAULT_FEATURES,
                        help="the head reads the feature extractor's features, the model's embedding, or (auto) "
                             "whichever of the two does better on the site's own images "
                             "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--mapping", choices=MAPPINGS, default=DEFAULT_MAPPING,
                        help="the site colour mapping (default: %(default)s)")  # fmt: skip
    parser.add_argument("--head", choices=HEADS, default="logistic", help="the head (default: %(default)s)")
    return parser.parse_args(argv)


class TerminalProgress:
    """A progress bar per stage on a terminal (tqdm); one line per stage otherwise (logs, pipes)."""

    def __init__(self) -> None:
        self.stage = ""
        self.bar = None

    def __call__(self, done: int, total: int, stage: str) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=stage, unit="image" if total > 10 else "step", leave=False,
                                file=sys.stderr, mininterval=0.3)  # fmt: skip
            else:
                print(f"{stage}...", flush=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary(fit: SiteFit) -> list[str]:
    """The figures a person reads first, one line each."""
    cv, before = fit.metrics["cross_validated"], fit.metrics["before"]

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return [
        f"cross-validated ({fit.metrics['folds']} folds, {fit.metrics['images']} images): malignant sensitivity "
        f"{figure(cv['sensitivity'])}, specificity {figure(cv['specificity'])}, macro-F1 {figure(cv['macro_f1'])}, "
        f"accuracy of answered images {figure(cv['accuracy_answered'])}",
        f"referred: {before['referral_rate']:.1%} by the base bundle as it is, {cv['referral_rate']:.1%} by the site "
        f"bundle; malignant images answered benign: {before['malignant_answered_benign']} before, "
        f"{cv['malignant_answered_benign']} after",
        f"fitted in {fit.seconds:.1f} s",
    ]


def run(args: argparse.Namespace) -> int:
    try:
        base = load_bundle(args.base)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    check_out(args.out)  # before the work, not after it
    progress = TerminalProgress()
    calibration = SiteCalibration(args.site_data, base, name=args.name, features=args.features,
                                  mapping=args.mapping, head=args.head, progress=progress)  # fmt: skip
    scan = calibration.scan()
    progress.close()
    for skipped in scan.skipped:
        print(f"skipped: {skipped['reason']}", file=sys.stderr)
    if scan.problems:
        for problem in scan.problems:
            print(f"error: {problem}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    counts = ", ".join(f"{c['name']} {scan.counts()[c['name']]}{' (malignant)' if c['malignant'] else ''}"
                       for c in scan.classes)  # fmt: skip
    print(f"{len(scan.images)} images in {len(scan.classes)} classes ({counts}); {scan.group_count} after grouping "
          f"near-duplicates")  # fmt: skip
    for note in scan.notes:
        print(f"note: {note}")
    try:
        fit = calibration.fit()
    finally:
        progress.close()
    for line in summary(fit):
        print(line)
    try:
        out = calibration.write(args.out, force=args.force)
    except GateRefused as refused:
        beside = args.out.parent / f"{args.out.name}-{REPORT_FILE}"
        beside.parent.mkdir(parents=True, exist_ok=True)
        beside.write_text(fit.report_html, encoding="utf-8")
        for reason in refused.reasons:
            print(f"refused: {reason}", file=sys.stderr)
        print(f"No bundle was written (--force writes it anyway, with a warning on every result). Report: {beside}",
              file=sys.stderr)  # fmt: skip
        return ExitCode.GATE_FAILED
    if not fit.gate_passed:
        for reason in fit.gate_reasons:
            print(f"gate failed (written anyway with --force): {reason}", file=sys.stderr)
    print(f"Wrote the site bundle {calibration.name} to {out} (report: {out / REPORT_FILE}). Put the folder in a "
          "models folder of the app (--models or SMEARSCOPE_MODELS) to use it.")  # fmt: skip
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except SiteDataError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except RuntimeMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.FAILED
    except BundleError as error:  # the base bundle loads but its checks cannot be set up
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except SmearScopeError as error:
        return report(error)


if __name__ == "__main__":
    sys.exit(main())
