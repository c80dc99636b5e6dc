"""Start SmearScope the one way: Streamlit in this process, with the production settings below.

``python -m edge_app.launcher [--port N] [--no-browser] [--models DIR] [--selftest] [--version] [--write-config]``

``make app``, the browser tests and the desktop executable (build/smearscope.spec) all start the
app through this module, so the settings live in one table (``settings``), passed as flags on every
start. ``edge_app/.streamlit/config.toml`` is generated from that table (``--write-config``;
tests/test_streamlit_config.py keeps the two equal): Streamlit reads it beside the page, so a plain
``streamlit run edge_app/app.py`` started from any folder gets the same settings. Technicians launch a
program, not a terminal: the launcher picks a free port on 127.0.0.1, opens the default browser
once the page answers, logs to a file in the user's data folder and stops cleanly on Ctrl+C,
SIGTERM or when its window closes. It never imports train/, convert/ or TensorFlow.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from edge_app import settings as app_settings
from edge_app.bundle import list_bundles, load_bundle
from edge_app.records import data_dir
from edge_app.settings import HOST, MAX_UPLOAD_MB, MODELS_ENV, env_model_folders, model_folders
from smearscope_core.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]  # the project, or the unpacked executable's folder
APP_SCRIPT = Path(__file__).resolve().parent / "app.py"  # Streamlit reads its source: shipped as a file
PYPROJECT = ROOT / "pyproject.toml"  # the app's version has one home; the executable ships this file
# Streamlit reads .streamlit/config.toml beside the script it runs, over the global and the working folder's
# ones, wherever it is started: this one is settings() as a file, so a plain `streamlit run` is safe too.
CONFIG_TOML = APP_SCRIPT.parent / ".streamlit" / "config.toml"
PER_RUN = frozenset({"server.port"})  # chosen on each start: left out of CONFIG_TOML (Streamlit's default, 8501)
LOG_NAME = "smearscope.log"
LAUNCHED_BY_ENV = "SMEARSCOPE_LAUNCHED_BY"  # "make" when `make app` starts the launcher (Makefile): its port is PORT=
LOGGER = logging.getLogger("smearscope.launcher")


def settings(port: int) -> dict[str, Any]:
    """Streamlit's production settings, each for a reason found by running the app offline and frozen."""
    return {
        # Streamlit guesses "development" when its files are not under site-packages (a frozen build):
        # it then serves no page and points the browser at a dev server on port 3000.
        "global.developmentMode": False,
        "server.address": HOST,  # this computer only
        "server.port": port,
        "server.headless": True,  # no e-mail prompt; the launcher opens the browser itself
        "server.fileWatcherType": "none",  # nobody edits the installed app; watching costs start-up time
        "server.runOnSave": False,
        "server.enableXsrfProtection": True,
        "server.maxUploadSize": MAX_UPLOAD_MB,
        "browser.gatherUsageStats": False,  # offline: no usage statistics
        "browser.serverAddress": HOST,
        "client.toolbarMode": "minimal",  # no developer menu for technicians
    }


def toml_value(value: bool | int | str) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (same escapes)
    raise TypeError(f"no TOML form for {value!r}")


def config_toml() -> str:
    """``settings()`` as Streamlit's config.toml, less the per-run port: the text of CONFIG_TOML."""
    sections: dict[str, list[str]] = {}
    for key, value in settings(0).items():
        if key not in PER_RUN:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(f"{name} = {toml_value(value)}")
    lines = [
        "# SmearScope's Streamlit settings, generated from settings() in edge_app/launcher.py: do not edit here.",
        "# Regenerate with `python -m edge_app.launcher --write-config`; tests/test_streamlit_config.py checks it.",
        "# Streamlit reads it beside the page, so a plain `streamlit run edge_app/app.py` from any folder gets it.",
        "# The launcher (`make app`) passes the same settings as flags, with its own port (here Streamlit's 8501).",
    ]
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *entries]
    return "\n".join(lines) + "\n"


def write_config(path: Path = CONFIG_TOML) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_toml(), encoding="utf-8")
    return path


