"""Helpers for the real-browser test: find Debian's chromium, run the app (through its launcher) on a free port.

No Playwright import here: the test module skips itself when Playwright or chromium is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edge_app.launcher import free_port

# The result banner of a confident verdict, as edge_app/components.py (verdict_banner) writes it.
BANNER = re.compile(r"^(?P<label>.+?): (?:no leukemia|leukemic cells) suggested \((?P<percent>\d{1,3})% confidence\)$")
# Any verdict banner: a confident one, or the referral.
VERDICT = re.compile(r"% confidence\)|Inconclusive - refer for manual review")

DEBIAN_CHROMIUM = "/usr/bin/chromium"
# Offline and quiet: no GPU, no sandbox (CI runs as root), no background calls home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    """Debian's chromium (``apt-get install chromium``), else ``chromium`` on PATH; never a downloaded one."""
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


def log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"(no log: {error})"


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll Streamlit's health endpoint until it answers "ok"; raise with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} while starting:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                body = response.read().decode(errors="replace").strip()
            if body == "ok":
                return
            last = f"health answered {body!r}"
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer {url}/_stcore/health within {timeout:.0f} s ({last}):\n{log_tail(log)}")


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def server_wrapper(env: dict[str, str]) -> list[str]:
    """A command to run the app's server under, from $SMEARSCOPE_SERVER_WRAPPER (e.g. ``strace -f -o LOG``):
    tests/test_offline.py traces the server's connection attempts this way."""
    return shlex.split(env.get("SMEARSCOPE_SERVER_WRAPPER", ""))


@contextmanager
def streamlit_app(
    script: Path,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    startup_timeout: float = 60,
    launcher: Sequence[str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Start the app the way users do, through the launcher (``python -m edge_app.launcher --script SCRIPT``,
    or ``launcher``, e.g. the desktop executable, which runs its own bundled page), with ``--port FREE
    --no-browser`` and ``args``, from ``cwd``; yields the base URL once healthy, and stops the server
    (terminate, then kill) afterwards."""
    port = free_port()
    command = [*launcher] if launcher else [sys.executable, "-m", "edge_app.launcher", "--script", str(script)]
    command += ["--port", str(port), "--no-browser", *args]
    command = server_wrapper(env) + command
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log, startup_timeout)
        yield url
    finally:
        stop(process)
