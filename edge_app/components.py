"""Small Streamlit components of the page. All decisions are made in the inference core and in edge_app.cases;
these only show.

No dataframe or chart elements (they pull pyarrow, pandas and altair into the desktop build):
tables and bars are plain Markdown/HTML.
"""

from __future__ import annotations

import base64
import html
import random
from pathlib import Path

import streamlit as st
from PIL import Image

from edge_app.bundle import is_inside
from edge_app.cases import Case, Field, has_subtypes, rule_sentence, shown_time
from edge_app.classify import Finding, Result
from edge_app.explain import occlusion_heatmap, overlay
from edge_app.records import DISCLAIMER, REVIEW_CHOICES, SUBTYPE_NOTE, History, now, subtype_note
from edge_app.screening import Screener
from smearscope_core.imaging import resize_for_model

NO_SHORTCUT_FIGURES = (
    "This model's colour-robust figures were not measured (its card has no `shortcuts` section), so how much "
    "its test figures owe to the colour of the training photos is unknown."
)
VERDICT_COLOURS = {"suspected": "#c62828", "negative": "#2e7d32", "refer": "#6a1b9a"}


def disclaimer() -> None:
    st.caption(f"⚠️ {DISCLAIMER}")


def severity_badge(finding: Finding) -> str:
    """The severity indicator of a finding (a referred image has none, so no badge)."""
    text = f"severity {finding.severity} · {html.escape(finding.severity_word)}"
    return (
        f"<span style='background:{finding.severity_colour};color:white;padding:0.15em 0.55em;"
        f"border-radius:0.3em'>{text}</span>"
    )


def verdict_banner(result: Result) -> None:
    """The verdict; a referral lists its reasons, each with what to do, and names no class."""
    finding = result.finding
    if finding is None:
        st.warning(f"**{result.verdict}**  \n" + "  \n".join(f"• {r}" for r in result.reasons))
    elif finding.malignant:
        st.error(f"**{finding.display_label}**: leukemic cells suggested ({finding.confidence:.0%} confidence)")
    else:
        st.success(f"**{finding.display_label}**: no leukemia suggested ({finding.confidence:.0%} confidence)")


def probability_bars(result: Result) -> None:
    rows = "".join(
        f"<tr><td style='padding-right:1em'>{html.escape(p.display_name)}</td>"
        f"<td style='width:60%'><div style='background:{'#c62828' if p.malignant else '#2e7d32'};"
        f"width:{max(p.probability * 100, 0.5):.1f}%;height:0.8em'></div></td>"
        f"<td style='padding-left:1em;text-align:right'>{p.probability:.1%}</td></tr>"
        for p in result.probabilities
    )
    st.markdown(f"<table style='width:100%;border:none'>{rows}</table>", unsafe_allow_html=True)


def finding_details(result: Result) -> None:
    """Malignancy, severity, class description, subtype note and class probabilities: only for a finding."""
    finding = result.finding
    if finding is None:
        return
    st.markdown(
        f"Probability of malignancy: **{finding.p_malignant:.1%}** &nbsp; {severity_badge(finding)}",
        unsafe_allow_html=True,
    )
    if finding.description:
        st.caption(finding.description)
    if subtype := subtype_note(result):
        st.caption(subtype)
    probability_bars(result)


def model_details(result: Result) -> None:
    """The model's raw scores and the image checks' figures, collapsed and grey, for engineers.

    On a referred image these are explicitly not a result: the image was referred, so no class is reported.
    """
    title = "Model details (not a result)" if result.inconclusive else "Model details"
    with st.expander(title, expanded=False):
        if result.inconclusive:
            st.caption("The image was referred: the scores below are the model's raw output for engineers checking "
                       "the model, not a finding, and must not be reported.")  # fmt: skip
            st.caption(
                "Raw class scores: " + ", ".join(f"{p.display_name} {p.probability:.3f}" for p in result.probabilities)
            )
        checks = [
            ("image unfamiliarity", result.ood_distance),
            ("feature unfamiliarity", result.feature_distance),
            ("cell scale vs training", result.scale_ratio),
        ]
        measured = [f"{name} {value:.2f}" for name, value in checks if value is not None]
        st.caption("Image checks: " + (", ".join(measured) if measured else "none measured") +
                   f" · screened in {result.seconds * 1000:.0f} ms")  # fmt: skip


