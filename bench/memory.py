"""``python -m bench.memory``: the inference core's peak memory on camera-size JPEGs, full vs reduced decoding.

Issue 13 measured the page at a 726 MB peak after ten 12-megapixel photos and 1.08 GB after one of 80
megapixels; clinic PCs may have 4 GB. Each figure here is a fresh process that loads the bundle and screens
camera JPEGs through ``edge_app.screening.Screener.screen_file`` as the page does, keeping the result and a
320 px thumbnail and dropping the file's bytes and the decoded image (``--batch`` 50 of 12 MP, 4000 x 3000;
then one of 80 MP, 10328 x 7760, a medium-format back's frame, in a process of its own). Three ways:

- full, image kept: today's page, which holds every decoded image while the tab is open;
- full: today's decoding (``open_image(data, name)``), only the thumbnail kept;
- reduced: ``open_image(data, name, min_side=...)``, the JPEG decoded at 1/2, 1/4 or 1/8 by libjpeg (Pillow's
  draft mode) where the model pixels agree with a full decode (``smearscope_core.imaging``); the one-line
  change to ``Screener.screen_file`` is made here by giving the process that decode.

Peak RSS is the process's ``VmHWM`` (``/proc/self/status``); the issue's targets are checked: the batch at
most 300 MB, the 80 MP image at most 400 MB. Then the agreement of the two decodings: every test-split image
(``--limit``: fewer) as a 12 MP JPEG and ``--large`` of them as 80 MP JPEGs, decoded both ways: the model
pixels' largest and mean difference and the bundle's probabilities, class, referral and verdict; and every
image of the manifest (224 px: what training reads) decoded with ``min_side`` must be a full decode, pixel
for pixel.

The camera JPEGs are the manifest's test-split images of ../shared/datasets/all-4class enlarged (bicubic) to
the frame's centre square, its sides filled with their mirror images (so the app's centre crop is the original
field), saved at JPEG quality 92 in a temporary folder at run time: never committed. Writes
bench/results/<date>-<host>-memory.{json,md} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bench.measure import PROJECT_ROOT, limit_suffix, machine_facts, run_script
from smearscope_core.console import logger, progress
from smearscope_core.errors import DatasetError, InputError
from smearscope_core.paths import DEFAULT_DATASET

if TYPE_CHECKING:
    from edge_app.screening import Screener

CAMERA = (4000, 3000)  # 12 MP
LARGE = (10328, 7760)  # 80 MP, under Pillow's bomb guard (89,478,485 pixels)
QUALITY = 92
THUMBNAIL = 320  # the side of the report's thumbnail (edge_app.records)
MODES = ("full, image kept", "full", "reduced")
FIGURES = {  # what is screened in one process: its title, the ways measured
    "batch": ("N x 12 MP", MODES),
    "large": ("1 x 80 MP", MODES),
    "progressive": ("1 x 80 MP progressive", MODES[1:]),  # libjpeg holds a progressive file's coefficients in full
}
TARGETS_MB = {"batch": 300.0, "large": 400.0}  # issue 13
CHILD = "--child"

log = logger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50, help="12 MP images in the batch (default 50)")
    parser.add_argument("--limit", type=int, default=0, help="test images for the agreement, every k-th (0: all)")
    parser.add_argument("--large", type=int, default=5, help="test images for the 80 MP agreement (default 5)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET, help="the dataset the manifest points into")
    parser.add_argument("--manifest", type=Path, default=PROJECT_ROOT / "runs" / "default" / "manifest.csv")
    parser.add_argument("--bundle", type=Path, help="model bundle (default: the app's first, the shipped default)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.limit < 0 or args.large < 0:
        parser.error("--batch must be 1 or more, --limit and --large 0 or more")
    return args


def camera_frame(field: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The field enlarged to the frame's centre square, the frame's sides filled with the square's mirror image:
    a camera photo whose centre crop (the app's resize policy) is the original field."""
    width, height = size
    side = min(width, height)
    square = field.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    frame = Image.new("RGB", size)
    left, top = (width - side) // 2, (height - side) // 2
    frame.paste(square, (left, top))
    flip = {True: Image.Transpose.FLIP_LEFT_RIGHT, False: Image.Transpose.FLIP_TOP_BOTTOM}[width > height]
    before, after = (left, width - side - left) if width > height else (top, height - side - top)
    if before:
        strip = square.crop((0, 0, before, side) if width > height else (0, 0, side, before))
        frame.paste(strip.transpose(flip), (0, 0))
    if after:
        box = (side - after, 0, side, side) if width > height else (0, side - after, side, side)
        frame.paste(square.crop(box).transpose(flip), (left + side, 0) if width > height else (0, top + side))
    return frame


