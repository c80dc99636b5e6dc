"""Targets (met or missed, with the figure) and the Markdown table of a benchmark run."""

from __future__ import annotations

SHIPPED = "int8 TFLite, LiteRT"
FLOAT_TFLITE = "float32 TFLite, LiteRT"
KERAS = "float Keras, TensorFlow"
COLOUR_ROBUST_LINE = (
    "Colour-robust columns: the same images with each image's colour mean and spread set to the bundle card's "
    "`shortcuts.colour_target` (the training set's average); a model that keeps its figures there reads the cells, "
    "not the photo session's colour."
)
NO_COLOUR_TARGET_LINE = (
    "Colour-robust columns: - (the bundle's card has no `shortcuts.colour_target`; its run was trained before "
    "training wrote one)."
)


def _get(results: dict, variant: str, *keys: str) -> float | None:
    value = results["variants"].get(variant, {})
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def _threads(results: dict, variant: str) -> str:
    return "threads_0" if "threads_0" in results["variants"].get(variant, {}) else "threads_1"


def targets(results: dict) -> list[dict]:
    """The issue's targets for the shipped default on this machine, each with its measured figure."""
    e2e = _get(results, SHIPPED, "threads_1", "end_to_end", "p50_ms")
    int8_invoke = _get(results, SHIPPED, "threads_1", "invoke", "p50_ms")
    float_invoke = _get(results, FLOAT_TFLITE, "threads_1", "invoke", "p50_ms")
    keras_e2e = _get(results, KERAS, _threads(results, KERAS), "end_to_end", "p50_ms")
    rss = results.get("core", {}).get("peak_rss_mb")
    rows = [
        ("end-to-end p50, 1 thread", e2e, "<= 5 ms", e2e is not None and e2e <= 5.0, f"{e2e:.2f} ms" if e2e else None),
        ("int8 invoke vs float32 TFLite invoke (1 thread)", None if not (int8_invoke and float_invoke)
         else int8_invoke / float_invoke, "ratio <= 1.0", bool(int8_invoke and float_invoke
         and int8_invoke <= float_invoke), f"{int8_invoke / float_invoke:.2f}x" if int8_invoke and float_invoke
         else None),
        ("speed-up over the float Keras model (end to end)", None if not (keras_e2e and e2e) else keras_e2e / e2e,
         ">= 20x", bool(keras_e2e and e2e and keras_e2e / e2e >= 20), f"{keras_e2e / e2e:.1f}x" if keras_e2e and e2e
         else None),
        ("inference core peak RSS", rss, "<= 150 MB", rss is not None and rss <= 150, f"{rss:.0f} MB" if rss else None),
    ]  # fmt: skip
    return [
        {"target": name, "value": value, "goal": goal, "met": met if value is not None else None, "shown": shown}
        for name, value, goal, met, shown in rows
    ]


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"# Benchmark {results['created']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['system']}, Python {machine['python']}, "
        f"ai-edge-litert {machine.get('ai-edge-litert', '-')}, TensorFlow {machine.get('tensorflow-cpu', '-')}.",
        f"Images: {results['images']} of the manifest's test split; {results['repeats']} repetitions per latency "
        f"figure (medians; p95 in brackets). Command: `{results['command']}`.",
        "",
        "| variant | accuracy | macro-F1 | colour-robust accuracy | colour-robust macro-F1 | end-to-end 1 thread, ms "
        "| end-to-end 2 threads, ms | invoke 1 thread, ms | invoke 2 threads, ms | throughput 2 threads, img/s "
        "| size, MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        if "skipped" in v:
            lines.append(f"| {name} | skipped: {v['skipped']} |||||||||| ")
            continue
        one = "threads_0" if "threads_0" in v else "threads_1"
        two = "threads_2" if "threads_2" in v else one
        robust = v.get("colour_robust", {})

        def lat(block: str, kind: str, v: dict = v) -> str:
            figures = v.get(block, {}).get(kind)
            return "-" if not figures else f"{figures['p50_ms']:.2f} ({figures['p95_ms']:.2f})"

        lines.append(
            f"| {name}{' (TF default threads)' if one == 'threads_0' else ''} | {_cell(v.get('accuracy'), '.4f')} | "
            f"{_cell(v.get('macro_f1'), '.4f')} | {_cell(robust.get('accuracy'), '.4f')} | "
            f"{_cell(robust.get('macro_f1'), '.4f')} | {lat(one, 'end_to_end')} | {lat(two, 'end_to_end')} | "
            f"{lat(one, 'invoke')} | {lat(two, 'invoke')} | {_cell(v[two].get('throughput_images_per_s'), '.0f')} | "
            f"{_cell(v.get('model_bytes', 0) / 1e6 if v.get('model_bytes') else None, '.2f')} |"
        )
    core, app = results.get("core", {}), results.get("app", {})
    heat = core.get("heatmap", {})
    lines += [
        "",
        COLOUR_ROBUST_LINE if results.get("colour_target") else NO_COLOUR_TARGET_LINE,
        f"Inference core (fresh process): import {_cell(core.get('import_s'), '.2f')} s, import + model load "
        f"{_cell(core.get('import_and_load_s'), '.2f')} s, peak RSS {_cell(core.get('peak_rss_mb'), '.0f')} MB "
        f"after one classification and the heatmaps; TensorFlow imported: {core.get('tensorflow_imported', '-')}.",
        f"Occlusion heatmap: {_cell(heat.get('p50_ms'), '.0f')} ms median ({heat.get('n', 0)} runs). "
        f"The app's whole screening path (decode, preprocess, image checks, invoke, result; 1 thread): "
        f"{_cell(core.get('screen_bytes', {}).get('p50_ms'), '.2f')} ms median.",
        f"App (Streamlit page, headless, one classification): peak RSS {_cell(app.get('peak_rss_mb'), '.0f')} MB"
        + (f" ({app['skipped']})" if "skipped" in app else "")
        + (f" (error: {app['error']})" if "error" in app else ""),
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {t['shown'] or '-'} | {met} |")
    return "\n".join(lines) + "\n"
