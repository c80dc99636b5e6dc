"""SmearScope Streamlit page, started by ``python -m edge_app.launcher [--models DIR]`` (``make app``).

The launcher runs this script with the production settings (127.0.0.1, XSRF on, no usage
statistics, the upload limit). A plain ``streamlit run edge_app/app.py``, from any folder, reads the
same settings from ``edge_app/.streamlit/config.toml`` beside this page (generated from the launcher's
table); started any other way that listens beyond this computer or sends usage statistics, the page
refuses to serve.

A thin layer: every decision is made by the inference core (edge_app.screening); this page only
gathers images, shows results and offers exports. It runs offline on the TFLite runtime alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st
from streamlit import config as st_config

from edge_app import components as ui
from edge_app import settings
from edge_app.bundle import BundleError, list_bundles
from edge_app.components import Case
from edge_app.records import History, csv_row, now, results_csv
from edge_app.runtime import RuntimeMissingError
from edge_app.screening import Screener, check_size
from edge_app.settings import IMAGE_SUFFIXES, MAX_UPLOAD_MB
from smearscope_core.imaging import ImageError

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]  # Streamlit's type: no dot


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
        st.error(
            f"No model bundle was found in {settings.DEFAULT_MODELS_DIR}. Reinstall the app or add one with --models."
        )
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


def screen_one(screener: Screener, history: History, data: bytes, name: str, key: str) -> Case | str:
    """Screen once per key (Streamlit reruns the page on every click); a bad file gives its sentence."""
    done: dict = st.session_state.setdefault("cases", {})
    if key not in done:
        try:
            image, result = screener.screen_file(data, name)  # the browser and server check the size too
        except ImageError as error:
            done[key] = str(error)
        else:
            when = now()
            keep = data if st.session_state.get("keep_images") else None
            done[key] = Case(key, result, image, when, history.add(result, when, keep))
    return done[key]


def show_cases(screener: Screener, history: History, outcomes: list[Case | str], label: str) -> None:
    """Per-file errors, the batch table and CSV, then one card per image."""
    cases = [o for o in outcomes if isinstance(o, Case)]
    for problem in (o for o in outcomes if isinstance(o, str)):
        st.error(problem)
    if history.warning:
        st.warning(history.warning)
    if not cases:
        return
    rows = [csv_row(c.result, c.when, c.review, c.note) for c in cases]
    if len(cases) > 1:
        st.subheader(f"{len(cases)} images screened · {sum(c.result.inconclusive for c in cases)} to refer")
        ui.results_table(rows)
    st.download_button("Download results (CSV)", results_csv(rows), f"smearscope-{label}.csv", "text/csv",
                       key=f"csv-{label}")  # fmt: skip
    for case in cases:
        ui.result_card(screener, case, history)


def with_progress(items: list, text: str):
    bar = st.progress(0.0, text=text) if len(items) > 1 else None
    for index, item in enumerate(items):
        yield item
        if bar:
            bar.progress((index + 1) / len(items), text=f"{text} {index + 1} of {len(items)}")


def screen_uploads(screener: Screener, history: History) -> None:
    files = st.file_uploader(
        "Smear images (JPEG, PNG, TIFF, BMP); one or many",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
    )
    if not files:
        st.info("Add one or more smear photographs to screen them.")
        ui.expected_images(screener)
        return
    outcomes = [
        screen_one(screener, history, f.getvalue(), f.name, f"upload-{f.file_id}")
        for f in with_progress(files, "Screened")
    ]
    show_cases(screener, history, outcomes, "upload")


def folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in UPLOAD_TYPES)


def read_folder_file(path: Path) -> bytes | str:
    """The file's bytes, or the sentence saying why it was skipped (checked before reading it)."""
    try:
        check_size(path.stat().st_size, path.name)
    except ImageError as error:
        return str(error)
    return path.read_bytes()


def screen_folder(screener: Screener, history: History) -> None:
    """A folder on this computer, screened once or watched for new images from the microscope camera."""
    folder_text = st.text_input("Folder on this computer", placeholder="e.g. C:/Microscope/Captures")
    watch = st.toggle("Watch this folder: screen new images as they arrive")
    if not folder_text:
        return
    folder = Path(folder_text).expanduser()
    if not folder.is_dir():
        st.error(f"{folder} is not a folder on this computer.")
        return
    if watch:
        watch_folder(screener, history, folder)
    elif st.button("Screen every image in this folder"):
        st.session_state["folder_run"] = str(folder)
    if not watch and st.session_state.get("folder_run") == str(folder):
        show_cases(screener, history, screen_paths(screener, history, folder_images(folder)), "folder")


def screen_paths(screener: Screener, history: History, paths: list[Path]) -> list[Case | str]:
    outcomes = []
    for path in with_progress(paths, "Screened"):
        data = read_folder_file(path)
        stat = path.stat()
        key = f"file-{path}-{stat.st_size}-{stat.st_mtime_ns}"
        outcomes.append(data if isinstance(data, str) else screen_one(screener, history, data, path.name, key))
    return outcomes


@st.fragment(run_every=3)
def watch_folder(screener: Screener, history: History, folder: Path) -> None:
    st.caption(f"Watching {folder} every 3 seconds; newest first.")
    show_cases(screener, history, screen_paths(screener, history, folder_images(folder))[::-1], "watch")


def show_history(history: History) -> None:
    if history.warning:
        st.warning(history.warning)
    columns = st.columns(4)
    verdict = columns[0].text_input("Class or verdict", placeholder="e.g. Pro or Benign")
    only_referred = columns[1].toggle("Only referred")
    text = columns[2].text_input("Name or note contains")
    since = columns[3].date_input("Since", value=None)
    rows = history.recent(verdict=verdict.strip(), only_referred=only_referred, text=text.strip(),
                          since=since.isoformat() if since else "")  # fmt: skip
    if not rows:
        st.info("No saved results match." if history.available else "History is off.")
        return
    ui.results_table(rows)
    st.download_button("Download history (CSV)", results_csv(rows), "smearscope-history.csv", "text/csv")


def refuse_unsafe_server() -> None:
    """Stop here, with one sentence, on a server that listens beyond this computer or sends usage statistics."""
    refusal = settings.server_refusal(st_config.get_option("server.address"),
                                      st_config.get_option("browser.gatherUsageStats"))  # fmt: skip
    if refusal:
        st.error(refusal)
        st.stop()


def main() -> None:
    st.set_page_config(page_title="SmearScope", page_icon="🔬", layout="wide")
    refuse_unsafe_server()
    st.title("SmearScope: ALL screening of blood smear images")
    ui.disclaimer()
    try:
        screener = choose_model(list_bundles(*settings.model_folders()))
    except RuntimeMissingError as error:
        st.error(str(error))
        return
    if screener is None:
        return
    history = load_history()
    st.sidebar.toggle("Keep a copy of each image in the history", key="keep_images",
                      help=f"Off by default. Images are stored in {history.images}.")  # fmt: skip
    screen_tab, folder_tab, history_tab, model_tab = st.tabs(["Screen", "Folder", "History", "Model"])
    with screen_tab:
        screen_uploads(screener, history)
    with folder_tab:
        screen_folder(screener, history)
    with history_tab:
        show_history(history)
    with model_tab:
        ui.model_summary(screener)


main()
