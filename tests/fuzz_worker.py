"""Child process for the fuzz tests: screens files sent on stdin, one JSON line per file on stdout.

Run as ``python -m tests.fuzz_worker BUNDLE [MEMORY_LIMIT_MB]`` from the project root. A decoder
or runtime that segfaults, aborts or runs out of memory kills only this process, so the test sees
a crash (non-zero exit) instead of losing pytest itself. The address-space limit (RLIMIT_AS) turns
a file that would exhaust the machine's memory into a failure of this process too.

Protocol: the parent writes ``{"name": ..., "size": N}`` and a newline, then N raw bytes; the
worker answers ``{"outcome": "result" | "image_error" | "other_error", ...}`` on one line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
import warnings


def peak_rss_mb() -> float:
    """This process's own peak memory. Not ru_maxrss: on Linux it carries the parent's peak across
    fork+exec (measured in CI: 1.9 GB reported for a worker that peaked at 0.9 GB, because pytest
    had grown that large while training test models)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    bundle = sys.argv[1]
    if len(sys.argv) > 2:
        limit = int(sys.argv[2]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF on stderr; the outcome is what counts

    from edge_app.screening import Screener
    from smearscope_core.imaging import ImageError

    screener = Screener(bundle, num_threads=1)
    print(json.dumps({"ready": True, "classes": [c["name"] for c in screener.classifier.classes]}), flush=True)
    for line in sys.stdin.buffer:
        header = json.loads(line)
        data = sys.stdin.buffer.read(header["size"])
        started = time.perf_counter()
        answer: dict = {}
        try:
            result = screener.screen_bytes(data, header["name"])
            answer = {
                "outcome": "result",
                "label": result.label,
                "probabilities": [p.probability for p in result.probabilities],
                "confidence": result.confidence,
                "p_malignant": result.p_malignant,
                "inconclusive": result.inconclusive,
            }
        except ImageError as error:
            answer = {"outcome": "image_error", "message": str(error)}
        except Exception as error:  # noqa: BLE001 - exactly what the test must catch and report
            answer = {"outcome": "other_error", "message": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
        answer["seconds"] = time.perf_counter() - started
        answer["max_rss_mb"] = peak_rss_mb()
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
