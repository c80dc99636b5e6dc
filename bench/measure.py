"""One benchmark routine for every variant, plus the app-level figures (heatmap, import, RSS).

Machines here are noisy, so every variant is measured in the same run on the same images, and
comparisons are quoted as ratios of medians. Runs unchanged on a Raspberry Pi with only the edge
requirements: variants that need TensorFlow are skipped there with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from smearscope_core.calibration import softmax
from smearscope_core.colour import standardise_colour
from smearscope_core.imaging import model_pixels, open_image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class TestImages:
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    size: int
    temperature: float
    colour_target: dict | None = None  # the card's shortcuts.colour_target: colour-robust figures too

    def file_bytes(self) -> list[bytes]:
        return [p.read_bytes() for p in self.paths]

    def as_json(self) -> str:
        return json.dumps(
            {
                "paths": [str(p) for p in self.paths],
                "labels": self.labels.tolist(),
                "class_names": self.class_names,
                "size": self.size,
                "temperature": self.temperature,
                "colour_target": self.colour_target,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TestImages:
        data = json.loads(text)
        return cls(
            [Path(p) for p in data["paths"]],
            np.array(data["labels"]),
            data["class_names"],
            data["size"],
            data["temperature"],
            data.get("colour_target"),
        )


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    function()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def quality(predicted: list[int], labels: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro-F1 (scikit-learn) of predicted class indexes; skipped on an edge-only machine."""
    try:
        from sklearn.metrics import accuracy_score, f1_score
    except ImportError:
        return {"quality_skipped": "scikit-learn is not installed (edge-only machine)"}

    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=list(range(num_classes)), average="macro", zero_division=0)
        ),
    }