def same_model(screener: Screener, result: Result) -> bool:
    """Whether this screener's model gave the result (a heatmap from another model would explain another answer)."""
    return (result.model_name, result.model_sha256) == (screener.bundle.name, screener.bundle.sha256)


def field_heatmap(screener: Screener, item: Field) -> Image.Image | None:
    """The occlusion heatmap over the square the model sees (the centre of the thumbnail), computed once from
    the field's model pixels; None without pixels or when another model screened the field."""
    if item.pixels is None or item.thumbnail is None or not same_model(screener, item.result):
        return None
    if item.heat is None:
        item.heat = occlusion_heatmap(screener.classifier, item.pixels).heat
    square = resize_for_model(item.thumbnail, min(item.thumbnail.size))  # the model's crop, at thumbnail size
    return overlay(square, item.heat)


def field_card(screener: Screener, item: Field, history: History, view: str) -> None:
    """Thumbnail, verdict, finding (malignancy, severity, probabilities), heatmap on demand, review."""
    result, key = item.result, f"{view}-{item.key}"
    with st.container(border=True):
        left, right = st.columns([1, 2])
        with left:
            if item.thumbnail is not None:
                st.image(item.thumbnail, caption=result.source, width="stretch")
            else:
                st.caption(f"{result.source} (image not kept)")
        with right:
            verdict_banner(result)
            for warning in result.warnings:
                st.warning(warning)
            finding_details(result)
            if item.also_named:
                st.caption(f"The same image was added again as {', '.join(item.also_named)}: it is in the case once.")
            if item.pixels is not None and st.toggle("Show what the model looked at", key=f"heat-{key}"):
                heatmap = field_heatmap(screener, item)
                if heatmap is None:
                    st.caption("No heatmap: another model screened this field.")
                else:
                    st.image(heatmap, width="stretch", caption="Occlusion heatmap on the square the model sees: "
                             "bright = hiding this region weakens the result most")  # fmt: skip
            model_details(result)
            review_controls(item, history, key)


def review_controls(item: Field, history: History, key: str) -> None:
    """The technician's confirm/override and note, saved into the field's history row; the confirmation stays
    on the card (a watched folder's refresh does not wipe it)."""
    with st.expander("Technician review" + (f": {item.review}" if item.review else "")):
        review = st.selectbox("Review", REVIEW_CHOICES, index=REVIEW_CHOICES.index(item.review),
                              format_func=lambda c: c or "(not reviewed)", key=f"review-{key}")  # fmt: skip
        note = st.text_input("Note", value=item.note, key=f"note-{key}")
        if st.button("Save review", key=f"save-{key}"):
            save_review(item, history, review, note)
        review_confirmation(item)


def save_review(item: Field, history: History, review: str, note: str) -> None:
    item.review, item.note = review, note
    saved = item.history_id is not None and history.review(item.history_id, review, note)
    item.review_saved = now() if saved else ""
    if not saved:
        st.info("Review kept for this session's exports (history is off).")


def review_confirmation(item: Field) -> None:
    if item.review_saved:
        st.success(f"Review saved in the history ({shown_time(item.review_saved)}): "
                   f"{item.review or 'not reviewed'}" + (f" · {item.note}" if item.note else ""))  # fmt: skip


