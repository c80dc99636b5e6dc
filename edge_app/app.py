"""SmearScope Streamlit page, started by ``python -m edge_app.launcher [--models DIR]`` (``make app``).

The launcher runs this script with the production settings (127.0.0.1, XSRF on, no usage
statistics, the upload limit). A plain ``streamlit run edge_app/app.py``, from any folder, reads the
same settings from ``edge_app/.streamlit/config.toml`` beside this page (generated from the launcher's
table); started any other way that listens beyond this computer or sends usage statistics, the page
refuses to serve.

A thin layer: every decision is made by the inference core (edge_app.screening) and the case model
(edge_app.cases); this page gathers the fields of one sample (uploads, a folder, a watched folder) into
the open case, shows results, and offers the case's report, FHIR and CSV. The sidebar holds the case's
identifiers; the History tab lists saved cases. It runs offline on the TFLite runtime alone.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Streamlit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st
from streamlit import config as st_config

from edge_app import calibrate_page as calibrate
from edge_app import components as ui
from edge_app import settings
from edge_app.bundle import BundleError, list_bundles
from edge_app.cases import (
    REVIEW_FILTERS,
    SAMPLE_ID_MAX,
    Case,
    CaseInfo,
    Field,
    case_matches,
    local_time,
    local_zone,
    propose_sample_id,
    sample_id_problem,
    shown_time,
    thumbnail,
)
from edge_app.fhir import fhir_bundle
from edge_app.records import (
    REVIEW_CHOICES,
    History,
    case_report_html,
    case_rows,
    data_dir,
    load_preferences,
    now,
    results_csv,
    save_preferences,
)
from edge_app.runtime import RuntimeMissingError
from edge_app.screening import Screener, check_size
from edge_app.settings import IMAGE_SUFFIXES, MAX_UPLOAD_MB
from smearscope_core.files import sha256_of
from smearscope_core.imaging import ImageError, open_image

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]  # Streamlit's type: no dot
WATCH_SECONDS = 3
WATCH_CARDS = 24  # a watched folder shows the newest fields as cards; every field is in the case's table
OVER_LIMIT = (
    f"A file over {MAX_UPLOAD_MB} MB is not sent: the browser marks it in red in the list above and it is not "
    "screened. Export a smaller JPEG of that field from the camera software."
)


@st.cache_resource(show_spinner="Loading the model...")
def load_screener(folder: str) -> Screener:
    return Screener(folder)


@st.cache_resource
def load_history(path: str) -> History:
    """One History per database file ($SMEARSCOPE_DATA can differ between runs, as in the tests)."""
    return History(Path(path))


MODEL_CHOICE = "model_choice"  # the model selector's session key


def choose_model(folders: list[Path]) -> Screener | None:
    """Model selector; a bundle that fails its checks is reported and the default is used instead."""
    labels = {f"{p.name} ({p.parent})": p for p in folders}
    chosen = st.session_state.pop(calibrate.CHOSEN_KEY, None)  # a site bundle the Calibrate tab just wrote
    if chosen_label := next((label for label, p in labels.items() if str(p) == chosen), None):
        st.session_state[MODEL_CHOICE] = chosen_label
    if st.session_state.get(MODEL_CHOICE) not in labels:  # a bundle folder removed since
        st.session_state.pop(MODEL_CHOICE, None)
    choice = next(iter(labels), None)
    if len(labels) > 1:
        choice = st.sidebar.selectbox("Model", list(labels), key=MODEL_CHOICE)
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


# ---------------------------------------------------------------- the open case


def new_case(history: History) -> Case:
    """A fresh case: today's next free sample ID proposed, the operator remembered from the last case."""
    taken = history.sample_ids() + st.session_state.setdefault("used_sample_ids", [])
    sample = propose_sample_id(taken, local_time(now()).date())
    return Case(CaseInfo(sample, operator=str(load_preferences().get("operator", "")), proposed=True))


