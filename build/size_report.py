"""What the desktop executable's folder is made of, by package: ``python build/size_report.py [DIST_FOLDER]``.

Files on disk are attributed to the package they belong to (``numpy.libs`` to numpy, ``PIL`` and
``pillow.libs`` to pillow, ...); the pure-Python modules inside the executable's archive (PYZ) are
attributed by their top-level package, at their compressed size. ``--results DIR`` also writes
``size-<date>.json`` and ``.md`` there. Run it with the build environment's Python (it reads the
archive with PyInstaller's reader).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIST = ROOT / "dist" / "smearscope"
# Folder or module names that belong to another package's name in the report.
ALIASES = {"PIL": "pillow", "pillow.libs": "pillow", "numpy.libs": "numpy", "python3.11": "python (stdlib extensions)"}
PYTHON_RUNTIME_LIBS = ("libpython", "libssl", "libcrypto", "libsqlite3", "libz.", "liblzma", "libbz2", "libffi",
                       "libreadline", "libtinfo", "libexpat", "libmpdec", "libuuid", "libncurses", "libstdc++",
                       "libgcc_s")  # fmt: skip


def package_of(relative: Path) -> str:
    """The package a file of ``_internal`` belongs to."""
    first = relative.parts[0]
    if len(relative.parts) == 1:
        if first.startswith(PYTHON_RUNTIME_LIBS) or first == "base_library.zip":
            return "python (runtime)"
        return "other libraries"
    if first.endswith(".dist-info"):
        return "package metadata (.dist-info)"
    return ALIASES.get(first, first)


def pyz_sizes(executable: Path) -> dict[str, int]:
    """Compressed size of the pure-Python modules in the executable's archive, by top-level package."""
    from PyInstaller.archive.readers import CArchiveReader

    sizes: dict[str, int] = defaultdict(int)
    archive = CArchiveReader(str(executable))
    for name in archive.toc:
        if name.endswith(".pyz"):
            pyz = archive.open_embedded_archive(name)
            for module, (_typecode, _offset, length) in pyz.toc.items():
                top = module.split(".")[0]
                sizes[ALIASES.get(top, top)] += length
    return dict(sizes)


def executable_of(folder: Path) -> Path:
    for name in ("smearscope", "smearscope.exe"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no smearscope executable in {folder}")


def breakdown(folder: Path) -> dict[str, dict[str, int]]:
    """{package: {"files": bytes on disk, "pyz": compressed bytes in the archive}} (links counted once)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "pyz": 0})
    internal = folder / "_internal"
    for path in internal.rglob("*"):
        if path.is_file() and not path.is_symlink():
            table[package_of(path.relative_to(internal))]["files"] += path.stat().st_size
    executable = executable_of(folder)
    pyz = pyz_sizes(executable)
    for package, size in pyz.items():
        table[package]["pyz"] += size
    table["executable (bootloader)"]["files"] += executable.stat().st_size - sum(pyz.values())
    return dict(table)


def total_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def report(folder: Path, archive: Path | None = None, extra: dict | None = None) -> dict:
    table = breakdown(folder)
    rows = sorted(({"package": k, **v, "total": v["files"] + v["pyz"]} for k, v in table.items()),
                  key=lambda r: -r["total"])  # fmt: skip
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": sys.platform,
        "folder": str(folder),
        "unpacked_bytes": total_size(folder),
        "archive": str(archive) if archive else None,
        "archive_bytes": archive.stat().st_size if archive and archive.is_file() else None,
        "packages": rows,
        **(extra or {}),
    }


def markdown(data: dict) -> str:
    mb = 1e6
    lines = [
        f"# Desktop executable size ({data['date']}, {data['platform']})",
        "",
        f"Unpacked: **{data['unpacked_bytes'] / mb:.1f} MB**"
        + (f"; archive (.tar.gz): **{data['archive_bytes'] / mb:.1f} MB**" if data.get("archive_bytes") else ""),
        "",
        "| package | files (MB) | in the archive, compressed (MB) | total (MB) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['package']} | {r['files'] / mb:.2f} | {r['pyz'] / mb:.2f} | {r['total'] / mb:.2f} |"
        for r in data["packages"]
        if r["total"] >= 0.05 * mb
    ]
    small = [r for r in data["packages"] if r["total"] < 0.05 * mb]
    if small:
        lines.append(f"| {len(small)} smaller packages | | | {sum(r['total'] for r in small) / mb:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(data: dict, results: Path, stem: str = "size") -> Path:
    results.mkdir(parents=True, exist_ok=True)
    day = data["date"][:10]
    (results / f"{stem}-{day}.json").write_text(json.dumps(data, indent=2) + "\n")
    path = results / f"{stem}-{day}.md"
    path.write_text(markdown(data))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_DIST, help="the one-folder build")
    parser.add_argument("--archive", type=Path, help="the .tar.gz of the folder, for its size")
    parser.add_argument("--results", type=Path, help="write size-<date>.json and .md here")
    args = parser.parse_args(argv)
    data = report(args.folder, args.archive)
    print(markdown(data))
    if args.results:
        print(f"written: {write_results(data, args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
