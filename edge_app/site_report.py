"""The one-page site calibration report: gate verdict, cross-validated figures, learning curve, confusion matrix.

Written beside every site bundle (``calibration_report.html``) and shown by the app; one self-contained HTML
file: the two plots are SVG drawn here by hand (the app's environment has no matplotlib), no script, no font,
no image or style sheet from anywhere else. Everything comes from the site card (``render_report(card)``), so a
bundle's report can always be made again from its card.
"""

from __future__ import annotations

import math
from html import escape

PLOT_WIDTH, PLOT_HEIGHT = 600, 300
CURVE_SERIES = (  # (figure in the learning curve, label, colour, dashed)
    ("sensitivity", "malignant sensitivity", "#c62828", False),
    ("macro_f1", "macro-F1", "#1565c0", False),
    ("accuracy_answered", "accuracy of answered images", "#2e7d32", False),
    ("referral_rate", "referral rate", "#6d4c41", True),
)
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1080px;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.4em; }
.meta { color: #555; font-size: 0.92em; }
.verdict { padding: 12px 16px; border-radius: 6px; margin: 16px 0; }
.passed { background: #e8f5e9; border: 1px solid #2e7d32; }
.refused { background: #ffebee; border: 1px solid #c62828; }
.forced { background: #fff3e0; border: 1px solid #ef6c00; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.fail { color: #c62828; font-weight: 600; }
small { color: #666; }
"""


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_report(card: dict) -> str:
    """The report of a site card (``site`` section, classes, name) as one HTML document."""
    site = card["site"]
    validation, gate = site["validation"], site["gate"]
    cv, before = validation["cross_validated"], validation["before"]
    needs = gate.get("needs", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Site calibration: {escape(site['name'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Site calibration: {escape(site['name'])}</h1>",
        f"<p class='meta'>Made {escape(site['created'])} on the base model {escape(site['base']['name'])} (model "
        f"sha256 {escape(site['base']['model_sha256'][:16])}…) from {validation['images']} images of the site folder "
        f"'{escape(str(site['data'].get('folder', '')))}' ({validation['groups']} after grouping near-duplicates, "
        f"{len(site['data'].get('skipped', []))} files skipped) in {validation.get('seconds', 0):.0f} s. Colour "
        f"mapping {escape(site['colour_mapping']['method'])}; head {escape(site['head']['method'])} on the "
        f"{escape(site['features']['source'])} output ({site['features']['dimensions']} numbers).</p>",
        _verdict(gate),
        "<h2>Cross-validated on the site's own images</h2>",
        f"<p><small>{validation['folds']}-fold {escape(validation['method'])}: every figure comes from heads that did "
        "not see the image. Sensitivity, specificity and macro-F1 count every image by its top class, referred or "
        "not; referrals use every rule the app applies.</small></p>",
        _key_figures(cv, before, needs),
        "<div class='row'>",
        f"<div><h2>Learning curve</h2>{_curve_svg(validation['learning_curve'], needs)}</div>",
        f"<div><h2>Confusion matrix</h2>{_confusion_svg(cv['confusion_matrix'])}</div>",
        "</div>",
        "<h2>Per class</h2>",
        _per_class(cv["per_class"], card["classes"], site["data"]["images_per_class"]),
        "<h2>How it was fitted</h2>",
        _details(card, validation),
        _skipped(site["data"].get("skipped", []), validation.get("notes", [])),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _verdict(gate: dict) -> str:
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in gate["reasons"])
    if gate["passed"]:
        return "<div class='verdict passed'><strong>Gate passed</strong>: the site bundle may be used.</div>"
    if gate["forced"]:
        return (
            "<div class='verdict forced'><strong>Gate failed, written anyway (--force)</strong>: every result from "
            f"this bundle carries a warning; its results are not validated.<ul>{reasons}</ul></div>"
        )
    return f"<div class='verdict refused'><strong>Gate failed</strong>: no bundle was written.<ul>{reasons}</ul></div>"


def _key_figures(cv: dict, before: dict, needs: dict) -> str:
    def mark(value: float | None, need: float | None) -> str:
        text = _figure(value)
        return f"<span class='fail'>{text}</span>" if value is not None and need and value < need else text

    rows = [
        ("Malignant sensitivity", mark(cv["sensitivity"], needs.get("sensitivity")),
         f"≥ {needs['sensitivity']:.2f}" if "sensitivity" in needs else ""),
        ("Macro-F1", mark(cv["macro_f1"], needs.get("macro_f1")),
         f"≥ {needs['macro_f1']:.2f}" if "macro_f1" in needs else ""),
        ("Specificity", _figure(cv["specificity"]), ""),
        ("Accuracy of answered images", _figure(cv["accuracy_answered"]), ""),
        ("Referral rate", _percent(cv["referral_rate"]), ""),
        ("Malignant images answered benign", str(cv["malignant_answered_benign"]), ""),
    ]  # fmt: skip
    body = "".join(f"<tr><td>{name}</td><td>{value}</td><td>{need}</td></tr>" for name, value, need in rows)
    table = f"<table><tr><th>Figure</th><th>Site bundle</th><th>Gate</th></tr>{body}</table>"
    comparison = (
        "<table><tr><th>On the site's images</th><th>Base bundle as it is</th><th>Site bundle (cross-validated)</th>"
        f"</tr><tr><td>Referred</td><td>{_percent(before['referral_rate'])}</td><td>{_percent(cv['referral_rate'])}"
        f"</td></tr><tr><td>Answered</td><td>{before['answered']}</td><td>{cv['answered']}</td></tr>"
        f"<tr><td>Malignant vs benign right, of answered</td><td>{_figure(before['malignancy_accuracy_answered'])}"
        f"</td><td>{_figure(cv['malignancy_accuracy_answered'])}</td></tr><tr><td>Malignant answered benign</td>"
        f"<td>{before['malignant_answered_benign']}</td><td>{cv['malignant_answered_benign']}</td></tr></table>"
    )
    reasons = cv.get("referred_by", {})
    referred = ", ".join(f"{escape(k)} {v}" for k, v in reasons.items() if v) or "none"
    return (
        f"<div class='row'><div>{table}</div><div>{comparison}<small>Referred by (an image may have several "
        f"reasons): {referred}.</small></div></div>"
    )


def _per_class(per_class: dict, classes: list[dict], counts: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(c['display_name'])}{' (malignant)' if c['malignant'] else ''}</td>"
        f"<td>{counts.get(c['name'], 0)}</td><td>{_figure(per_class[c['name']]['precision'])}</td>"
        f"<td>{_figure(per_class[c['name']]['recall'])}</td><td>{_figure(per_class[c['name']]['f1'])}</td></tr>"
        for c in classes
    )
    return f"<table><tr><th>Class</th><th>Images</th><th>Precision</th><th>Recall</th><th>F1</th></tr>{rows}</table>"


def _details(card: dict, validation: dict) -> str:
    calibration = validation["calibration"]
    unfamiliar = validation["unfamiliarity"]
    regularisation = card["site"]["head"].get("regularisation", {})
    strength = ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in regularisation.items() if k != "grid")
    rates = ", ".join(f"{escape(k)} {_percent(v)}" for k, v in unfamiliar["referred_out_of_fold"].items())
    band = unfamiliar.get("scale_band")
    scale = f"{band['low']:.2f} to {band['high']:.2f} of the site's typical cell size" if band else "not fitted"
    return (
        "<table>"
        f"<tr><td>Head</td><td>{escape(card['site']['head']['method'])} ({strength})</td></tr>"
        f"<tr><td>Temperature</td><td>{calibration['temperature']:.3f}</td></tr>"
        f"<tr><td>Abstain threshold</td><td>{calibration['abstain_threshold']:.3f} (benign answers need "
        f"{card['calibration']['benign_min_probability']:.2f})</td></tr>"
        f"<tr><td>Image-statistics threshold</td><td>{unfamiliar['image_threshold']:.2f}</td></tr>"
        f"<tr><td>Feature-unfamiliarity threshold</td><td>{unfamiliar['feature_threshold']:.4f}</td></tr>"
        f"<tr><td>Cell-scale band</td><td>{scale}</td></tr>"
        f"<tr><td>Site images each check refers (out-of-fold)</td><td>{rates}</td></tr>"
        "</table>"
    )


def _skipped(skipped: list[dict], notes: list[str]) -> str:
    parts = []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    if skipped:
        items = "".join(f"<li>{escape(s['path'])}: {escape(s['reason'])}</li>" for s in skipped)
        parts.append(f"<h2>Files skipped ({len(skipped)})</h2><ul>{items}</ul>")
    return "\n".join(parts)


# ---------------------------------------------------------------- plots


def _curve_svg(curve: list[dict], needs: dict) -> str:
    """Figures against images per class (log scale), with the gate's lines."""
    left, right, top, bottom = 48, 200, 14, 40
    width, height = PLOT_WIDTH - left - right, PLOT_HEIGHT - top - bottom
    sizes = [p["images_per_class"] for p in curve]
    low, high = math.log(min(sizes)), math.log(max(sizes))
    span = high - low or 1.0

    def x(n: float) -> float:
        return left + (math.log(n) - low) / span * width if high > low else left + width / 2

    def y(value: float) -> float:
        return top + (1 - value) * height

    out = [f"<svg width='{PLOT_WIDTH}' height='{PLOT_HEIGHT}' "
           "role='img' aria-label='learning curve' font-size='11'>",
           f"<rect x='{left}' y='{top}' width='{width}' height='{height}' fill='#fafafa' stroke='#999'/>"]  # fmt: skip
    for tick in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
        out.append(f"<line x1='{left}' x2='{left + width}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' stroke='#e0e0e0'/>"
                   f"<text x='{left - 6}' y='{y(tick) + 4:.1f}' text-anchor='end'>{tick:.2f}</text>")  # fmt: skip
    for n in sizes:
        out.append(f"<text x='{x(n):.1f}' y='{top + height + 16}' text-anchor='middle'>{n}</text>")
    out.append(f"<text x='{left + width / 2}' y='{PLOT_HEIGHT - 6}' text-anchor='middle'>images per class "
               "(the last point: every image)</text>")  # fmt: skip
    for key, colour in (("sensitivity", "#c62828"), ("macro_f1", "#1565c0")):
        if key in needs:
            out.append(f"<line x1='{left}' x2='{left + width}' y1='{y(needs[key]):.1f}' y2='{y(needs[key]):.1f}' "
                       f"stroke='{colour}' stroke-width='1' stroke-dasharray='2 3'/>")  # fmt: skip
    for row, (key, label, colour, dashed) in enumerate(CURVE_SERIES):
        points = [(x(p["images_per_class"]), y(p[key])) for p in curve if p.get(key) is not None]
        dash = " stroke-dasharray='6 4'" if dashed else ""
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dash}/>")
            out += [f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3' fill='{colour}'/>" for px, py in points]
        ly = top + 14 + row * 18
        out.append(f"<line x1='{left + width + 12}' x2='{left + width + 32}' y1='{ly - 4}' y2='{ly - 4}' "
                   f"stroke='{colour}' stroke-width='2'{dash}/><text x='{left + width + 36}' y='{ly}'>"
                   f"{escape(label)}</text>")  # fmt: skip
    out.append(f"<text x='{left + width + 12}' y='{top + 14 + len(CURVE_SERIES) * 18 + 4}'>dotted: the gate</text>")
    out.append("</svg>")
    return "".join(out)


def _confusion_svg(confusion: dict) -> str:
    """Counts, each cell shaded by its share of the true class's images (rows: true class)."""
    matrix = confusion["matrix"]
    count = len(matrix)
    cell = max(36, min(72, 300 // max(count, 1)))
    label_width, header = 130, 28
    size_x, size_y = label_width + cell * count + 10, header + cell * count + 40
    labels = list(confusion["labels"])  # the class folders' names: short, and what the site filed images under
    out = [f"<svg width='{size_x}' height='{size_y}' role='img' "
           "aria-label='confusion matrix' font-size='11'>"]  # fmt: skip
    for column, label in enumerate(labels):
        out.append(f"<text x='{label_width + column * cell + cell / 2}' y='{header - 8}' text-anchor='middle'>"
                   f"{escape(label[:12])}</text>")  # fmt: skip
    for row, values in enumerate(matrix):
        total = sum(values) or 1
        ty = header + row * cell
        out.append(f"<text x='{label_width - 6}' y='{ty + cell / 2 + 4}' text-anchor='end'>{escape(labels[row][:18])}"
                   "</text>")  # fmt: skip
        for column, value in enumerate(values):
            share = value / total
            shade = (int(255 - 180 * share), int(255 - 120 * share), 255) if row == column else (
                255, int(255 - 170 * share), int(255 - 170 * share))  # fmt: skip
            ink = "#fff" if share > 0.6 else "#222"
            out.append(f"<rect x='{label_width + column * cell}' y='{ty}' width='{cell}' height='{cell}' "
                       f"fill='rgb{shade}' stroke='#999'/><text x='{label_width + column * cell + cell / 2}' "
                       f"y='{ty + cell / 2 + 4}' text-anchor='middle' fill='{ink}'>{value}</text>")  # fmt: skip
    out.append(f"<text x='{label_width + cell * count / 2}' y='{size_y - 10}' text-anchor='middle'>"
               "predicted class (rows: true class)</text></svg>")  # fmt: skip
    return "".join(out)
