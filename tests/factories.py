"""Builders shared by several test modules: crafted inputs and helpers that run a stage's command line.

One section per stage; add a stage's builders in its own section.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT

# ---------------------------------------------------------------- convert/ (tests/test_convert_*.py)

DEFAULT_RUN = PROJECT_ROOT / "runs" / "default"


def run_convert(*args: str) -> subprocess.CompletedProcess:
    """``python -m convert ARGS`` in a subprocess, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "convert", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )


def crafted_drift(
    agreement: float = 1.0,
    accuracy: tuple[float, float] = (0.95, 0.95),
    recalls: dict[str, tuple[float, float]] | None = None,
    n: int = 400,
) -> dict:
    """The fields of convert.drift.compare's result that the gate reads (float, int8 pairs)."""
    recalls = recalls or {"Benign": (0.96, 0.96), "Pro": (0.94, 0.94)}
    return {
        "n": n,
        "agreement": agreement,
        "disagreement_count": round((1 - agreement) * n),
        "accuracy": {"float": accuracy[0], "int8": accuracy[1], "delta_points": (accuracy[1] - accuracy[0]) * 100},
        "per_class_recall": {
            name: {"float": f, "int8": i, "delta_points": (i - f) * 100} for name, (f, i) in recalls.items()
        },
    }
