"""The drift report: ``drift_report.json`` and a self-contained ``drift_report.html``.

The HTML page is made from the JSON alone (figures are matplotlib PNGs embedded as base64, no
scripts, no external links), so it can be mailed or archived with the bundle and opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

JSON_FILE = "drift_report.json"
HTML_FILE = "drift_report.html"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.8em 1em;border-radius:6px;font-weight:600}.pass{background:#e6f4ea;border:1px solid #2e7d32}
.fail{background:#fdecea;border:1px solid #c62828}.bad{color:#c62828;font-weight:600}.ok{color:#2e7d32}
img{max-width:100%}code{font-size:.88em;word-break:break-all}.small{font-size:.85em;color:#555}
"""


def _png(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def confusion_figure(float_matrix: list[list[int]], int8_matrix: list[list[int]], labels: list[str]) -> str:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for axis, matrix, title in zip(axes, (float_matrix, int8_matrix), ("Float (Keras)", "Int8 (LiteRT)"), strict=True):
        ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(
            ax=axis, cmap="Blues", colorbar=False, values_format="d"
        )
        axis.set_title(f"{title}, test split")
    figure.tight_layout()
    return _png(figure)


def per_class_figure(float_metrics: dict, int8_metrics: dict, labels: list[str]) -> str:
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    x = np.arange(len(labels))
    for axis, metric in zip(axes, ("precision", "recall", "f1"), strict=True):
        ours = [float_metrics["per_class"][n][metric] for n in labels]
        theirs = [int8_metrics["per_class"][n][metric] for n in labels]
        axis.bar(x - 0.2, ours, 0.4, label="float", color="#5b8def")
        axis.bar(x + 0.2, theirs, 0.4, label="int8", color="#f28e2b")
        axis.set_xticks(x, labels, rotation=20)
        axis.set_title(metric.upper() if metric == "f1" else metric)
        low = min([*ours, *theirs, 1.0])
        axis.set_ylim(max(0.0, low - 0.1), 1.005)
    axes[0].legend(loc="lower left")
    figure.tight_layout()
    return _png(figure)


def scatter_figure(per_image: list[dict], labels: list[str]) -> str:
    figure, axis = plt.subplots(figsize=(5.6, 5.4))
    floats = np.array([row["float_probabilities"] for row in per_image]).reshape(-1, len(labels))
    ints = np.array([row["int8_probabilities"] for row in per_image]).reshape(-1, len(labels))
    for index, name in enumerate(labels):
        axis.scatter(floats[:, index], ints[:, index], s=10, alpha=0.6, label=name)
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    axis.set_xlabel("float calibrated probability")
    axis.set_ylabel("int8 calibrated probability")
    axis.set_title("Every test image x class")
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def layers_figure(layers: list[dict], count: int = 20) -> str:
    top = layers[:count][::-1]
    figure, axis = plt.subplots(figsize=(9, 0.32 * len(top) + 1.2))
    names = [f"#{layer['rank']} {layer['op']} {layer['layer'][-45:]}" for layer in top]
    axis.barh(names, [layer["rmse_over_scale"] for layer in top], color="#c0504d")
    axis.axvline(0.29, color="grey", linestyle=":", label="rounding noise (0.29)")
    axis.set_xlabel("rmse / scale (quantization steps)")
    axis.legend(loc="lower right", fontsize=8)
    axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    return _png(figure)


def _table(header: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            cls = ' class="num"' if index in numeric else ""
            text = value if isinstance(value, _Raw) else html.escape(str(value))
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _pts(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _mark(passed: bool) -> _Raw:
    return _Raw('<span class="ok">pass</span>' if passed else '<span class="bad">FAIL</span>')


def render_html(report: dict) -> str:
    """The whole page from the JSON report: its sections in order, each a piece of HTML."""
    sections = (
        _header(report),
        _summary(report),
        _colour_robust(report),
        _gate(report),
        _confusion(report),
        _per_class(report),
        _probabilities(report),
        _disagreements(report),
        _int8_model(report),
        _ops(report),
        _layers(report),
        _remedy(report),
        _provenance(report),
        "</body></html>",
    )
    return "\n".join(section for section in sections if section)


def _header(report: dict) -> str:
    """Document head, title, where the figures come from, and the gate's verdict."""
    drift, gate, versions = report["drift"], report["gate"], report["versions"]
    model = html.escape(report["model"])
    return "\n".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>Int8 drift report: {model}</title><style>{_STYLE}</style></head><body>",
            f"<h1>Int8 drift report: {model}</h1>",
            f"<p class='small'>{html.escape(report['created'])} &middot; run <code>{html.escape(report['run'])}</code>"
            f" &middot; {drift['n']} test images from the run's manifest &middot; float reference: Keras "
            f"{html.escape(versions['keras'])}; int8: ai-edge-litert {html.escape(versions['ai_edge_litert'])}</p>",
            f"<div class='verdict {'pass' if gate['passed'] else 'fail'}'>{html.escape(gate['sentence'])}</div>",
        ]
    )


def _summary(report: dict) -> str:
    """Both models' headline metrics side by side, then the drift figures."""
    return "\n".join(["<h2>Summary</h2>", _metrics_table(report["drift"]), _drift_table(report)])


def _metrics_table(drift: dict) -> str:
    fm, im = drift["float_metrics"], drift["int8_metrics"]
    rows = [
        ["accuracy", _pct(fm["accuracy"]), _pct(im["accuracy"]), _pts(drift["accuracy"]["delta_points"])],
        ["macro-F1", _pct(fm["macro"]["f1"]), _pct(im["macro"]["f1"]), _pts(drift["macro_f1"]["delta_points"])],
        ["macro precision", _pct(fm["macro"]["precision"]), _pct(im["macro"]["precision"]), ""],
        ["macro recall", _pct(fm["macro"]["recall"]), _pct(im["macro"]["recall"]), ""],
    ]
    screening_f = drift["screening"]["float"] or {}
    screening_i = drift["screening"]["int8"] or {}
    if screening_f and screening_i:
        delta = drift["screening"].get("delta_points", {})
        rows += [
            [
                "sensitivity (malignant caught)",
                _pct(screening_f.get("sensitivity")),
                _pct(screening_i.get("sensitivity")),
                _pts(delta.get("sensitivity")),
            ],
            [
                "specificity (benign cleared)",
                _pct(screening_f.get("specificity")),
                _pct(screening_i.get("specificity")),
                _pts(delta.get("specificity")),
            ],
        ]
    return _table(["metric", "float", "int8", "change (points)"], rows, {1, 2, 3})


def _drift_table(report: dict) -> str:
    drift = report["drift"]
    prob, logit = drift["probability_difference"], drift["logit_difference"]
    return _table(
        ["drift figure", "value"],
        [
            ["top-1 agreement", f"{drift['agreement']:.2%} ({drift['disagreement_count']} disagree)"],
            ["mean |p_float - p_int8| (calibrated)", f"{prob['mean_abs']:.4f}"],
            ["max |p_float - p_int8| (calibrated)", f"{prob['max_abs']:.4f} ({prob['max_abs_image']})"],
            ["mean / max |logit difference|", f"{logit['mean_abs']:.4f} / {logit['max_abs']:.4f}"],
            ["temperature applied", f"{report['temperature']:.4f}"],
            *_abstain_rows(drift.get("abstain")),
        ],
    )


def _colour_robust(report: dict) -> str:
    """Both models as is and on colour-standardised test images; nothing for a run without a colour target."""
    robust = report["drift"].get("colour_robust")
    if not robust:
        return ""
    as_is = robust["as_is"]
    rows = [
        [label, *(_pct(figures[model].get(key)) for model in ("float", "int8") for figures in (as_is, robust))]
        for label, key in (
            ("accuracy", "accuracy"),
            ("macro-F1", "macro_f1"),
            ("sensitivity (malignant caught)", "sensitivity"),
            ("specificity (benign cleared)", "specificity"),
        )
    ]
    header = ["metric", "float as is", "float colour-robust", "int8 as is", "int8 colour-robust"]
    note = robust["note"]
    return "\n".join(
        [
            "<h2>Colour-robust figures</h2>",
            f"<p>{html.escape(note[0].upper() + note[1:])}; {robust['int8']['n']} test images.</p>",
            _table(header, rows, {1, 2, 3, 4}),
        ]
    )


def _gate(report: dict) -> str:
    """Every check the gate made, with its limit and flag."""
    rows = [
        [
            c["check"],
            f"{c['value']:.3f}" if isinstance(c["value"], float) else c["value"],
            c["limit"],
            c["flag"],
            _mark(c["passed"]),
        ]
        for c in report["gate"]["checks"]
    ]
    return "\n".join(["<h2>Gate</h2>", _table(["check", "value", "limit", "flag", "result"], rows, {1})])


def _confusion(report: dict) -> str:
    drift = report["drift"]
    figure = confusion_figure(
        drift["float_metrics"]["confusion_matrix"]["matrix"],
        drift["int8_metrics"]["confusion_matrix"]["matrix"],
        report["classes"],
    )
    return "\n".join(["<h2>Confusion matrices (rows: true class, columns: predicted)</h2>", _img(figure, "cm")])


def _per_class(report: dict) -> str:
    """Per-class bars and each class's recall and F1, float vs int8."""
    drift, labels = report["drift"], report["classes"]
    fm, im = drift["float_metrics"], drift["int8_metrics"]
    rows = []
    for name in labels:
        recall = drift["per_class_recall"][name]
        rows.append(
            [
                name,
                recall["support"],
                _pct(recall["float"]),
                _pct(recall["int8"]),
                _pts(recall["delta_points"]),
                _pct(fm["per_class"][name]["f1"]),
                _pct(im["per_class"][name]["f1"]),
            ]
        )
    header = ["class", "support", "recall float", "recall int8", "change (points)", "F1 float", "F1 int8"]
    return "\n".join(
        [
            "<h2>Per-class metrics</h2>",
            _img(per_class_figure(fm, im, labels), "per-class bars"),
            _table(header, rows, {1, 2, 3, 4, 5, 6}),
        ]
    )


def _probabilities(report: dict) -> str:
    return "\n".join(
        [
            "<h2>Calibrated probabilities, float vs int8</h2>",
            _img(scatter_figure(report["per_image"], report["classes"]), "scatter"),
        ]
    )


def _disagreements(report: dict) -> str:
    """The test images whose top class differs between the two models (or a line saying there are none)."""
    disagreements = report["drift"]["disagreements"]
    if not disagreements:
        body = "<p>None: both models give the same top class on every test image.</p>"
    else:
        body = _table(
            ["image", "true", "float says", "int8 says", "p float", "p int8"],
            [
                [
                    d["path"],
                    d["true"],
                    d["float"],
                    d["int8"],
                    f"{d['float_probability']:.3f}",
                    f"{d['int8_probability']:.3f}",
                ]
                for d in disagreements
            ],
            {4, 5},
        )
    return "\n".join(["<h2>Images on which float and int8 disagree</h2>", body])


def _int8_model(report: dict) -> str:
    """What the int8 model is: integer-only or not, size, hash, I/O, calibration data, latency."""
    drift, tflite = report["drift"], report["tflite"]
    ops = tflite["inspection"]
    rows = [
        ["integer-only", "yes" if ops["integer_only"] else f"NO: {len(ops['float_ops'])} ops use float"],
        [
            "size",
            f"{tflite['size_bytes']:,} bytes (float32 TFLite {report['sizes']['float32_tflite']:,}, "
            f"Keras {report['sizes']['keras']:,})",
        ],
        ["sha256", _Raw(f"<code>{html.escape(tflite['sha256'])}</code>")],
        ["input", _io_text(tflite["input"])],
        ["output", _io_text(tflite["output"])],
        ["representative dataset", _rep_text(tflite["representative_dataset"])],
        ["float layers kept (remedy)", ", ".join(tflite["float_layers"]) or "none"],
        [
            "LiteRT latency (this machine)",
            f"{drift['ms_per_image']:.2f} ms/image int8, "
            f"{report['float32_tflite_vs_keras']['ms_per_image']:.2f} ms/image float32 TFLite",
        ],
        ["conversion time", f"{report['timings'].get('total_seconds', 0):.1f} s"],
    ]
    return "\n".join(["<h2>The int8 model</h2>", _table(["", "value"], rows)])


def _ops(report: dict) -> str:
    """The int8 model's ops, and which of them run in float."""
    ops = report["tflite"]["inspection"]
    float_names = {op["op"] for op in ops["float_ops"]}
    parts = [
        f"<p>{ops['op_count']} ops; tensor types: "
        + html.escape(", ".join(f"{k} {v}" for k, v in ops["tensor_types"].items()))
        + "</p>",
        _table(
            ["op", "count", "runs in float"],
            [[name, count, "yes" if name in float_names else ""] for name, count in ops["ops"].items()],
            {1},
        ),
    ]
    if ops["float_ops"]:
        parts.append(
            _table(
                ["#", "float op", "output tensor", "tensor types"],
                [[op["index"], op["op"], op["output"][-90:], ", ".join(op["types"])] for op in ops["float_ops"]],
            )
        )
    return "\n".join(parts)


def _layers(report: dict) -> str:
    """The per-layer quantization error report, its failure note, or nothing when it did not run."""
    layers = report.get("layers")
    if not layers:
        return ""
    if "error" in layers:
        return f"<h2>Per-layer quantization error</h2><p>Not available: {html.escape(layers['error'])}</p>"
    rows = [
        [
            layer["rank"],
            layer["op"],
            layer["layer"],
            f"{layer['rmse_over_scale']:.3f}",
            f"{layer['mean_abs_error']:.4g}",
            f"{layer['max_abs_error']:.4g}",
            f"{layer['scale']:.4g}",
            _Raw(f"<code class='small'>{html.escape(layer['tensor_name'][:200])}</code>"),
        ]
        for layer in layers["layers"][:25]
    ]
    header = ["rank", "op", "layer", "rmse/scale", "mean |error|", "max |error|", "scale", "full tensor name"]
    return "\n".join(
        [
            "<h2>Per-layer quantization error (QuantizationDebugger)</h2>",
            f"<p>{html.escape(layers['metric'])}. {layers['samples']} representative images, "
            f"{layers['seconds']:.1f} s. Worst first; <code>--float-layers N</code> keeps the N worst in float.</p>",
            _img(layers_figure(layers["layers"]), "layers"),
            _table(header, rows, {0, 3, 4, 5, 6}),
        ]
    )


def _remedy(report: dict) -> str:
    """Full-integer vs with the worst layers in float: what ``--float-layers`` bought and cost."""
    remedy = report.get("remedy")
    if not remedy:
        return ""
    before, after = remedy["full_integer"], remedy["with_float_layers"]
    rows = [
        ["integer-only", before["integer_only"], after["integer_only"]],
        ["float ops", before["float_op_count"], after["float_op_count"]],
        ["size (bytes)", f"{before['size_bytes']:,}", f"{after['size_bytes']:,}"],
        ["LiteRT ms per image", f"{before['ms_per_image']:.2f}", f"{after['ms_per_image']:.2f}"],
        ["top-1 agreement", _pct(before["agreement"]), _pct(after["agreement"])],
        ["accuracy", _pct(before["accuracy"]), _pct(after["accuracy"])],
        ["macro-F1", _pct(before["macro_f1"]), _pct(after["macro_f1"])],
        [
            "largest recall drop (points)",
            f"{before['max_recall_drop_points']:.2f}",
            f"{after['max_recall_drop_points']:.2f}",
        ],
        [
            "mean / max probability difference",
            f"{before['probability_difference_mean']:.4f} / {before['probability_difference_max']:.4f}",
            f"{after['probability_difference_mean']:.4f} / {after['probability_difference_max']:.4f}",
        ],
        ["gate", before["gate"], after["gate"]],
    ]
    return "\n".join(
        [
            f"<h2>Remedy: {remedy['float_layers']} worst layers kept in float</h2>",
            f"<p>Cost: {html.escape(remedy['cost'])}. Re-quantization and evaluation took "
            f"{remedy['seconds']:.1f} s.</p>",
            _table(["", "full-integer int8", f"with --float-layers {remedy['float_layers']}"], rows),
        ]
    )


def _provenance(report: dict) -> str:
    rows = [[k, v] for k, v in report["versions"].items()] + [["timings (s)", report["timings"]]]
    return "<h2>Provenance</h2>" + _table(["", ""], rows)


def _abstain_rows(abstain: dict | None) -> list[list[str]]:
    if not abstain:
        return []
    return [
        [
            f"referred (top probability < {abstain['threshold']:.2f}), float / int8",
            f"{abstain['float']['referred']} / {abstain['int8']['referred']}",
        ],
        ["images referred by one model but not the other", str(abstain["decisions_differ"])],
    ]


def _io_text(detail: dict) -> str:
    return (
        f"{detail['dtype']} {detail['shape']}, scale {detail['scale']}, zero point {detail['zero_point']}"
        if detail
        else "?"
    )


def _rep_text(rep: dict) -> str:
    per_class = ", ".join(f"{k} {v}" for k, v in rep["per_class"].items())
    return f"{rep['size']} images from the {rep['split']} split, stratified ({per_class}), seed {rep['seed']}"


def write_reports(report: dict, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / JSON_FILE, folder / HTML_FILE
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