def start_case(case: Case) -> None:
    """Make ``case`` the session's open case; the uploader, the folder run and the case form start afresh."""
    st.session_state["case"] = case
    st.session_state["case_serial"] = st.session_state.get("case_serial", 0) + 1
    st.session_state["form_serial"] = st.session_state.get("form_serial", 0) + 1
    for key in ("folder_run", "watch_baseline", "case_notice"):
        st.session_state.pop(key, None)


def current_case(history: History) -> Case:
    if "case" not in st.session_state:
        start_case(new_case(history))
    return st.session_state["case"]


def continue_case(history: History, case_id: int) -> None:
    """Make a saved case the open one (reopening it when closed), then rerun the page with it."""
    saved = history.load_case(case_id)
    if saved is None:
        st.error("That case could not be read from the history.")
        return
    if saved.info.closed_utc:
        refusal = history.reopen_case(case_id)
        if refusal:
            st.error(refusal)
            return
        saved.info.closed_utc = ""
    start_case(saved)
    st.rerun()


def case_panel(history: History, case: Case) -> bool:
    """The case's identifiers in the sidebar, saved as they change; False while the sample ID is unusable
    (then nothing is screened: every field must be saved under its sample)."""
    bar, info, serial = st.sidebar, case.info, st.session_state["form_serial"]
    bar.subheader("Case: one sample")
    sample = bar.text_input("Sample ID (accession number)", value=info.sample_id, max_chars=SAMPLE_ID_MAX,
                            key=f"sample-{serial}", help="The slide's accession number. Proposed: today's next free "
                            "number; type or scan yours over it.")  # fmt: skip
    patient = bar.text_input("Patient reference (optional)", value=info.patient_ref, max_chars=SAMPLE_ID_MAX,
                             key=f"patient-{serial}", help="A pseudonymous code the laboratory can resolve; never "
                             "a name.")  # fmt: skip
    operator = bar.text_input("Operator", value=info.operator, max_chars=80, key=f"operator-{serial}",
                              help="Your name, as it goes on the report; remembered for the next case.")  # fmt: skip
    problem = sample_id_problem(sample)
    if problem:
        bar.error(problem)
    else:
        apply_identifiers(history, info, sample.strip(), patient.strip(), operator.strip())
    return problem is None


def case_status(history: History, case: Case) -> None:
    """Under the case form, filled after the tabs (so it counts this run's fields): the case's state, closing it,
    and the other open cases to continue."""
    info, serial = case.info, st.session_state["form_serial"]
    if case.fields:
        saved = "" if info.case_id is not None else " · not in the history (history is off)"
        count = f"{len(case.fields)} field{'s' if len(case.fields) != 1 else ''}"
        st.caption(f"Opened {shown_time(info.opened_utc, info)} · {count}{saved}")
        if st.button("Close this case and start the next sample", key=f"close-{serial}"):
            if info.case_id is not None:
                history.close_case(info.case_id)
            st.session_state.setdefault("used_sample_ids", []).append(info.sample_id)
            start_case(new_case(history))
            st.rerun()
    else:
        st.caption("The case is saved with its first screened field.")
    others = [(other, count) for other, count in history.open_cases() if other.case_id != info.case_id]
    if others:
        st.caption("Other open cases:")
    for other, count in others:
        label = f"Continue {other.sample_id} ({count} fields, opened {shown_time(other.opened_utc, other)})"
        if st.button(label, key=f"continue-{other.case_id}-{serial}"):
            continue_case(history, int(other.case_id or 0))


def apply_identifiers(history: History, info: CaseInfo, sample: str, patient: str, operator: str) -> None:
    """Take the form's identifiers; a saved case is updated in the history, the operator remembered."""
    before = (info.sample_id, info.patient_ref, info.operator)
    if (sample, patient, operator) == before:
        return
    if sample != info.sample_id:
        info.proposed = False
    info.sample_id, info.patient_ref, info.operator = sample, patient, operator
    refusal = history.update_case(info)
    if refusal:
        st.sidebar.error(refusal)
        info.sample_id, info.patient_ref, info.operator = before
    if operator != before[2] and operator:
        save_preferences({"operator": operator})