def case_summary(case: Case) -> None:
    """The slide-level summary and the case verdict (as Markdown, not an alert: the alerts are the fields')."""
    verdict, summary = case.verdict, case.summary
    parts = [f"**{summary.screened}** field{'s' if summary.screened != 1 else ''} screened",
             f"{summary.referred} referred", f"{summary.assessed} assessed"]  # fmt: skip
    if summary.per_class:
        parts.append("assessed per class: " + ", ".join(f"{n} {html.escape(c)}" for c, n in summary.per_class))
    if summary.max_p_malignant is not None and summary.mean_p_malignant is not None:
        parts.append(f"P(malignant) over assessed fields: highest {summary.max_p_malignant:.1%}, "
                     f"mean {summary.mean_p_malignant:.1%}")  # fmt: skip
    parts.append(f"reviewed {summary.reviewed} of {summary.screened} ({summary.overridden} overridden)")
    st.markdown(" · ".join(parts))
    subtype = f"<br><small>{html.escape(SUBTYPE_NOTE)}</small>" if verdict.subtype else ""
    st.markdown(
        f"<div style='border-left:0.4em solid {VERDICT_COLOURS[verdict.outcome]};padding:0.3em 0.8em;"
        f"margin:0.3em 0'><b>Case verdict: {html.escape(verdict.text)}</b><br>{html.escape(verdict.reason)}"
        f"{subtype}</div>",
        unsafe_allow_html=True,
    )
    st.caption(rule_sentence())


def results_table(rows: list[dict]) -> None:
    """Export rows (``records.case_rows``) as a table; a referred row shows "-" for every finding."""
    header = (
        "| time | image | verdict | confidence | P(malignant) | severity | reasons | review | note |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {_cell(str(r['local_time'])[:16].replace('T', ' '))} | {_cell(r['source'])} | {_cell(r['verdict'])} | "
        f"{_percent(r, 'confidence')} | {_percent(r, 'p_malignant')} | {'-' if _referred(r) else r['severity']} | "
        f"{_cell(r['reasons'])} | {_cell(r['review'])} | {_cell(r['note'])} |\n"
        for r in rows
    )
    st.markdown(header + body)


def batch_table(screened: list[tuple[str, Field]]) -> None:
    """A batch's files, each by the name it came under, with its field's verdict; a file whose image is already
    a field of the case (under another name) says so instead of counting twice."""
    header = "| file | verdict | confidence | P(malignant) | severity | field |\n|---|---|---|---|---|---|\n"
    rows = []
    for name, item in screened:
        result, finding = item.result, item.result.finding
        field = "this file" if name == result.source else f"the same image as {_cell(result.source)}"
        rows.append(
            f"| {_cell(name)} | {_cell(result.verdict)} | {f'{finding.confidence:.1%}' if finding else '-'} | "
            f"{f'{finding.p_malignant:.1%}' if finding else '-'} | {finding.severity if finding else '-'} | "
            f"{field} |\n"
        )
    st.markdown(header + "".join(rows))


def case_label(case: Case) -> str:
    """A saved case in one line, for the History tab's chooser."""
    info = case.info  # no counts or verdict here: the choice must stay the same while the case grows
    return info.title if info.unassigned else f"{info.sample_id} · opened {shown_time(info.opened_utc, info)}"


