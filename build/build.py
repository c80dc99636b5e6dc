"""Build the desktop executable: ``python build/build.py`` (``make build``), from the edge environment only.

Runs PyInstaller on build/smearscope.spec (one folder: ``dist/smearscope/``), refuses to build in an
environment where TensorFlow is importable and checks that none of it reached the bundle, runs the
executable's ``--selftest``, packs ``dist/smearscope-<version>-<platform>.tar.gz`` and prints the
size by package (build/size_report.py; ``--results DIR`` writes it there too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import size_report

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "build" / "smearscope.spec"
NAME = "smearscope"
# Top-level packages of the training side; the app must never carry them (`ai_edge_litert` has files
# named *tensorflow_lite*, which are the runtime itself, hence whole package names, not substrings).
FORBIDDEN = ("tensorflow", "tensorflow_cpu", "tf_keras", "keras", "tensorboard", "jax", "torch", "train", "convert")


class BuildError(RuntimeError):
    """The build cannot go on or its result is wrong; the message says why."""


def check_environment() -> None:
    present = [name for name in ("tensorflow", "keras") if importlib.util.find_spec(name) is not None]
    if present:
        raise BuildError(
            f"{', '.join(present)} is importable in {sys.prefix}: build from the edge environment only "
            "(make build creates .venv-build from requirements-edge.txt + requirements-build.txt)."
        )
    if importlib.util.find_spec("PyInstaller") is None:
        raise BuildError(f"PyInstaller is not installed in {sys.prefix}: pip install -r requirements-build.txt")


def bundled_packages(folder: Path) -> set[str]:
    """Top-level names of everything in the bundle: folders and files of _internal, modules in the archive."""
    names = {p.name.split(".")[0] for p in (folder / "_internal").iterdir()}
    names |= set(size_report.pyz_sizes(size_report.executable_of(folder)))
    return names


def check_no_training_code(folder: Path) -> None:
    found = sorted(bundled_packages(folder) & set(FORBIDDEN))
    if found:
        raise BuildError(f"the bundle carries {', '.join(found)}: the app must never ship the training side")


def selftest(executable: Path, timeout: float = 120) -> dict:
    done = subprocess.run([str(executable), "--selftest"], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BuildError(f"--selftest failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result.get("selftest") != "ok" or result.get("tensorflow_loaded"):
        raise BuildError(f"--selftest answered {result}")
    return result


def platform_tag() -> str:
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    return f"{sys.platform.replace('win32', 'windows')}-{machine}"


def archive(folder: Path, version: str) -> Path:
    """A .tar.gz of the folder (links kept as links), beside it."""
    target = folder.parent / f"{NAME}-{version}-{platform_tag()}.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname=NAME)
    return target


def build(dist: Path, work: Path, results: Path | None = None, make_archive: bool = True) -> dict:
    check_environment()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(dist), "--workpath", str(work)], check=True, cwd=ROOT)  # fmt: skip
    build_seconds = time.monotonic() - started
    folder = dist / NAME
    check_no_training_code(folder)
    test = selftest(size_report.executable_of(folder))
    packed = archive(folder, test["app_version"]) if make_archive else None
    data = size_report.report(folder, packed, {"build_seconds": round(build_seconds, 1), "selftest": test})
    print(size_report.markdown(data))
    print(f"built {folder} in {build_seconds:.0f} s" + (f"; archive {packed}" if packed else ""))
    if results:
        print(f"written: {size_report.write_results(data, results)}")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the folder and archive go")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "out" / "work", help="PyInstaller's work folder")
    parser.add_argument("--results", type=Path, help="write the size report (size-<date>.json/.md) here")
    parser.add_argument("--no-archive", action="store_true", help="skip the .tar.gz")
    args = parser.parse_args(argv)
    try:
        build(args.dist.resolve(), args.work.resolve(), args.results, not args.no_archive)
    except (BuildError, subprocess.CalledProcessError) as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