# ---------------------------------------------------------------- adding fields


def save_field(history: History, case: Case, item: Field, data: bytes) -> Field:
    """Save a new field in the history under its case (saving the case with its first field); returns the
    case's field for this image, which is an earlier one when the case joined turns out to hold it already."""
    info = case.info
    if info.case_id is None and history.available:
        opened = history.open_case(info)
        if opened.joined:  # the sample's open case from another session: its fields come in first
            saved = history.load_case(opened.case_id)
            case.fields[:0] = saved.fields if saved is not None else []
            st.session_state["form_serial"] += 1  # the form shows the joined case's identifiers
        if opened.message:
            st.session_state["case_notice"] = opened.message
        if (existing := case.find(item.sha256)) is not None:
            return existing
    if not info.opened_utc:  # history off: the case lives in this session only
        info.opened_utc = item.when
        info.tz_name, info.tz_offset = local_zone(item.when)
    keep = data if st.session_state.get("keep_images") else None
    item.history_id = history.add(item.result, item.when, keep, case_id=info.case_id)
    item.in_other_cases = history.other_cases_with(item.sha256, info.case_id)
    case.fields.append(item)
    return item


def add_field(screener: Screener, history: History, case: Case, key: str, name: str,
              read: Callable[[], bytes | str]) -> Field | str:  # fmt: skip
    """Screen a file into the case once per key (Streamlit reruns the page on every click): its field, or the
    sentence saying why it could not be used. The same image twice in a case is one field, screened once."""
    if key in case.outcomes:
        return case.outcomes[key]
    data = read()
    if isinstance(data, str):
        case.outcomes[key] = data
        return data
    existing = case.find(sha256_of(data))
    if existing is not None:
        if name != existing.result.source and name not in existing.also_named:
            existing.also_named.append(name)
        if existing.thumbnail is None:  # read back from the history: its thumbnail again, from these bytes
            fill_pictures(screener, existing, data)
        case.outcomes[key] = existing
        return existing
    try:
        image, result = screener.screen_file(data, name)  # the browser and server check the size too
    except ImageError as error:
        case.outcomes[key] = str(error)
        return str(error)
    # only a thumbnail and the model's pixels stay in the session, never the decoded image or the file's bytes
    item = Field(key, result, now(), thumbnail(image), screener.pixels(image))
    del image
    case.outcomes[key] = save_field(history, case, item, data)
    return case.outcomes[key]


def fill_pictures(screener: Screener, item: Field, data: bytes) -> None:
    """A field read back from the history gets its thumbnail (and, screened by this model, its pixels)."""
    try:
        image = open_image(data, item.result.source, min_side=screener.bundle.decode_side)
    except ImageError:
        return
    item.thumbnail = thumbnail(image)
    if ui.same_model(screener, item.result):
        item.pixels = screener.pixels(image)


def kept_pictures(screener: Screener, history: History, item: Field) -> None:
    """Thumbnail and pixels of a history field whose image was kept ("Keep a copy of each image")."""
    if item.thumbnail is None and item.image_file:
        path = history.images / item.image_file
        try:
            data = path.read_bytes() if path.is_file() else b""
        except OSError:
            return
        if data:
            fill_pictures(screener, item, data)


