"""SmearScope Streamlit page: ``streamlit run edge_app/app.py [-- --models DIR]``.

A thin layer: every decision is made by the inference core (edge_app.screening); this page only
gathers images, shows results and offers exports. It runs offline on the TFLite runtime alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from edge_app import components as ui
from edge_app.bundle import DEFAULT_MODELS_DIR, BundleError, list_bundles
from edge_app.imaging import ImageError, open_image
from edge_app.records import History, csv_row, now, results_csv
from edge_app.runtime import RuntimeMissingError
from edge_app.screening import Screener

UPLOAD_TYPES = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"]
MAX_UPLOAD_MB = 50


def extra_model_folders() -> list[Path]:
    """Folders of a site's own bundles: ``--models DIR`` (repeatable) after ``--``, or $SMEARSCOPE_MODELS."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--models", type=Path, action="append", default=[])
    folders = parser.parse_known_args(sys.argv[1:])[0].models
    folders += [Path(p) for p in os.environ.get("SMEARSCOPE_MODELS", "").split(os.pathsep) if p]
    return folders


@st.cache_resource(show_spinner="Loading the model...")
def load_screener(folder: str) -> Screener:
    return Screener(folder)


@st.cache_resource
def load_history() -> History:
    return History()


def choose_model(folders: list[Path]) -> Screener | None:
    """Model selector; a bundle that fails its checks is reported and the default is used instead."""
    labels = {f"{p.name} ({p.parent})": p for p in folders}
    choice = st.sidebar.selectbox("Model", list(labels), index=0) if len(labels) > 1 else next(iter(labels), None)
    if choice is None:
        st.error(f"No model bundle was found in {DEFAULT_MODELS_DIR}. Reinstall the app or add one with --models.")
        return None
    for folder in [labels[choice], *[p for p in folders if p != labels[choice]]]:
        try:
            screener = load_screener(str(folder))
        except (BundleError, ValueError) as error:
            st.sidebar.error(f"{folder.name}: {error}")
            continue
        if folder != labels[choice]:
            st.sidebar.warning(f"Using {folder.name} instead.")
        return screener
    return None


def screen_uploads(screener: Screener, history: History) -> None:
    files = st.file_uploader(
        "Smear images (JPEG, PNG, TIFF, BMP); one or many",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
    )
    if not files:
        st.info("Add one or more smear photographs to screen them.")
        return
    done: dict = st.session_state.setdefault("done", {})
    progress = st.progress(0.0, text="Screening...") if len(files) > 1 else None
    rows, cards = [], []
    for index, upload in enumerate(files):
        key = f"{upload.file_id}"
        if key not in done:
            try:
                image = open_image(upload.getvalue(), upload.name)
                result = screener.screen_image(image, upload.name)
                when = now()
                history.add(result, when)
                done[key] = (result, image, when, None)
            except ImageError as error:
                done[key] = (None, None, now(), str(error))
        if progress:
            progress.progress((index + 1) / len(files), text=f"Screened {index + 1} of {len(files)}")
        result, image, when, error = done[key]
        if error:
            st.error(error)
            continue
        rows.append(csv_row(result, when))
        cards.append((result, image, when, key))
    if history.warning:
        st.warning(history.warning)
    if len(rows) > 1:
        referred = sum(r["inconclusive"] for r in rows)
        st.subheader(f"{len(rows)} images screened · {referred} to refer")
        ui.results_table(rows)
    if rows:
        st.download_button("Download results (CSV)", results_csv(rows), "smearscope-results.csv", "text/csv")
    for result, image, when, key in cards:
        ui.result_card(screener, result, image, when, key)


def show_history(history: History) -> None:
    if history.warning:
        st.warning(history.warning)
    rows = history.recent()
    if not rows:
        st.info("No results saved yet.")
        return
    ui.results_table(rows)
    st.download_button("Download history (CSV)", results_csv(rows), "smearscope-history.csv", "text/csv")


def main() -> None:
    st.set_page_config(page_title="SmearScope", page_icon="🔬", layout="wide")
    st.title("SmearScope: ALL screening of blood smear images")
    ui.disclaimer()
    try:
        screener = choose_model(list_bundles(DEFAULT_MODELS_DIR, *extra_model_folders()))
    except RuntimeMissingError as error:
        st.error(str(error))
        return
    if screener is None:
        return
    history = load_history()
    screen_tab, history_tab, model_tab = st.tabs(["Screen", "History", "Model"])
    with screen_tab:
        screen_uploads(screener, history)
    with history_tab:
        show_history(history)
    with model_tab:
        ui.model_summary(screener)


main()
