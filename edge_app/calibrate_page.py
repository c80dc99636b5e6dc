"""The "Calibrate" tab: a clinic's own labelled images in, a site bundle for this microscope out (issue 12).

A thin layer over ``edge_app.site_fit.SiteCalibration`` (no fitting here): a folder path on this computer, a preview
of the classes and counts it holds (``scan``), a progress bar while it fits, the gate's verdict with the one-page
report, and "use this bundle", which writes it into the site models folder (``settings.site_models_dir``) that the
model selector lists. The Model tab shows the active bundle's site calibration through ``site_summary``.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from edge_app.bundle import BundleError
from edge_app.components import folder_path, table_cell
from edge_app.records import data_dir
from edge_app.screening import Screener
from edge_app.site_fit import GateRefused, SiteCalibration, SiteDataError
from smearscope_core.errors import InputError

SITE_MODELS = "site-models"  # under the app's data folder (beside the history): the site bundles made here
SESSION_KEY = "site_calibration"  # the SiteCalibration of the folder last scanned, kept between reruns
CHOSEN_KEY = "chosen_model_folder"  # a bundle the page asks the selector to open on the next run


def site_models_dir() -> Path:
    """Where "use this bundle" writes site bundles; the model selector lists this folder too."""
    return data_dir() / SITE_MODELS


def bundle_name(text: str) -> str:
    """A folder-safe bundle name from what the user typed (letters, digits, '-', '_', '.'); '' when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-.")[:64]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def calibrate_tab(screener: Screener) -> None:
    """The whole tab; the base bundle is the one in use, unless it is itself a site bundle."""
    st.markdown(
        "Calibrate the model for **this microscope** with your own labelled images: one folder per class (for "
        "example `blast/` and `normal/`, or the model's own classes), at least 20 images in each, optionally a "
        "`classes.json` that says which classes are malignant. Nothing leaves this computer."
    )
    base = screener.bundle
    if base.site is not None:
        st.info(f"The model in use ({base.name}) is already a site calibration; choose the base model to calibrate.")
        return
    folder_text = st.text_input("Folder of labelled images on this computer", key="calibrate_folder")
    if not folder_text or (folder := folder_path(folder_text)) is None:
        return
    calibration = _calibration(folder, base)
    try:
        scan = calibration.scan()
    except InputError as error:
        st.error(str(error))
        return
    counts = scan.counts()
    st.markdown(  # a Markdown table: the page uses no dataframe elements (the desktop build leaves pyarrow out)
        "| class | malignant | images |\n|---|---|---|\n"
        + "".join(
            f"| {table_cell(c['display_name'])} | {'yes' if c['malignant'] else 'no'} | {counts[c['name']]} |\n"
            for c in scan.classes
        )
    )
    for problem in scan.problems:
        st.error(problem)
    for note in scan.notes:
        st.caption(note)
    if scan.skipped:
        with st.expander(f"{len(scan.skipped)} files left out"):
            for skipped in scan.skipped:
                st.text(f"{skipped['path']}: {skipped['reason']}")
    if scan.problems:
        return
    name = bundle_name(st.text_input("Name of the site bundle", value=calibration.name, key="calibrate_name"))
    if st.button("Calibrate", type="primary", key="calibrate_run"):
        bar = st.progress(0.0, text="calibrating")
        calibration.progress = lambda done, total, stage: bar.progress(min(done / max(total, 1), 1.0), text=stage)
        try:
            calibration.fit()
        except (SiteDataError, InputError, BundleError) as error:
            st.error(str(error))
            return
        finally:
            bar.empty()
    fit = calibration.fitted
    if fit is None:
        return
    _verdict(fit.metrics, fit.gate_passed, fit.gate_reasons)
    st.download_button(
        "Download the calibration report (HTML)",
        fit.report_html,
        file_name=f"{name}-report.html",
        mime="text/html",
        key="calibrate_report",
    )
    force = False
    if not fit.gate_passed:
        force = st.checkbox(
            "Write it anyway (every result from this bundle will carry a warning that it failed local validation)",
            key="calibrate_force",
        )
    if st.button("Use this bundle", disabled=not (fit.gate_passed or force) or not name, key="calibrate_use"):
        out = site_models_dir() / name
        try:
            calibration.name = name
            calibration.write(out, force=force)
        except (GateRefused, InputError, BundleError, OSError) as error:
            st.error(str(getattr(error, "strerror", None) or error))
            return
        st.session_state[CHOSEN_KEY] = str(out)
        st.success(f"Saved {name} in {out.parent}; it is now the model in use.")
        st.rerun()


def _calibration(folder: Path, base) -> SiteCalibration:
    """The SiteCalibration of this folder and base, kept in the session so a rerun does not scan again."""
    kept = st.session_state.get(SESSION_KEY)
    if kept is None or kept.site_data != folder or kept.base.sha256 != base.sha256:
        kept = SiteCalibration(folder, base, num_threads=1)
        st.session_state[SESSION_KEY] = kept
    return kept


def _verdict(metrics: dict, passed: bool, reasons: list[str]) -> None:
    figures = metrics["cross_validated"]
    before = metrics.get("before") or {}
    if passed:
        st.success("Local validation passed.")
    else:
        st.error("Local validation failed: " + " ".join(reasons))
    columns = st.columns(5)
    columns[0].metric("Malignant sensitivity", _percent(figures.get("sensitivity")))
    columns[1].metric("Specificity", _percent(figures.get("specificity")))
    columns[2].metric("Macro-F1", _percent(figures.get("macro_f1")))
    columns[3].metric("Accuracy of answered", _percent(figures.get("accuracy_answered")))
    columns[4].metric(
        "Referred",
        _percent(figures.get("referral_rate")),
        delta=f"before: {_percent(before.get('referral_rate'))}",
        delta_color="off",
    )
    st.caption(
        f"Cross-validated on your {metrics['images']} images ({metrics['folds']} folds; near-duplicates kept in one "
        "fold): each figure comes from a head that did not see the image."
    )


def site_summary(screener: Screener) -> None:
    """For the Model tab: the active site calibration and its local validation figures, or nothing."""
    site = screener.bundle.site
    if site is None:
        return
    st.subheader("Site calibration")
    validation = site["validation"]
    figures = validation["cross_validated"]
    st.markdown(
        f"**{site['name']}**, calibrated {site['created'][:10]} on {validation['images']} of this site's images "
        f"({', '.join(f'{k} {v}' for k, v in site['data']['images_per_class'].items())}), on the base model "
        f"{site['base']['name']} (`{site['base']['model_sha256'][:12]}`); colour mapping "
        f"{site['colour_mapping']['method']}, a {site['head']['method']} head on the {site['features']['source']}."
    )
    if site["gate"]["forced"]:
        st.warning(
            "This calibration failed local validation and was written anyway: " + " ".join(site["gate"]["reasons"])
        )
    names = {"sensitivity": "malignant sensitivity", "specificity": "specificity", "macro_f1": "macro-F1",
             "accuracy_answered": "accuracy of answered images", "referral_rate": "referred"}  # fmt: skip
    st.markdown(
        "| local validation (cross-validated) | value |\n|---|---|\n"
        + "".join(f"| {label} | {_percent(figures.get(key))} |\n" for key, label in names.items())
    )