def show_outcomes(screener: Screener, history: History, outcomes: list[tuple[str, Field | str]], view: str,
                  limit: int | None = None) -> None:  # fmt: skip
    """Per-file errors, the history's warning, a table of a batch's files (each by the name it came under), then
    one card per field (once, even when the same image came twice)."""
    for problem in (o for _, o in outcomes if isinstance(o, str)):
        st.error(problem)
    if history.warning:
        st.warning(history.warning)
    screened = [(name, o) for name, o in outcomes if isinstance(o, Field)]
    if len(outcomes) > 1 and screened:
        referred = sum(item.result.inconclusive for _, item in screened)
        st.markdown(f"**{len(screened)} of {len(outcomes)} files screened** · {referred} referred")
        ui.batch_table(screened)
    shown: list[Field] = []
    for _, outcome in screened:
        if all(outcome is not item for item in shown):
            shown.append(outcome)
    if limit is not None and len(shown) > limit:
        st.caption(f"The newest {limit} of {len(shown)} fields are shown; every field is in the case's table above.")
    for item in shown[:limit]:
        ui.field_card(screener, item, history, view)


def with_progress(items: list, text: str) -> Iterator:
    """The items, with a progress bar while more than one is worked on (removed when done)."""
    bar = st.progress(0.0, text=text) if len(items) > 1 else None
    for index, item in enumerate(items):
        yield item
        if bar:
            bar.progress((index + 1) / len(items), text=f"{text} {index + 1} of {len(items)}")
    if bar:
        bar.empty()


def screen_uploads(screener: Screener, history: History, case: Case, ready: bool) -> None:
    files = st.file_uploader(
        "Smear images (JPEG, PNG, TIFF, BMP); one or many fields of this sample",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB,
        key=f"uploads-{st.session_state['case_serial']}",  # a new case starts with an empty uploader
        disabled=not ready,
    )
    st.caption(OVER_LIMIT)
    if not files:
        st.info("Add one or more photographs of this smear's fields to screen them into the case.")
        ui.expected_images(screener)
        return
    if not ready:
        return
    new = [f for f in files if f"upload-{f.file_id}" not in case.outcomes]
    for upload in with_progress(new, "Screened"):
        add_field(screener, history, case, f"upload-{upload.file_id}", upload.name, upload.getvalue)
    show_outcomes(screener, history, [(f.name, case.outcomes[f"upload-{f.file_id}"]) for f in files], "upload")


def folder_images(folder: Path, newest_first: bool = False) -> list[Path]:
    """The images in a folder (not its subfolders), by name, or newest first by modification time."""
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in UPLOAD_TYPES]
    if newest_first:
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    return sorted(found)


def file_key(path: Path) -> str:
    """A folder file's identity for this session: a rewritten file is a new one."""
    stat = path.stat()
    return f"file-{path}-{stat.st_size}-{stat.st_mtime_ns}"


def read_folder_file(path: Path) -> bytes | str:
    """The file's bytes, or the sentence saying why it was skipped (the size is checked before reading)."""
    try:
        check_size(path.stat().st_size, path.name)
        return path.read_bytes()
    except ImageError as error:
        return str(error)
    except OSError as error:
        return f"{path.name} could not be read ({error.strerror or error})."


def screen_paths(screener: Screener, history: History, case: Case, paths: list[Path]) -> list[tuple[str, Field | str]]:
    """Each file's field or sentence; only files this case has not seen yet are read and screened."""
    keyed = []
    for path in paths:
        try:
            keyed.append((path, file_key(path)))
        except OSError:  # gone between listing and looking: the next scan sees the folder as it is
            continue
    for path, key in with_progress([(p, k) for p, k in keyed if k not in case.outcomes], "Screened"):
        add_field(screener, history, case, key, path.name, partial(read_folder_file, path))
    return [(path.name, case.outcomes[key]) for path, key in keyed]


def list_folder(folder: Path, newest_first: bool = False) -> list[Path] | None:
    try:
        return folder_images(folder, newest_first)
    except OSError as error:
        st.error(f"{folder} cannot be read ({error.strerror or error}).")
        return None


