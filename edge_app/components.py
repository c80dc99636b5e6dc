"""Small Streamlit components of the page. All decisions are made in the inference core; these only show.

No dataframe or chart elements (they pull pyarrow, pandas and altair into the desktop build):
tables and bars are plain Markdown/HTML.
"""

from __future__ import annotations

import base64
import html
import json
import random
from dataclasses import dataclass

import streamlit as st
from PIL import Image

from edge_app.bundle import is_inside
from edge_app.classify import Finding, Result
from edge_app.explain import overlay
from edge_app.fhir import fhir_bundle
from edge_app.records import (
    DISCLAIMER,
    REVIEW_CHOICES,
    SUBTYPE_NOTE,
    History,
    case_report_html,
    has_subtypes,
    subtype_note,
)
from edge_app.screening import Screener

NO_SHORTCUT_FIGURES = (
    "This model's colour-robust figures were not measured (its card has no `shortcuts` section), so how much "
    "its test figures owe to the colour of the training photos is unknown."
)


@dataclass
class Case:
    """One screened image as the page keeps it between reruns."""

    key: str
    result: Result
    image: Image.Image
    when: str
    history_id: int | None = None
    review: str = ""
    note: str = ""


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


def result_card(screener: Screener, case: Case, history: History) -> None:
    """Preview, verdict, finding (malignancy, severity, probabilities), heatmap on demand, review, downloads."""
    result, image, key = case.result, case.image, case.key
    with st.container(border=True):
        left, right = st.columns([1, 2])
        with left:
            st.image(image, caption=result.source, width="stretch")
        with right:
            verdict_banner(result)
            finding_details(result)
            if st.toggle("Show what the model looked at", key=f"heat-{key}"):
                heatmap = screener.explain(image)
                st.image(overlay(image, heatmap.heat), width="stretch",
                         caption="Occlusion heatmap: bright = hiding this region weakens the result most")  # fmt: skip
            model_details(result)
            review_controls(case, history)
            stem = result.source.rsplit(".", 1)[0]
            report, fhir = st.columns(2)
            report.download_button(
                "Printable report (HTML)",
                case_report_html(result, image, case.when, screener.bundle.card.get("created", "")),
                file_name=f"smearscope-{stem}.html",
                mime="text/html",
                key=f"report-{key}",
            )
            fhir.download_button(
                "FHIR R4 export (JSON)",
                json.dumps(fhir_bundle(result, case.when, case.review, case.note), indent=2),
                file_name=f"smearscope-{stem}.fhir.json",
                mime="application/fhir+json",
                key=f"fhir-{key}",
            )


def review_controls(case: Case, history: History) -> None:
    """The technician's confirm/override and note, saved into the history row of this case."""
    with st.expander("Technician review" + (f": {case.review}" if case.review else "")):
        review = st.selectbox("Review", REVIEW_CHOICES, index=REVIEW_CHOICES.index(case.review),
                              format_func=lambda c: c or "(not reviewed)", key=f"review-{case.key}")  # fmt: skip
        note = st.text_input("Note", value=case.note, key=f"note-{case.key}")
        if st.button("Save review", key=f"save-{case.key}"):
            case.review, case.note = review, note
            if case.history_id is not None and history.review(case.history_id, review, note):
                st.success("Review saved in the history.")
            else:
                st.info("Review kept for this session's exports (history is off).")


def results_table(rows: list[dict]) -> None:
    """Export rows (``records.csv_row`` or history rows) as a table; a referred row shows "-" for every finding."""
    header = "| image | verdict | confidence | P(malignant) | severity |\n|---|---|---|---|---|\n"
    body = "".join(
        f"| {html.escape(str(r['source']))} | {html.escape(str(r['verdict']))} | {_percent(r, 'confidence')} | "
        f"{_percent(r, 'p_malignant')} | {'-' if _referred(r) else r['severity']} |\n"
        for r in rows
    )
    st.markdown(header + body)


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


def _cell(text: object) -> str:
    """Card text as one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


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