def bench_runner(
    make_predict: Callable[[int], Callable[[np.ndarray], np.ndarray]],
    images: TestImages,
    repeats: int,
    threads: tuple[int, ...] = (1, 2),
) -> dict:
    """Predictions (for accuracy; on the colour-standardised images too when the card has a colour target),
    end-to-end and invoke-only latency per thread count, and sequential throughput."""
    blobs = images.file_bytes()
    pixels = np.stack([model_pixels(open_image(b), images.size) for b in blobs])
    result: dict = {}
    for count in threads:
        predict = make_predict(count)
        if count == threads[0]:
            result["predicted"] = [int(np.argmax(predict(p))) for p in pixels]
            if images.colour_target is not None:
                standardised = standardise_colour(pixels, images.colour_target)
                result["predicted_colour_robust"] = [int(np.argmax(predict(p))) for p in standardised]

        def end_to_end(index: list[int] = [0], predict: Predict = predict) -> None:  # noqa: B006 - cycles images
            blob = blobs[index[0] % len(blobs)]
            index[0] += 1
            softmax(predict(model_pixels(open_image(blob), images.size)), images.temperature)

        result[f"threads_{count}"] = {
            "end_to_end": percentiles(timed(end_to_end, repeats)),
            "invoke": percentiles(timed(lambda p=predict: p(pixels[0]), repeats)),
        }
        started = time.perf_counter()
        for p in pixels:
            predict(p)
        result[f"threads_{count}"]["throughput_images_per_s"] = len(pixels) / (time.perf_counter() - started)
    return result


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how many other jobs shared the cores (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def write_results(results: dict, out: Path, name: str, markdown: str) -> Path:
    """``results`` as ``<out>/<date>-<host>-<name>.json`` and the ``markdown`` beside it as ``.md``; the stem."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{datetime.now(UTC):%Y-%m-%d}-{results['machine']['host'] or 'host'}-{name}"
    Path(f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")  # not with_suffix: a host name may have dots
    Path(f"{stem}.md").write_text(markdown)
    return stem


def run_script(
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    measure: Callable[[argparse.Namespace, list[str]], dict],
    markdown_table: Callable[[dict], str],
    name: Callable[[dict], str],
) -> int:
    """The main of a measuring script: parse, measure, write the results files into ``--out``, print the table;
    one sentence on bad input."""
    from smearscope_core.console import logger
    from smearscope_core.errors import ExitCode, SmearScopeError, report

    args = parse_args(argv)
    try:
        results = measure(args, sys.argv[1:] if argv is None else argv)
    except SmearScopeError as error:
        return report(error)
    table = markdown_table(results)
    stem = write_results(results, args.out, name(results), table)
    print(table)
    logger("bench").info(f"wrote {stem}.json and .md")
    return ExitCode.OK


def limit_suffix(results: dict) -> str:
    """``-limitN`` in a results file's name for a quick run, "" for a whole one."""
    return f"-limit{results['limit']}" if results.get("limit") else ""


def machine_facts() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts = {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("ai-edge-litert", "tflite-runtime", "tensorflow-cpu", "tensorflow", "numpy", "pillow"):
        try:
            facts[package] = version(package)
        except PackageNotFoundError:
            continue
    return facts


# Peak memory of the child itself: /proc's VmHWM belongs to the new process image, while ru_maxrss
# carries the parent's peak across fork+exec on Linux (measured: 722 MB reported for a 62 MB core).
_PEAK_RSS = """
def peak_rss_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_CHILD = (
    _PEAK_RSS
    + """
import json, sys, time
started = time.perf_counter()
from edge_app.screening import Screener
imported = time.perf_counter() - started
screener = Screener(sys.argv[1], num_threads=1)
loaded = time.perf_counter() - started
data = open(sys.argv[2], "rb").read()
screen = []
for _ in range(int(sys.argv[3]) * 10 + 1):
    t = time.perf_counter(); screener.screen_bytes(data, "x"); screen.append(time.perf_counter() - t)
screen = screen[1:]
heat = []
image = __import__("smearscope_core.imaging", fromlist=["open_image"]).open_image(data)
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); screener.explain(image); heat.append(time.perf_counter() - t)
print(json.dumps({"import_s": imported, "import_and_load_s": loaded, "heatmap_s": heat,
                  "screen_bytes_s": screen, "peak_rss_mb": peak_rss_mb(),
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""
)

_APP_CHILD = (
    _PEAK_RSS
    + """
import json, os, sys
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options
from edge_app.launcher import settings
# AppTest reads no config file: the launcher's settings, or the page refuses to serve (not loopback)
with patch_config_options({k: v for k, v in settings(8501).items() if k != "global.developmentMode"}):
    app = AppTest.from_file(sys.argv[1], default_timeout=120).run()
    data = open(sys.argv[2], "rb").read()
    app.file_uploader[0].set_value([("bench.jpg", data, "image/jpeg")]).run()
ok = not app.exception and any("confidence" in e.value or "refer" in e.value
                                for e in [*app.success, *app.error, *app.warning])
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "classified": ok}))
"""
)


def _child_json(code: str, *args: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})},
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def core_figures(bundle: Path, image: Path, heatmap_repeats: int) -> dict:
    """Inference core in a fresh process: import time, load time, heatmap time, peak RSS."""
    figures = _child_json(_CHILD, str(bundle), str(image), str(heatmap_repeats))
    if "heatmap_s" in figures:
        figures["heatmap"] = percentiles(figures.pop("heatmap_s"))
        figures["screen_bytes"] = percentiles(figures.pop("screen_bytes_s"))
    return figures


def app_figures(image: Path, models_dir: Path, data_dir: Path) -> dict:
    """The Streamlit page (headless AppTest) in a fresh process serving one classification: peak RSS."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        return {"skipped": "streamlit is not installed"}
    env = {"SMEARSCOPE_MODELS": str(models_dir), "SMEARSCOPE_DATA": str(data_dir)}
    return _child_json(_APP_CHILD, str(PROJECT_ROOT / "edge_app" / "app.py"), str(image), env=env)