def screen_folder(screener: Screener, history: History, case: Case, ready: bool) -> None:
    """A folder on this computer, screened once or watched for new images from the microscope camera."""
    folder_text = st.text_input("Folder on this computer", placeholder="e.g. C:/Microscope/Captures", key="folder")
    watch = st.toggle("Watch this folder: add new images to this case as they arrive",
                      key=f"watch-{st.session_state['case_serial']}")  # fmt: skip
    if not folder_text or (folder := ui.folder_path(folder_text)) is None:
        return
    if not ready:
        st.info("Enter the sample ID in the sidebar first: every field is saved under its sample.")
        return
    if watch:
        watch_folder(screener, history, folder)
        return
    if st.button("Screen every image in this folder", key=f"scan-{st.session_state['case_serial']}"):
        st.session_state["folder_run"] = str(folder)
    if st.session_state.get("folder_run") == str(folder):
        paths = list_folder(folder)
        if paths is None:
            return
        outcomes = screen_paths(screener, history, case, paths)
        st.caption(f"{len(paths)} images in {folder}; screening it again adds only images not yet in this case.")
        show_outcomes(screener, history, outcomes, "folder")


@st.fragment(run_every=WATCH_SECONDS)
def watch_folder(screener: Screener, history: History, folder: Path) -> None:
    """Add the images that arrive in the folder, newest first by modification time. Images already there when
    watching started belong to an earlier sample as often as not: they are counted and added only on request."""
    case: Case = st.session_state["case"]
    paths = list_folder(folder, newest_first=True)
    if paths is None:
        return
    keyed = []
    for path in paths:
        try:
            keyed.append((path, file_key(path)))
        except OSError:  # gone between listing and looking
            continue
    baselines: dict[str, set[str]] = st.session_state.setdefault("watch_baseline", {})
    baseline = baselines.setdefault(str(folder), {key for _, key in keyed})
    st.caption(f"Watching {folder} every {WATCH_SECONDS} seconds: new images are added to case "
               f"{case.info.sample_id}, newest first (by modification time).")  # fmt: skip
    earlier = sum(key in baseline for _, key in keyed)
    if earlier and st.button(f"Add the {_images(earlier, 'that was', 'that were')} already in the folder to this case",
                             key=f"earlier-{st.session_state['case_serial']}"):  # fmt: skip
        baseline.clear()
        earlier = 0
    new = [path for path, key in keyed if key not in baseline]
    before = len(case.fields)
    outcomes = screen_paths(screener, history, case, new)
    if not paths:
        st.info(f"Waiting for images: {folder} is empty.")
    else:
        st.info(f"Waiting for new images in {folder} ({_images(len(new), 'has', 'have')} arrived while watching).")
    if earlier:
        st.caption(f"{_images(earlier, 'was', 'were')} in the folder before watching started; not in this case.")
    show_outcomes(screener, history, outcomes, "watch", limit=WATCH_CARDS)
    if len(case.fields) != before and not st.session_state.get("full_run"):
        st.rerun()  # the whole page: the case's summary and table count the new fields


# ---------------------------------------------------------------- the case's summary and exports


def _images(count: int, one: str, many: str) -> str:
    """'1 image was', '3 images were'."""
    return f"{count} image {one}" if count == 1 else f"{count} images {many}"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def case_report(screener: Screener, history: History, case: Case) -> str:
    """The printable report, made when it is asked for: heatmaps of the malignant fields, computed once."""
    report = Case(case.info, list(case.fields))
    heatmaps = {}
    for item in report.fields:
        kept_pictures(screener, history, item)
        finding = item.result.finding
        if finding is not None and finding.malignant and (heatmap := ui.field_heatmap(screener, item)) is not None:
            heatmaps[item.key] = heatmap
    versions = {(screener.bundle.name, screener.bundle.sha256): str(screener.bundle.card.get("created", ""))}
    return case_report_html(report, heatmaps, versions)


def fhir_json(case: Case) -> str:
    return json.dumps(fhir_bundle(case), indent=2)


