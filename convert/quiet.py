"""Hide native (C++) log lines that TensorFlow and LiteRT write straight to file descriptor 2.

They would bury the one sentence the CLI prints on failure. What was hidden is kept, so an error
can still quote it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 to a temporary file; yields a list that receives the captured lines afterwards."""
    captured: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded use): nothing to hide
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured += sink.read().decode("utf-8", "replace").splitlines()
