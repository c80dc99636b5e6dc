"""Does every package of requirements-edge.txt install from binary wheels on a 64-bit Raspberry Pi?

``python build/check_pi_wheels.py`` (needs PyPI; not part of the test suite). For each target,
``pip download --only-binary=:all:`` resolves requirements-edge.txt, dependencies included, for linux
aarch64 into a temporary folder: Raspberry Pi OS Bookworm (Python 3.11, glibc 2.36) and Trixie
(Python 3.13, glibc 2.41), every manylinux tag the OS's glibc accepts given to pip (pip 26 does not
widen a manylinux_2_N tag to older ones by itself). Prints a table of the
wheel chosen for each package and exits 1 if any package has no wheel (it would need compiling on
the Pi), naming it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements-edge.txt"
TARGETS = {  # name: (python version, the OS's glibc minor version)
    "Bookworm, Python 3.11": ("3.11", 36),
    "Trixie, Python 3.13": ("3.13", 41),
}
WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>.+)\.whl$"
)


def requirements(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def platforms(glibc_minor: int) -> list[str]:
    """Every wheel platform tag a 64-bit Raspberry Pi OS with glibc 2.<minor> accepts."""
    tags = ["manylinux2014_aarch64"] + [f"manylinux_2_{n}_aarch64" for n in range(17, glibc_minor + 1)]
    return [item for tag in tags for item in ("--platform", tag)]


def download(specs: list[str], python: str, glibc_minor: int, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         *platforms(glibc_minor), "--python-version", python, "--implementation", "cp", "--dest", str(folder),
         *specs],
        capture_output=True, text=True,
    )  # fmt: skip


def wheels(folder: Path) -> dict[str, str]:
    """{package: 'version python-abi-platform'} for every wheel in the folder."""
    found = {}
    for path in folder.glob("*.whl"):
        match = WHEEL.match(path.name)
        if match:
            found[normalise(match["name"])] = f"{match['version']} {match['python']}-{match['abi']}-{match['platform']}"
    return found


def check(
    target: str, python: str, glibc_minor: int, specs: list[str], folder: Path
) -> tuple[dict[str, str], list[str]]:
    """Wheels chosen for the whole file, and the requirements that have none (with pip's last line)."""
    done = download(specs, python, glibc_minor, folder)
    missing = []
    if done.returncode != 0:  # find which requirement(s) failed, one by one
        for spec in specs:
            alone = download([spec], python, glibc_minor, folder)
            if alone.returncode != 0:
                last = (alone.stderr.strip().splitlines() or ["no output"])[-1]
                missing.append(f"{spec}: {last}")
    print(f"{target}: {'OK' if not missing else 'MISSING ' + '; '.join(missing)}", file=sys.stderr)
    return wheels(folder), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    args = parser.parse_args(argv)
    specs = requirements(args.requirements)
    results, failures = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for index, (target, (python, glibc_minor)) in enumerate(TARGETS.items()):
            folder = Path(work) / str(index)
            folder.mkdir()
            results[target], failures[target] = check(target, python, glibc_minor, specs, folder)
    packages = sorted(set().union(*results.values()))
    print("| package | " + " | ".join(TARGETS) + " |")
    print("|---|" + "---|" * len(TARGETS))
    for package in packages:
        print(f"| {package} | " + " | ".join(results[t].get(package, "**no wheel**") for t in TARGETS) + " |")
    for target, missing in failures.items():
        for line in missing:
            print(f"{target}: no binary wheel: {line}")
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