def case_downloads(screener: Screener, history: History, case: Case, key: str) -> None:
    """The case's printable report (HTML, prints to PDF), FHIR R4 bundle and CSV; the first two are made on
    click (a report embeds images and heatmaps: nothing is held for it in the meantime)."""
    stem = f"smearscope-{safe_name(case.info.sample_id)}"
    report, fhir, table = st.columns(3)
    report.download_button("Printable report (HTML)", partial(case_report, screener, history, case),
                           file_name=f"{stem}.html", mime="text/html", key=f"report-{key}",
                           on_click="ignore")  # fmt: skip
    fhir.download_button("FHIR R4 export (JSON)", partial(fhir_json, case),
                         file_name=f"{stem}.fhir.json", mime="application/fhir+json", key=f"fhir-{key}",
                         on_click="ignore")  # fmt: skip
    table.download_button("Results (CSV)", results_csv(case_rows(case)), file_name=f"{stem}.csv", mime="text/csv",
                          key=f"csv-{key}", on_click="ignore")  # fmt: skip


def identifiers_line(info: CaseInfo) -> str:
    parts = [f"Case **{_md(info.sample_id)}**"]
    if info.patient_ref:
        parts.append(f"patient {_md(info.patient_ref)}")
    parts.append(f"operator {_md(info.operator)}" if info.operator else "operator not given")
    if info.opened_utc:
        parts.append(f"opened {shown_time(info.opened_utc, info)}")
    if info.closed_utc:
        parts.append(f"closed {shown_time(info.closed_utc, info)}")
    return " · ".join(parts)


def _md(text: str) -> str:
    """User text inside Markdown: shown as typed."""
    return re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", text)


def case_header(screener: Screener, history: History, case: Case) -> None:
    """Above the tabs: the open case, its summary and verdict, exports and the table of its fields."""
    if notice := st.session_state.get("case_notice"):
        st.info(notice)
    if not case.fields:
        st.caption(f"Case {case.info.sample_id}: no field screened yet. Add this smear's images on the Screen or "
                   "Folder tab; its sample ID, patient reference and operator are in the sidebar.")  # fmt: skip
        return
    st.markdown(identifiers_line(case.info))
    ui.case_summary(case)
    case_downloads(screener, history, case, f"case-{st.session_state['case_serial']}")
    with st.expander(f"Fields of this case ({len(case.fields)})"):
        ui.results_table(case_rows(case))


# ---------------------------------------------------------------- history


def show_history(screener: Screener, history: History, current: Case) -> None:
    """Saved cases with filters; an opened case shows its fields, their review, and its exports."""
    if history.warning:
        st.warning(history.warning)
    if not history.available:
        st.info("History is off.")
        return
    sample_col, since_col, until_col, verdict_col, reviewed_col = st.columns(5)
    sample = sample_col.text_input("Sample ID contains", key="history-sample")
    since = since_col.date_input("Opened from", value=None, key="history-since")
    until = until_col.date_input("Opened until", value=None, key="history-until")
    verdict = verdict_col.text_input(
        "Verdict contains", placeholder="e.g. suspected, inconclusive", key="history-verdict"
    )
    reviewed = reviewed_col.selectbox("Reviewed", list(REVIEW_FILTERS), key="history-reviewed")
    cases = [c for c in history.cases(sample, since, until) if case_matches(c, verdict, reviewed)]
    if not cases:
        st.info("No saved case matches.")
        return
    ui.cases_table(cases)
    rows = [row for case in cases for row in case_rows(case)]
    st.download_button("Download these cases' fields (CSV)", results_csv(rows), "smearscope-history.csv", "text/csv",
                       key="history-csv", on_click="ignore")  # fmt: skip
    labels = {ui.case_label(case): case for case in cases}
    choice = st.selectbox("Open a case", ["(choose a case)", *labels], key="history-open")
    if choice in labels:
        show_saved_case(screener, history, labels[choice], current)


