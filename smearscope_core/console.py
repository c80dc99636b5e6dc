"""One style for what the command lines print: timestamped log lines and progress bars for long loops.

``python -m train``, ``python -m convert`` and ``python -m bench`` log through ``logger(stage)``:
``[  12.3s] message`` on stdout, seconds since the command started, so a slow step shows in any log.
Long loops over images go through ``progress``, a tqdm bar on stderr when a person is watching a
terminal and silent otherwise (CI logs, pipes). tqdm is imported only here, and only when a bar is
drawn: the app's environment (which never draws one) does not need it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

ROOT_LOGGER = "smearscope"
_STARTED = time.time()  # about when the command started: this module is imported by its entry point
T = TypeVar("T")


class _ElapsedFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - _STARTED:6.1f}s] {record.getMessage()}"


def logger(stage: str) -> logging.Logger:
    """The stage's logger (``smearscope.<stage>``), printing ``[elapsed] message`` lines to stdout."""
    root = logging.getLogger(ROOT_LOGGER)
    if not any(getattr(h, "_smearscope", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_ElapsedFormatter())
        handler._smearscope = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(f"{ROOT_LOGGER}.{stage}")


def elapsed() -> float:
    """Seconds since this process imported the console (about when the command started)."""
    return time.time() - _STARTED


def progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "image") -> Iterator[T]:
    """``items`` with a progress bar on stderr when it is a terminal; the items unchanged otherwise."""
    if not sys.stderr.isatty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:  # the app's environment: no bars, same items
        yield from items
        return
    yield from tqdm(items, desc=description, total=total, unit=unit, leave=False, file=sys.stderr, mininterval=0.5)
