"""Targets (met or missed, with the figure) and the Markdown table of a benchmark run."""

from __future__ import annotations

SHIPPED = "int8 TFLite, LiteRT"
FLOAT_TFLITE = "float32 TFLite, LiteRT"
KERAS_PREFIX = "float Keras"  # every form of the float Keras model (eager, tf.function, XLA, predict_on_batch)
KERAS_EAGER = "float Keras, eager model(x)"
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


def fastest_keras(results: dict) -> tuple[str | None, float | None]:
    """The float Keras form with the lowest median end-to-end latency, and that latency: the honest baseline."""
    measured = [
        (p50, name)
        for name in results["variants"]
        if name.startswith(KERAS_PREFIX)
        and (p50 := _get(results, name, _threads(results, name), "end_to_end", "p50_ms")) is not None
    ]
    if not measured:
        return None, None
    p50, name = min(measured)
    return name, p50


def targets(results: dict) -> list[dict]:
    """The issue's targets for the shipped default on this machine, each with its measured figure."""
    e2e = _get(results, SHIPPED, "threads_1", "end_to_end", "p50_ms")
    int8_invoke = _get(results, SHIPPED, "threads_1", "invoke", "p50_ms")
    float_invoke = _get(results, FLOAT_TFLITE, "threads_1", "invoke", "p50_ms")
    keras, keras_e2e = fastest_keras(results)
    rss = results.get("core", {}).get("peak_rss_mb")
    rows = [
        ("end-to-end p50, 1 thread", e2e, "<= 5 ms", e2e is not None and e2e <= 5.0, f"{e2e:.2f} ms" if e2e else None),
        ("int8 invoke vs float32 TFLite invoke (1 thread)", None if not (int8_invoke and float_invoke)
         else int8_invoke / float_invoke, "ratio <= 1.0", bool(int8_invoke and float_invoke
         and int8_invoke <= float_invoke), f"{int8_invoke / float_invoke:.2f}x" if int8_invoke and float_invoke
         else None),
        ("speed-up over the fastest float Keras form (end to end)", None if not (keras_e2e and e2e)
         else keras_e2e / e2e, ">= 20x", bool(keras_e2e and e2e and keras_e2e / e2e >= 20),
         f"{keras_e2e / e2e:.1f}x (vs {keras}, {keras_e2e:.2f} ms)" if keras_e2e and e2e else None),
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
        f"figure (medians; p95 in brackets). Command: `{results['command']}`." + _load_line(results),
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
    ]
    lines += _keras_line(results)
    lines += [
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {t['shown'] or '-'} | {met} |")
    lines += _limit_lines(results)
    return "\n".join(lines) + "\n"


def _keras_line(results: dict) -> list[str]:
    """Which float Keras form is the baseline, and what the eager call alone would have claimed."""
    keras, keras_e2e = fastest_keras(results)
    e2e = _get(results, SHIPPED, "threads_1", "end_to_end", "p50_ms")
    eager = _get(results, KERAS_EAGER, _threads(results, KERAS_EAGER), "end_to_end", "p50_ms")
    if not (keras_e2e and e2e):
        return []
    line = (f"Float Keras baseline: the fastest form measured end to end, {keras} ({keras_e2e:.2f} ms, TensorFlow's "
            f"default threads); the shipped model on one thread is {keras_e2e / e2e:.1f}x faster than it")  # fmt: skip
    if eager and keras != KERAS_EAGER:
        line += f" and {eager / e2e:.1f}x faster than the eager call ({eager:.2f} ms), which nobody deploys"
    invoke = _get(results, SHIPPED, "threads_1", "invoke", "p50_ms")
    keras_invoke = _get(results, keras, _threads(results, keras), "invoke", "p50_ms")
    if invoke and keras_invoke:
        line += f"; invoke alone, {keras_invoke:.2f} ms vs {invoke:.2f} ms: {keras_invoke / invoke:.1f}x"
    return [line + "."]


def _millions(value: int) -> str:
    return f"{value / 1e6:.2f} M" if value >= 100_000 else f"{value:,}"


def _limit_lines(results: dict) -> list[str]:
    """MACs per image, this CPU's measured peaks, and each variant's fraction of peak (bench/peak.py)."""
    limit = results.get("limit")
    if not limit:
        return []
    macs, peak = limit["macs"], limit["peak"]
    counts = {name: c for name, c in macs["counts"].items() if isinstance(c, dict)}
    lines = ["", "## Physical limit", ""]
    if macs.get("per_image"):
        source = counts[macs["source"]]
        others = [name for name in counts if name != macs["source"]]
        check = (
            f"; the {' and '.join(others)} flatbuffer ops give "
            + ("the same count" if macs["agree"] else ", ".join(f"{_millions(counts[n]['total'])}" for n in others))
            if others
            else ""
        )
        kinds = ", ".join(f"{kind} {_millions(source[kind])} in {source['layers'][kind]}"
                          for kind in ("conv", "depthwise", "dense"))  # fmt: skip
        lines.append(
            f"Work: {_millions(macs['per_image'])} multiply-accumulates (MACs) per image at "
            f"{results.get('input_size', '-')} px ({kinds} layers), counted from the {macs['source']} model{check}."
        )
    per = []
    for precision, by_threads in peak["peaks"].items():
        figures = []
        for key, f in sorted(by_threads.items(), key=lambda kv: int(kv[0].removeprefix("threads_"))):
            count = int(key.removeprefix("threads_"))
            borrowed = f" (the {f['threads']}-thread figure: the other core was busy)" if f["threads"] != count else ""
            figures.append(f"{f['gmac_per_s']:.1f} at {count} thread{'s' if count != 1 else ''}{borrowed}")
        if figures:
            origin = "; ".join(sorted({f["from"] for f in by_threads.values()}))
            per.append(f"{precision} {', '.join(figures)} (from {origin})")
    numpy_1 = [m["gmac_per_s"] for m in peak["measurements"]
               if m["name"].startswith("numpy") and m.get("threads") == 1 and "gmac_per_s" in m]  # fmt: skip
    skipped = [f"{m['name']}: {m['skipped']}" for m in peak["measurements"] if "skipped" in m]
    lines.append(
        "Peak of this CPU, GMAC/s (1 MAC = 2 FLOP; the best of "
        f"{max((m.get('repeats', 0) for m in peak['measurements']), default=0)} timings of a large matrix product): "
        + ("; ".join(per) or "-")
        + (f". numpy's float32 matmul alone: {max(numpy_1):.1f} at 1 thread" if numpy_1 else "")
        + (f". Skipped: {'; '.join(skipped)}" if skipped else "")
        + "."
    )
    lines += [
        "",
        "| variant | precision | threads | invoke p50, ms | reached, GMAC/s | peak, GMAC/s | fraction of peak "
        "| invoke at peak, ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cores = results.get("machine", {}).get("cores")
    for name, v in results["variants"].items():
        for key, f in v.get("fraction_of_peak", {}).items():
            threads = f"TF default ({cores})" if key == "threads_0" else key.removeprefix("threads_")
            lines.append(
                f"| {name} | {v.get('precision', '-')} | {threads} | {v[key]['invoke']['p50_ms']:.2f} | "
                f"{f['gmac_per_s']:.2f} | {_cell(f['peak_gmac_per_s'], '.1f')} | "
                f"{'-' if f['fraction'] is None else format(100 * f['fraction'], '.1f') + '%'} | "
                f"{_cell(f['ms_at_peak'], '.3f')} |"
            )
    return lines


def _load_line(results: dict) -> str:
    load = results.get("load_average") or {}
    if not load.get("start"):
        return ""
    end = load.get("end") or ["-"]
    return (f" Load average (1 min) at the start and end: {load['start'][0]} and {end[0]} on "
            f"{results['machine']['cores']} cores; where above the core count, other jobs shared them: compare "
            "ratios within this run.")  # fmt: skip