def show_saved_case(screener: Screener, history: History, saved: Case, current: Case) -> None:
    info = saved.info
    st.markdown(f"#### {_md(info.title)}")
    if info.unassigned:
        st.caption("Results saved before the app had cases: they belong to no sample and have no case verdict.")
    else:
        st.markdown(identifiers_line(info))
        ui.case_summary(saved)
        case_downloads(screener, history, saved, f"saved-{info.case_id}")
        if info.case_id != current.info.case_id:
            label = "Reopen this case to add fields" if info.closed_utc else "Continue adding fields to this case"
            if st.button(label, key=f"continue-saved-{info.case_id}"):
                continue_case(history, int(info.case_id or 0))
    ui.results_table(case_rows(saved))
    review_saved_fields(history, saved, current)


def review_saved_fields(history: History, saved: Case, current: Case, limit: int = 100) -> None:
    """Review and note for each field of a saved case, saved at once (and into the open case, when it is this one)."""
    items = saved.fields[-limit:]
    st.markdown(f"**Technician review** ({len(items)} fields" + (f", the newest {limit}" if len(saved.fields) > limit
                else "") + ")")  # fmt: skip
    confirmations: dict[int, str] = st.session_state.setdefault("history_saved", {})
    for item in items:
        if item.history_id is None:
            continue
        name, choice, text, action = st.columns([3, 2, 3, 1])
        name.markdown(f"{_md(item.result.source)}  \n{_md(item.result.verdict)} · "
                      f"{shown_time(item.when, None if saved.info.unassigned else saved.info)}")  # fmt: skip
        key = f"history-{item.history_id}"
        review = choice.selectbox("Review", REVIEW_CHOICES, index=REVIEW_CHOICES.index(item.review),
                                  format_func=lambda c: c or "(not reviewed)", key=f"review-{key}",
                                  label_visibility="collapsed")  # fmt: skip
        note = text.text_input("Note", value=item.note, key=f"note-{key}", label_visibility="collapsed",
                               placeholder="note")  # fmt: skip
        if action.button("Save", key=f"save-{key}"):
            if history.review(item.history_id, review, note):
                confirmations[item.history_id] = now()
                mine = next((f for f in current.fields if f.history_id == item.history_id), None)
                if mine is not None and current.info.case_id == saved.info.case_id:
                    mine.review, mine.note, mine.review_saved = review, note, confirmations[item.history_id]
            else:
                st.error(history.warning or "The review could not be saved.")
        if item.history_id in confirmations:
            name.caption(f"Review saved ({shown_time(confirmations[item.history_id])}).")


# ---------------------------------------------------------------- the page


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
        screener = choose_model(list_bundles(*settings.model_folders(), calibrate.site_models_dir()))
    except RuntimeMissingError as error:
        st.error(str(error))
        return
    if screener is None:
        return
    history = load_history(str(data_dir() / "history.sqlite"))
    st.sidebar.toggle("Keep a copy of each image in the history", key="keep_images",
                      help=f"Off by default. Images are stored in {history.images}.")  # fmt: skip
    case = current_case(history)
    ready = case_panel(history, case)
    status = st.sidebar.container()  # filled last, as the header, so both count the fields this run adds
    header = st.container()
    st.session_state["full_run"] = True  # a watched folder's own refreshes rerun the page when they add fields
    screen_tab, folder_tab, history_tab, model_tab, calibrate_tab = st.tabs(
        ["Screen", "Folder", "History", "Model", "Calibrate"]
    )
    with screen_tab:
        screen_uploads(screener, history, case, ready)
    with folder_tab:
        screen_folder(screener, history, case, ready)
    with history_tab:
        show_history(screener, history, case)
    with model_tab:
        ui.model_summary(screener)
        calibrate.site_summary(screener)
    with calibrate_tab:
        calibrate.calibrate_tab(screener)
    st.session_state["full_run"] = False
    with header:
        case_header(screener, history, case)
    with status:
        case_status(history, case)


main()
