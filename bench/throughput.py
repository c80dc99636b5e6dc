"""``python -m bench.throughput [--images 1000] [--workers 1 2]``: images per second of the batch command.

The whole screening path of ``python -m edge_app.screen`` (read, size limit, decode, image checks, invoke,
refer rules, CSV row) over real images from ../shared/datasets/all-4class, evenly spread over its classes
(cycled when the set has fewer), with each worker count. Two figures per count, both on the same files:

- command: the real command in a fresh process, wall clock from start to exit, so Python's start, the
  imports, the model load, the workers' start and the CSV writing are in it: what a script sees;
- steady: the command's own loop (``edge_app.screen.outcomes``) in this process, from its first result to
  its last: the rate once everything is loaded, which is what a large archive converges to.

Runs in the app's environment (.venv-edge). Writes bench/results/<date>-<host>-throughput.{json,md} and prints
the Markdown table. The machine is measured as it is: the load average before each figure is recorded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.measure import PROJECT_ROOT, machine_facts, run_script
from edge_app.bundle import list_bundles
from edge_app.screen import find_images, load_screener, outcomes
from edge_app.settings import model_folders
from smearscope_core.console import logger
from smearscope_core.errors import ExitCode, InputError
from smearscope_core.paths import DEFAULT_DATASET

log = logger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images per figure (default 1000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="folder of real images (recursive)")
    parser.add_argument("--bundle", type=Path, help="model bundle (default: the one the command picks)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.images < 2 or min(args.workers) < 1:
        parser.error("--images must be 2 or more and every --workers count 1 or more")
    return args


def spread(files: list[Path], count: int) -> list[Path]:
    """``count`` files evenly spread over the sorted list (so every class is in), cycling when there are fewer."""
    if count <= len(files):
        return [files[i * len(files) // count] for i in range(count)]
    return [files[i % len(files)] for i in range(count)]


def stage_images(data: Path, count: int, folder: Path) -> list[Path]:
    """The images as ``count`` distinct files in ``folder`` (hard links, else copies): the command screens a
    file named twice once, so a cycled image needs a name of its own. Read once, so the cache is warm for all."""
    found = find_images([data])
    if not found:
        raise InputError(f"There are no images under {data} (see docs/screening-cli.md).")
    staged = []
    for index, source in enumerate(spread(found, count)):
        target = folder / f"{index:06d}-{source.name}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        target.read_bytes()
        staged.append(target)
    return staged


def command_figure(files: list[Path], folder: Path, bundle: Path, workers: int, out: Path) -> dict:
    """The real command in a fresh process over ``folder``: wall seconds, images/s, and its exit and rows."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edge_app.screen", str(folder), "--bundle", str(bundle),
                           "--workers", str(workers), "--csv", str(out)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=3600)  # fmt: skip
    seconds = time.perf_counter() - started
    rows = max(0, len(out.read_text(encoding="utf-8").splitlines()) - 1) if out.exists() else 0
    if done.returncode != ExitCode.OK or rows != len(files):
        raise InputError(f"the command failed ({done.returncode}, {rows} rows): {done.stderr.strip()[-500:]}")
    return {"wall_s": seconds, "images_per_s": len(files) / seconds}


def steady_figure(files: list[Path], bundle: Path, workers: int) -> dict:
    """The command's loop in this process: seconds to the first result (workers' start), then images/s."""
    screener = load_screener(bundle)
    started = time.perf_counter()
    results = outcomes(files, screener, workers)
    first = next(results)
    after_first = time.perf_counter()
    unreadable = (first.row is None) + sum(outcome.row is None for outcome in results)
    ended = time.perf_counter()
    if unreadable:
        raise InputError(f"{unreadable} of the images could not be read: use a folder of readable images.")
    return {"first_result_s": after_first - started, "images_per_s": (len(files) - 1) / (ended - after_first)}


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    bundle = args.bundle or next(iter(list_bundles(*model_folders())), None)
    if bundle is None:
        raise InputError("There is no model bundle: give --bundle DIR.")
    screener = load_screener(bundle)
    runs = []
    with tempfile.TemporaryDirectory(prefix="smearscope-throughput-") as temp:
        images = Path(temp) / "images"
        images.mkdir()
        files = stage_images(args.data, args.images, images)
        log.info(f"{len(files)} images staged from {args.data}; bundle {screener.bundle.name}")
        for workers in args.workers:
            load = os.getloadavg()[0]
            command = command_figure(files, images, bundle, workers, Path(temp) / f"rows-{workers}.csv")
            steady = steady_figure(files, bundle, workers)
            runs.append({"workers": workers, "load_average_1min_before": load, "command": command, "steady": steady})
            log.info(f"{workers} worker(s): command {command['images_per_s']:.1f} images/s, "
                     f"steady {steady['images_per_s']:.1f} images/s")  # fmt: skip
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.throughput", *argv]),
        "machine": machine_facts(),
        "data": str(args.data),
        "images": len(files),
        "distinct_images": len(set(spread(find_images([args.data]), args.images))),
        "bundle": {"path": str(bundle), "name": screener.bundle.name, "sha256": screener.bundle.sha256},
        "runs": runs,
    }


def markdown_table(results: dict) -> str:
    """One row per worker count: the command's wall figures and the steady rate, with the speed-up over the first."""
    base = results["runs"][0]
    lines = [
        f"# Batch throughput {results['created']}",
        "",
        f"`{results['command']}` on {results['machine']['host']} ({results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores); {results['images']} images ({results['distinct_images']} distinct) "
        f"from `{results['data']}`; bundle {results['bundle']['name']}.",
        "",
        "| workers | command wall (s) | command images/s | steady images/s | steady speed-up | first result (s) "
        "| load before |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        command, steady = run["command"], run["steady"]
        speedup = steady["images_per_s"] / base["steady"]["images_per_s"]
        lines.append(
            f"| {run['workers']} | {command['wall_s']:.1f} | {command['images_per_s']:.1f} | "
            f"{steady['images_per_s']:.1f} | {speedup:.2f}x | {steady['first_result_s']:.2f} | "
            f"{run['load_average_1min_before']:.2f} |"
        )
    lines += [
        "",
        "Command: `python -m edge_app.screen FOLDER --workers N --csv OUT` in a fresh process, start to exit. "
        "Steady: the same loop once loaded, first result to last. First result: the workers' start and the first "
        "image. Load before: the 1-minute load average just before the figure (other work on the machine).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_script(argv, parse_args, measure, markdown_table, lambda results: "throughput")


if __name__ == "__main__":
    sys.exit(main())
