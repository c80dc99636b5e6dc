"""Strip debug symbols from the executable folder's shared libraries, except the wheels' repaired ones.

Called by build/smearscope.spec on Linux. Libraries in ``*.libs`` folders (auditwheel-repaired, e.g.
numpy's OpenBLAS) stop loading once stripped, so they are left as they are; links are not followed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ELF_MAGIC = b"\x7fELF"


def is_elf(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == ELF_MAGIC


def strippable(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and not any(part.endswith(".libs") for part in p.relative_to(folder).parts)
        and p.parent != folder  # the executable itself carries its archive after the ELF part
        and is_elf(p)
    )


def strip_bundle(folder: Path) -> int:
    """Strip every strippable library; returns the bytes saved (0 when `strip` is not installed)."""
    if shutil.which("strip") is None:
        print("strip_bundle: no `strip` on PATH (apt-get install binutils); the bundle stays unstripped")
        return 0
    files = strippable(folder)
    before = sum(p.stat().st_size for p in files)
    for chunk in range(0, len(files), 200):
        subprocess.run(["strip", "--strip-unneeded", *map(str, files[chunk : chunk + 200])], check=True)
    saved = before - sum(p.stat().st_size for p in files)
    print(f"strip_bundle: {len(files)} libraries, {saved / 1e6:.1f} MB saved")
    return saved