def app_version() -> str:
    try:
        return str(tomllib.loads(PYPROJECT.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def free_port(host: str = HOST) -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether the server could listen on ``port``: bound as uvicorn binds it (address reuse on POSIX, so a
    connection just closed, in TIME_WAIT, does not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if os.name != "nt":  # on Windows this option would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_in_use(port: int, environ: dict[str, str] | None = None) -> str:
    """The sentence for a port already taken, naming the way to choose another that fits how the app was started:
    ``make app PORT=N`` when started by make (its PORT variable sets --port), else ``--port N``."""
    environ = os.environ if environ is None else environ
    spare = next((p for p in range(port + 1, min(port + 50, 65535) + 1) if port_is_free(p)), None)
    number = str(spare) if spare is not None else "N"
    how = f"`make app PORT={number}`" if environ.get(LAUNCHED_BY_ENV) == "make" else f"--port {number}"
    return f"Port {port} on {HOST} is in use: close the other program or choose another port with {how}."


def port_number(text: str) -> int:
    """argparse type: a TCP port 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smearscope",
        description="SmearScope: offline screening aid for ALL in blood smear images (research use only).",
    )
    parser.add_argument("--port", type=port_number, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open the default browser")
    parser.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of a site's own model bundles (repeatable)")  # fmt: skip
    parser.add_argument("--selftest", action="store_true",
                        help="classify an image made in memory, print one JSON line, exit (no server)")  # fmt: skip
    parser.add_argument("--version", action="store_true", help="print the app and model versions, then exit")
    parser.add_argument("--write-config", action="store_true",
                        help=f"write {CONFIG_TOML.relative_to(ROOT)} from the settings table, then exit")  # fmt: skip
    parser.add_argument("--script", type=Path, default=APP_SCRIPT, help=argparse.SUPPRESS)  # tests only
    args = parser.parse_args(argv)
    for folder in args.models:
        if not folder.is_dir():
            parser.error(f"--models {folder}: not a folder")
    return args


def model_versions(models: Sequence[Path] = ()) -> list[dict[str, str]]:
    """Name, creation time and sha256 of every bundle offered (default first), or why it is refused."""
    versions = []
    for folder in list_bundles(*model_folders(models)):
        try:
            bundle = load_bundle(folder)
        except ValueError as error:
            versions.append({"folder": str(folder), "error": str(error)})
            continue
        versions.append({"folder": str(folder), "name": bundle.name, "created": str(bundle.card.get("created", "")),
                         "sha256": bundle.sha256})  # fmt: skip
    return versions


def smear_image(size: int = 256, seed: int = 0) -> bytes:
    """A small smear-like PNG made in memory (pale field, a few violet round cells): no file is needed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), dtype=np.float64)
    image[:] = (232, 212, 222)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):
        cy, cx = rng.integers(0, size, 2)
        radius = rng.integers(size // 24, size // 10)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = (120 + rng.integers(-20, 20), 60, 150)
    image += rng.normal(0, 6, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def selftest(models: Sequence[Path] = ()) -> dict[str, Any]:
    """Screen an in-memory image with the first bundle offered (the shipped default): the whole inference path."""
    from edge_app.screening import Screener

    started = time.perf_counter()
    bundles = list_bundles(*model_folders(models))
    if not bundles:
        raise RuntimeError(f"no model bundle in {app_settings.DEFAULT_MODELS_DIR}")
    screener = Screener(bundles[0])
    result = screener.screen_bytes(smear_image(), "selftest.png")
    return {
        "selftest": "ok",
        "app_version": app_version(),
        "model": result.model_name,
        "model_sha256": result.model_sha256,
        "runtime": screener.classifier.model.runtime,
        "verdict": result.verdict,
        "outcome": result.outcome,
        "inconclusive": result.inconclusive,
        "reasons": result.reasons,
        "model_top_probability": round(result.confidence, 4),  # the raw score (a check of the path), not a finding
        "classify_seconds": round(result.seconds, 4),
        "total_seconds": round(time.perf_counter() - started, 4),
        "tensorflow_loaded": "tensorflow" in sys.modules,
    }


class Tee(io.TextIOBase):
    """Writes to the console (when there is one) and to the log file: Streamlit prints and logs to the console."""

    def __init__(self, console: TextIO | None, log: TextIO):
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        for stream in (self.console, self.log):
            if stream is not None:
                try:
                    stream.write(text)
                    stream.flush()
                except (OSError, ValueError):  # a closed console window must not stop the app
                    pass
        return len(text)

    def isatty(self) -> bool:
        return bool(self.console and self.console.isatty())

    def fileno(self) -> int:
        if self.console is None:
            raise OSError("no console")
        return self.console.fileno()


def log_to_file(folder: Path | None = None) -> Path:
    """Send the console output and the launcher's log to ``<data folder>/logs/smearscope.log`` as well."""
    folder = (folder or data_dir()) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_NAME
    if path.exists() and path.stat().st_size > 5 * 1024 * 1024:  # keep one old log, never grow without end
        path.replace(path.with_suffix(".log.1"))
    log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the life of the process
    sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    return path


def restore_library_path() -> None:
    """The frozen app's bootloader points LD_LIBRARY_PATH at the bundle; the browser it starts must not load
    the bundle's libraries (PyInstaller keeps the user's value in LD_LIBRARY_PATH_ORIG)."""
    if getattr(sys, "frozen", False) and "LD_LIBRARY_PATH" in os.environ:
        original = os.environ.get("LD_LIBRARY_PATH_ORIG")
        if original is None:
            del os.environ["LD_LIBRARY_PATH"]
        else:
            os.environ["LD_LIBRARY_PATH"] = original


def open_browser_when_ready(url: str, timeout: float = 60) -> threading.Thread:
    """Open the default browser once the page answers (a browser opened earlier shows an error)."""

    def wait_and_open() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        restore_library_path()
                        webbrowser.open(url)
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        LOGGER.warning("the page did not answer within %.0f s; open %s yourself", timeout, url)

    thread = threading.Thread(target=wait_and_open, name="open-browser", daemon=True)
    thread.start()
    return thread


def stop_on_hangup() -> None:
    """Closing the terminal window sends SIGHUP: stop as on Ctrl+C (Streamlit handles SIGINT/SIGTERM, and
    on Windows SIGBREAK, which a closed console window raises)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))


def serve(script: Path, port: int, models: Sequence[Path]) -> None:
    """Run the page with Streamlit's server in this process until a signal stops it."""
    from streamlit import config
    from streamlit.runtime.credentials import check_credentials
    from streamlit.web import bootstrap

    options = settings(port)  # every setting as a flag, over any config.toml (ours holds the same, less the port)
    config._main_script_path = str(script)  # as `streamlit run` does, before reading the options
    bootstrap.load_config_options(flag_options=options)
    check_credentials()
    # The page finds the --models folders where it finds a site's folders anyway: in $SMEARSCOPE_MODELS
    # (edge_app.settings.model_folders), so the page and --version/--selftest list the same bundles.
    folders = [folder.resolve() for folder in models] + env_model_folders()
    if folders:
        os.environ[MODELS_ENV] = os.pathsep.join(str(folder) for folder in folders)
    bootstrap.run(str(script), False, [], options)


def main(argv: Sequence[str] | None = None) -> ExitCode:
    args = parse_args(argv)
    if args.version:
        print(json.dumps({"app": "SmearScope", "version": app_version(), "models": model_versions(args.models)}))
        return ExitCode.OK
    if args.write_config:
        print(f"wrote {write_config()}")
        return ExitCode.OK
    if args.selftest:
        try:
            print(json.dumps(selftest(args.models)))
        except Exception as error:  # noqa: BLE001 - the one line says what broke, whatever it was
            print(json.dumps({"selftest": "failed", "error": f"{type(error).__name__}: {error}"}))
            return ExitCode.GATE_FAILED
        return ExitCode.OK
    port = args.port or free_port()
    if args.port and not port_is_free(port):
        print(port_in_use(port))
        return ExitCode.BAD_INPUT
    log_path = log_to_file()
    url = f"http://{HOST}:{port}"
    LOGGER.info("SmearScope %s at %s (log: %s, models: %s)", app_version(), url, log_path,
                [str(m) for m in args.models] or "default")  # fmt: skip
    stop_on_hangup()
    if not args.no_browser:
        open_browser_when_ready(url)
    serve(args.script.resolve(), port, args.models)
    LOGGER.info("SmearScope stopped")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