def camera_jpeg(path: Path, size: tuple[int, int], progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    camera_frame(Image.open(path), size).save(buffer, format="JPEG", quality=QUALITY, progressive=progressive)
    return buffer.getvalue()


# --- the measured process -------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """A field of /proc/self/status in MB (``VmHWM``: the peak resident set; ``VmRSS``: now)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, bundle: str, files: list[str]) -> dict:
    """Screen ``files`` one after another as the page does; the peak RSS and what was decoded."""
    import edge_app.screening as screening
    from smearscope_core.imaging import open_image

    screener = screening.Screener(bundle, num_threads=1)
    side = screener.bundle.decode_side  # what screen_file passes

    def decode(data: bytes, name: str = "the file", min_side: int | None = None) -> Image.Image:
        return open_image(data, name, min_side=side) if mode == "reduced" else open_image(data, name)

    screening.open_image = decode  # "full": the decoding before the reduced one, for the comparison
    loaded_rss, loaded_peak = _status_mb("VmRSS"), _status_mb("VmHWM")
    kept, decoded, verdicts = [], set(), []
    started = time.perf_counter()
    for file in files:
        data = Path(file).read_bytes()
        screened = screener.screen_file(data, Path(file).name)
        decoded.add("x".join(map(str, screened.image.size)))
        verdicts.append(screened.result.verdict)
        if mode == "full, image kept":
            kept.append(screened)
        else:
            screened.image.thumbnail((THUMBNAIL, THUMBNAIL))
            kept.append((screened.image, screened.result))
        del data, screened
    seconds = time.perf_counter() - started
    return {
        "images": len(files),
        "decoded_size": sorted(decoded),
        "rss_after_load_mb": loaded_rss,
        "peak_after_load_mb": loaded_peak,
        "peak_rss_mb": _status_mb("VmHWM"),
        "rss_at_end_mb": _status_mb("VmRSS"),
        "seconds_per_image": seconds / len(files),
        "verdicts": verdicts,
    }


def child_main(argv: list[str]) -> int:
    mode, bundle, *files = argv
    print(json.dumps(child(mode, bundle, files)))
    return 0


def measured(mode: str, bundle: Path, files: list[Path]) -> dict:
    """``child`` in a fresh process (the app's environment when run with .venv-edge)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", CHILD, mode, str(bundle), *map(str, files)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    if done.returncode != 0:
        raise InputError(f"the measured process failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- agreement ------------------------------------------------------------------------------------------


def agreement(screener: Screener, min_side: int, paths: list[Path], size: tuple[int, int], label: str) -> dict:
    """Each image as a camera JPEG of ``size`` decoded in full and reduced: model pixels, probabilities, verdicts;
    and the full decode's verdict against the original file's (how much the enlargement itself changes)."""
    from smearscope_core.imaging import model_pixels, open_image

    rows = []
    for path in progress(paths, f"agreement at {label}"):
        blob = camera_jpeg(path, size)
        full, reduced = open_image(blob, path.name), open_image(blob, path.name, min_side=min_side)
        difference = np.abs(
            model_pixels(full, screener.size).astype(np.int16) - model_pixels(reduced, screener.size).astype(np.int16)
        )
        a, b = screener.screen_image(full, path.name), screener.screen_image(reduced, path.name)
        original = screener.screen_bytes(path.read_bytes(), path.name)
        probabilities = np.abs(
            np.array([p.probability for p in a.probabilities]) - np.array([p.probability for p in b.probabilities])
        )
        rows.append({
            "decoded": "x".join(map(str, reduced.size)),
            "max": int(difference.max()), "mean": float(difference.mean()), "differing": float((difference > 0).mean()),
            "probability": float(probabilities.max()), "class": a.label == b.label,
            "referral": a.inconclusive == b.inconclusive, "verdict": a.verdict == b.verdict,
            "verdict_vs_original": a.verdict == original.verdict,
            "referred_by_reduced_only": b.inconclusive and not a.inconclusive,
            "referred_by_full_only": a.inconclusive and not b.inconclusive,
        })  # fmt: skip
    count = len(rows)
    return {
        "images": count,
        "size": list(size),
        "decoded_size": sorted({r["decoded"] for r in rows}),
        "pixels_max_difference": max((r["max"] for r in rows), default=0),
        "pixels_mean_difference": float(np.mean([r["mean"] for r in rows])) if rows else 0.0,
        "pixels_share_differing": float(np.mean([r["differing"] for r in rows])) if rows else 0.0,
        "images_max_difference_over_1": sum(r["max"] > 1 for r in rows),
        "probability_max_difference": max((r["probability"] for r in rows), default=0.0),
        "probability_median_of_max_difference": float(np.median([r["probability"] for r in rows])) if rows else 0.0,
        "same_class": sum(r["class"] for r in rows),
        "same_referral": sum(r["referral"] for r in rows),
        "referred_by_reduced_only": sum(r["referred_by_reduced_only"] for r in rows),
        "referred_by_full_only": sum(r["referred_by_full_only"] for r in rows),
        "same_verdict": sum(r["verdict"] for r in rows),
        "full_decode_same_verdict_as_original": sum(r["verdict_vs_original"] for r in rows),
    }


def training_files_unchanged(paths: list[Path], min_side: int) -> dict:
    """Every file of the manifest decoded as the app will (``min_side``) is its full decode, pixel for pixel."""
    from smearscope_core.imaging import open_image

    sizes, changed = set(), []
    for path in progress(paths, "training images"):
        data = path.read_bytes()
        full, reduced = open_image(data, path.name), open_image(data, path.name, min_side=min_side)
        sizes.add("x".join(map(str, full.size)))
        if full.size != reduced.size or not np.array_equal(np.asarray(full), np.asarray(reduced)):
            changed.append(path.name)
    return {
        "files": len(paths),
        "sizes": sorted(sizes),
        "identical": len(paths) - len(changed),
        "changed": changed[:10],
    }


# --- the run --------------------------------------------------------------------------------------------


def split_files(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The manifest's test-split files and all its files; one sentence when the dataset is not here."""
    from smearscope_core.manifest import read_manifest

    if not args.data.is_dir():
        raise DatasetError(
            f"The dataset {args.data} is not here, so nothing was measured: this benchmark enlarges its test-split "
            "images to camera size at run time (they are never committed)."
        )
    if not args.manifest.is_file():
        raise InputError(f"There is no split manifest at {args.manifest}: train a model first (python -m train).")
    rows = read_manifest(args.manifest)
    missing = [row.path for row in rows if not (args.data / row.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images of the manifest are not under {args.data}, e.g. {missing[0]}.")
    return [args.data / r.path for r in rows if r.split == "test"], [args.data / r.path for r in rows]


def spread(items: list, count: int) -> list:
    """``count`` items evenly spread over the list (every class is in), cycling when there are fewer."""
    if count <= len(items):
        return [items[i * len(items) // count] for i in range(count)]
    return [items[i % len(items)] for i in range(count)]


def targets(memory: dict) -> list[dict]:
    """The issue's limits on the reduced decoding's peaks."""
    peaks = {key: memory[key]["reduced"]["peak_rss_mb"] for key in TARGETS_MB}
    return [
        {"target": f"{key} peak RSS (reduced)", "limit_mb": limit, "value_mb": peaks[key], "met": peaks[key] <= limit}
        for key, limit in TARGETS_MB.items()
    ]


def measure(args: argparse.Namespace, argv: list[str]) -> dict:
    from edge_app.bundle import list_bundles
    from edge_app.screening import Screener
    from edge_app.settings import model_folders

    test, everything = split_files(args)
    bundle = args.bundle or next(iter(list_bundles(*model_folders())), None)
    if bundle is None:
        raise InputError("There is no model bundle: give --bundle DIR.")
    screener = Screener(bundle, num_threads=1)
    min_side = screener.bundle.decode_side  # what Screener.screen_file passes
    memory: dict = {key: {} for key in FIGURES}
    with tempfile.TemporaryDirectory(prefix="smearscope-memory-") as temp:
        batch = []
        for index, path in enumerate(progress(spread(test, args.batch), "camera JPEGs")):
            batch.append(Path(temp) / f"{index:03d}-{path.stem}.jpg")
            batch[-1].write_bytes(camera_jpeg(path, CAMERA))
        files = {"batch": batch, "large": [Path(temp) / "large.jpg"], "progressive": [Path(temp) / "progressive.jpg"]}
        files["large"][0].write_bytes(camera_jpeg(test[0], LARGE))
        files["progressive"][0].write_bytes(camera_jpeg(test[0], LARGE, progressive=True))
        sizes = {key: sum(p.stat().st_size for p in paths) / 2**20 for key, paths in files.items()}
        for mode in MODES:
            for key, (_, modes) in FIGURES.items():
                if mode in modes:
                    memory[key][mode] = measured(mode, bundle, files[key])
                    log.info(f"{key}, {mode}: peak {memory[key][mode]['peak_rss_mb']:.0f} MB")
    verdicts = {
        key: sum(a != b for a, b in zip(m["full"]["verdicts"], m["reduced"]["verdicts"], strict=True))
        for key, m in memory.items()
    }
    chosen = test[:: max(1, len(test) // args.limit)][: args.limit] if args.limit else test
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.memory", *argv]),
        "machine": machine_facts(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "data": str(args.data),
        "manifest": str(args.manifest),
        "limit": args.limit,
        "bundle": {"path": str(bundle), "name": screener.bundle.name, "sha256": screener.bundle.sha256},
        "min_side": min_side,
        "camera": {
            "batch": args.batch,
            "size": list(CAMERA),
            "large_size": list(LARGE),
            "jpeg_quality": QUALITY,
            "files_mb": sizes,
        },
        "memory": memory,
        "verdicts_differing_full_vs_reduced": verdicts,
        "targets": targets(memory),
        "agreement": {
            "12 MP": agreement(screener, min_side, chosen, CAMERA, "12 MP"),
            "80 MP": agreement(screener, min_side, spread(test, args.large) if args.large else [], LARGE, "80 MP"),
        },
        "training_files": training_files_unchanged(everything, min_side),
    }


def title(key: str, camera: dict) -> str:
    return FIGURES[key][0].replace("N ", f"{camera['batch']} ")


def markdown_table(results: dict) -> str:
    camera, memory = results["camera"], results["memory"]
    lines = [
        f"# Memory on camera images {results['created']}",
        "",
        f"`{results['command']}` on {results['machine']['host']} ({results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores, load {results['load_average'][0]}); bundle "
        f"{results['bundle']['name']}; reduced decoding with `min_side={results['min_side']}`. Batch: "
        f"{camera['batch']} JPEGs of {camera['size'][0]} x {camera['size'][1]} "
        f"({camera['files_mb']['batch']:.0f} MB of files); 80 MP: one of "
        f"{camera['large_size'][0]} x {camera['large_size'][1]} "
        f"({camera['files_mb']['large']:.1f} MB; progressive: {camera['files_mb']['progressive']:.1f} MB).",
        "",
        "| images | decoding | decoded to | after load (MB) | peak RSS (MB) | at end (MB) | s per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in FIGURES:
        for mode, m in memory[key].items():
            lines.append(
                f"| {title(key, camera)} | {mode} | {', '.join(m['decoded_size'])} | {m['rss_after_load_mb']:.0f} | "
                f"{m['peak_rss_mb']:.0f} | {m['rss_at_end_mb']:.0f} | {m['seconds_per_image']:.2f} |"
            )
    lines += ["", "| target | limit (MB) | measured (MB) | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']} | {t['limit_mb']:.0f} | {t['value_mb']:.0f} | {'yes' if t['met'] else 'NO'} |")
    differing = results["verdicts_differing_full_vs_reduced"]
    lines += [
        "",
        "Verdicts that differ between the full and the reduced run: "
        + ", ".join(f"{title(key, camera)}: {n}" for key, n in differing.items())
        + ".",
        "",
        "## Agreement of full and reduced decoding",
        "",
        "| frame | images | decoded to | pixels: largest difference | mean | share differing | images over 1 "
        "| probability: largest difference | same class | same referral (only reduced refers / only full) "
        "| same verdict | full decode vs original |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, a in results["agreement"].items():
        if not a["images"]:
            continue
        n = a["images"]
        lines.append(
            f"| {label} | {n} | {', '.join(a['decoded_size'])} | {a['pixels_max_difference']} | "
            f"{a['pixels_mean_difference']:.3f} | {a['pixels_share_differing']:.1%} | "
            f"{a['images_max_difference_over_1']} | {a['probability_max_difference']:.4f} | {a['same_class']}/{n} | "
            f"{a['same_referral']}/{n} ({a['referred_by_reduced_only']} / {a['referred_by_full_only']}) | "
            f"{a['same_verdict']}/{n} | {a['full_decode_same_verdict_as_original']}/{n} |"
        )
    training = results["training_files"]
    lines += [
        "",
        f"Training images: {training['identical']} of {training['files']} files ({', '.join(training['sizes'])} px) "
        f"decoded with `min_side` are their full decode, pixel for pixel.",
        "",
        "Pixels: the model's input (uint8, 0-255) of the two decodings of the same file. Full decode vs original: the "
        "verdict on the enlarged camera JPEG against the one on the test file itself (what enlarging and re-encoding "
        "change, for scale). Peak RSS: `VmHWM` of a fresh process that loads the bundle and screens the files one "
        "after another (`Screener.screen_file`), keeping the result and a 320 px thumbnail.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == [CHILD]:
        return child_main(arguments[1:])
    return run_script(argv, parse_args, measure, markdown_table, lambda results: f"memory{limit_suffix(results)}")


if __name__ == "__main__":
    sys.exit(main())