def cases_table(cases: list[Case]) -> None:
    """Saved cases, one row each: identifiers, local opening time, fields, referred, verdict, review, state."""
    header = (
        "| sample ID | patient | operator | opened | fields | referred | verdict | reviewed | case |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for case in cases:
        info, summary = case.info, case.summary
        verdict = "-" if info.unassigned else case.verdict.text
        state = "-" if info.unassigned else ("closed" if info.closed_utc else "open")
        opened = shown_time(info.opened_utc, info) if info.opened_utc else "-"
        rows.append(
            f"| {_cell(info.title)} | {_cell(info.patient_ref or '-')} | {_cell(info.operator or '-')} | {opened} | "
            f"{summary.screened} | {summary.referred} | {_cell(verdict)} | {summary.reviewed} of {summary.screened} | "
            f"{state} |\n"
        )
    st.markdown(header + "".join(rows))


def _referred(row: dict) -> bool:
    return str(row["inconclusive"]).lower() in ("true", "1")


def _percent(row: dict, key: str) -> str:
    return "-" if _referred(row) or row[key] in (None, "") else f"{float(row[key]):.1%}"


FIELD_SCHEMATIC = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 120" width="120" height="120"
 role="img" aria-label="drawn schematic of a whole field of view: many red cells and one white cell">
<rect width="120" height="120" fill="#f4eef2"/>{cells}
<circle cx="62" cy="58" r="13" fill="#d9c8e8" stroke="#7b5ea7"/><circle cx="61" cy="58" r="10" fill="#6a4c9c"/>
</svg>"""


def field_schematic(diameter_px: float | None, size: int) -> str:
    """A drawn (never a dataset image) field of view: red cells at the size the model knows, one white cell."""
    radius = max(2.0, (diameter_px or size / 10) / size * 120 / 2)
    rng, cells = random.Random(7), []  # the same drawing every time
    for _ in range(400):
        x, y = rng.uniform(radius, 120 - radius), rng.uniform(radius, 120 - radius)
        apart = all((x - a) ** 2 + (y - b) ** 2 > (2 * radius) ** 2 for a, b in cells)
        if apart and (x - 62) ** 2 + (y - 58) ** 2 > 400 and len(cells) < 26:  # clear of the white cell
            cells.append((x, y))
    return FIELD_SCHEMATIC.format(cells="".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="#e8a0a8" stroke="#c56b77"/>' for x, y in cells
    ))  # fmt: skip


def acquisition_sentence(card: dict) -> str:
    """What the model expects, in one or two sentences, from the card's ``acquisition`` section ("" without one)."""
    acquisition = card.get("acquisition")
    if not acquisition:
        return ""
    scale, size = acquisition.get("red_cell_diameter_px"), card["input"]["height"]
    cells = f" Red cells measure about {scale:.0f} px across in the model's {size} px image." if scale else ""
    return (
        f"This model knows {acquisition['field']} taken with {acquisition['objective']}, {acquisition['stain']}; "
        f"{acquisition['camera']}.{cells} Other setups are referred until the model is calibrated for them."
    )


def expected_images(screener: Screener) -> None:
    """On the upload page: what images this model expects, in words and as a drawn field."""
    card = screener.bundle.card
    sentence = acquisition_sentence(card)
    if not sentence:
        return
    diameter = card["acquisition"].get("red_cell_diameter_px")
    picture, words = st.columns([1, 8])
    picture.markdown(field_schematic(diameter, int(card["input"]["height"])), unsafe_allow_html=True)
    words.caption(sentence)


def unfamiliarity_checks(screener: Screener) -> None:
    """Which unfamiliar-image checks this bundle calibrates, and which are missing (an older bundle)."""
    missing = screener.missing_checks()
    if missing:
        st.warning("This model's card has no calibration for these unfamiliar-image checks: " + "; ".join(missing)
                   + ". Images from another microscope are less well caught; reconvert it with the current "
                   "conversion stage.")  # fmt: skip
    else:
        st.markdown("Unfamiliar-image checks: image statistics, what the model sees (embedding), cell scale.")


def model_summary(screener: Screener) -> None:
    card = screener.bundle.card
    test = card["metrics"]["float_test"]
    st.markdown(
        f"**{card['name']}** · {card['training']['architecture']} · {card['input']['height']} px · "
        f"created {card['created']}  \n"
        f"Float test accuracy {test['accuracy']:.2%}, macro-F1 {test['macro']['f1']:.3f} on "
        f"{test['n']} held-out images · runtime {screener.classifier.runtime}  \n"
        f"sha256 `{screener.bundle.sha256}`"
    )
    int8 = card["metrics"].get("int8_test")
    if int8:
        st.markdown(f"int8 test accuracy {int8['accuracy']:.2%}, macro-F1 {int8['macro']['f1']:.3f}")
    shortcut_figures(card.get("shortcuts"))
    unfamiliarity_checks(screener)
    expected_images(screener)
    st.markdown("Classes: " + ", ".join(f"{c['display_name']} (severity {c['severity']})" for c in card["classes"]))
    if has_subtypes(c["malignant"] for c in card["classes"]):
        st.caption(SUBTYPE_NOTE)
    citation = card["training"]["dataset"].get("citation", [])
    if citation:
        st.caption("Trained on: " + card["training"]["dataset"]["name"] + ". " + " ".join(citation))
    drift = screener.bundle.folder / "drift_report.html"
    if drift.is_file() and is_inside(drift, screener.bundle.folder):
        report = drift.read_bytes()
        st.subheader("Quantization drift report (int8 vs float)")
        st.download_button("Download the drift report (HTML)", report, "drift_report.html", "text/html")
        # As a data: URL the report gets an origin of its own: HTML shipped in a site's bundle (which its
        # sha256 does not cover) cannot script the app's page, as it could if embedded same-origin.
        st.iframe("data:text/html;base64," + base64.b64encode(report).decode(), height=900)
    with st.expander("Model card (JSON)"):
        st.json(card, expanded=False)


def table_cell(text: object) -> str:
    """Text as one Markdown table cell (HTML escaped, one line, pipes escaped): the page's tables are Markdown (no
    dataframe elements, so a desktop build can leave pyarrow out)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


_cell = table_cell  # the short name this module's long table rows use


def shortcut_figures(shortcuts: dict | None) -> None:
    """Beside the test figures: the model on colour-standardised test images and what colour alone predicts.

    The training photos of each class differ in colour, so the headline figures can rest on colour; the card's
    ``shortcuts`` section (docs/model-card.md) measures how much. A card without it says so in one sentence.
    """
    if not shortcuts:
        st.markdown(NO_SHORTCUT_FIGURES)
        return
    robust_sets = shortcuts["colour_robust"]
    which = "int8_test" if robust_sets.get("int8_test") else "test"
    robust, model = robust_sets[which], "int8 model" if which == "int8_test" else "float model"
    baselines = shortcuts["baselines"]
    colour = baselines.get("colour")
    headline = (
        f"Colour-robust test accuracy {robust['accuracy']:.2%}, macro-F1 {robust['macro_f1']:.3f} "
        f"({model}, {robust['n']} images with each image's colour standardised)"
    )
    explained = (
        f"On the same test images with each image's colour standardised the {model} is right "
        f"{robust['accuracy']:.0%} of the time: that is closer to what to expect from another microscope."
    )
    if colour:
        headline += f" · colour-only baseline accuracy {colour['accuracy']:.2%}"
        explained = (
            f"Colour alone — {colour['features']} — predicts the class {colour['accuracy']:.0%} of the time: "
            f"the training photos of each class differ in colour. {explained}"
        )
    st.markdown(f"{headline}  \n{explained}")
    rows = "".join(
        f"| {_cell(name.replace('_', ' '))} | {_cell(b['features'])} | {b['accuracy']:.1%} | "
        + (f"{b['malignant_vs_benign_accuracy']:.1%}" if "malignant_vs_benign_accuracy" in b else "-")
        + " |\n"
        for name, b in baselines.items()
    )
    st.caption(
        "Shortcut baselines on the test split: what each predicts from the numbers named, without looking at a "
        "cell (fitted on the training split). The nearer a baseline comes to the model's figures, the less those "
        "figures show that the model reads the cells."
    )
    st.markdown(
        "| baseline | what it sees | test accuracy | malignant-vs-benign accuracy |\n|---|---|---|---|\n" + rows
    )


def folder_path(text: str) -> Path | None:
    """A folder path typed on the page, or None with a sentence on the page when it is not a folder here."""
    folder = Path(text).expanduser()
    if not folder.is_dir():
        st.error(f"{folder} is not a folder on this computer.")
        return None
    return folder
