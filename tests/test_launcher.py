"""The launcher (edge_app/launcher.py): settings, port choice, arguments, selftest, log file, clean stop.

The desktop executable runs this same module; tests/test_desktop_build.py checks the built one.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from edge_app import launcher
from smearscope_core.errors import ExitCode
from tests.factories import PROJECT_ROOT, assert_stops_cleanly


def test_production_settings() -> None:
    options = launcher.settings(8123)
    assert options["global.developmentMode"] is False  # else a frozen app points the browser at port 3000
    assert options["server.address"] == options["browser.serverAddress"] == "127.0.0.1"
    assert options["server.port"] == 8123
    assert options["server.headless"] is True
    assert options["server.fileWatcherType"] == "none"
    assert options["browser.gatherUsageStats"] is False
    assert options["server.enableXsrfProtection"] is True


def test_every_setting_is_a_streamlit_option() -> None:
    """A misspelt key would be ignored silently by Streamlit."""
    from streamlit import config

    unknown = set(launcher.settings(1)) - set(config._config_options_template)
    assert not unknown, unknown


def test_the_launcher_passes_every_setting_as_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is the one home: edge_app/.streamlit/config.toml is generated from it for a plain
    `streamlit run` (tests/test_streamlit_config.py), but the launcher never relies on that file. Every setting,
    with this run's port, goes to Streamlit as a flag, which outranks any config.toml."""
    from streamlit.runtime import credentials
    from streamlit.web import bootstrap

    seen: dict[str, dict] = {}
    monkeypatch.setattr(bootstrap, "load_config_options", lambda flag_options: seen.update(loaded=flag_options))
    monkeypatch.setattr(bootstrap, "run", lambda script, is_hello, args, flag_options: seen.update(run=flag_options))
    monkeypatch.setattr(credentials, "check_credentials", lambda: None)
    monkeypatch.delenv("SMEARSCOPE_MODELS", raising=False)
    monkeypatch.setattr("streamlit.config._main_script_path", None)
    launcher.serve(launcher.APP_SCRIPT, 8123, [])
    assert seen == {"loaded": launcher.settings(8123), "run": launcher.settings(8123)}


def test_version_is_the_project_version() -> None:
    expected = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert launcher.app_version() == expected


def test_free_port_is_free_and_a_taken_one_is_not() -> None:
    port = launcher.free_port()
    assert 1024 <= port <= 65535
    assert launcher.port_is_free(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not launcher.port_is_free(port)


def test_arguments(tmp_path: Path) -> None:
    args = launcher.parse_args([])
    assert (args.port, args.no_browser, args.models, args.selftest, args.version) == (None, False, [], False, False)
    assert args.script == launcher.APP_SCRIPT
    args = launcher.parse_args(["--port", "8600", "--no-browser", "--models", str(tmp_path), "--models", str(tmp_path)])
    assert (args.port, args.no_browser, args.models) == (8600, True, [tmp_path, tmp_path])


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "70000"], ["--port", "http"], ["--models", "/no/such"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        launcher.parse_args(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_taken_port_is_refused_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert launcher.main(["--port", str(port), "--no-browser"]) is ExitCode.BAD_INPUT
    assert f"Port {port} on 127.0.0.1 is in use" in capsys.readouterr().out


def test_version_lists_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["--version"]) is ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data["version"] == launcher.app_version()
    default = data["models"][0]
    assert Path(default["folder"]).name == "default" and len(default["sha256"]) == 64 and default["name"]


def test_selftest_classifies_an_image_made_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["--selftest"]) is ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data["selftest"] == "ok"
    assert data["runtime"] in {"ai-edge-litert", "tflite-runtime"}
    assert 0 < data["model_top_probability"] <= 1 and data["verdict"]
    assert data["outcome"] in {"refer", "malignant", "benign"} and (data["outcome"] == "refer") == data["inconclusive"]


def test_selftest_failure_is_one_json_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr("edge_app.settings.DEFAULT_MODELS_DIR", tmp_path / "empty")
    assert launcher.main(["--selftest"]) is ExitCode.GATE_FAILED
    data = json.loads(capsys.readouterr().out)
    assert data["selftest"] == "failed" and "no model bundle" in data["error"]


def test_the_launcher_loads_no_training_side() -> None:
    """Run in the full environment (TensorFlow installed): starting and self-testing must not import it."""
    code = (
        "import sys; from edge_app import launcher; launcher.selftest(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'train', 'convert'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_log_goes_to_the_data_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path))
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored afterwards: log_to_file replaces both
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    handlers = list(launcher.LOGGER.handlers)
    try:
        path = launcher.log_to_file()
        print("a line from Streamlit")
        launcher.LOGGER.info("a line from the launcher")
    finally:
        launcher.LOGGER.handlers = handlers
    assert path == tmp_path / "logs" / "smearscope.log"
    text = path.read_text()
    assert "a line from Streamlit" in text and "a line from the launcher" in text


def test_browser_opens_once_the_page_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/_stcore/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    opened: list[str] = []
    monkeypatch.setattr(launcher.webbrowser, "open", opened.append)
    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        launcher.open_browser_when_ready(url, timeout=20).join(30)
    finally:
        server.shutdown()
    assert opened == [url]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_stops_cleanly_on_a_signal(signal_name: str, tmp_path: Path) -> None:
    """Ctrl+C, a service stop, or the terminal window closing."""
    command = [sys.executable, "-m", "edge_app.launcher"]
    assert_stops_cleanly(command, signal_name, tmp_path, PROJECT_ROOT, dict(os.environ))


@pytest.mark.parametrize("original", [None, "/opt/site/lib"])
def test_the_browser_does_not_inherit_the_bundles_libraries(
    original: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/smearscope/_internal")
    if original is None:
        monkeypatch.delenv("LD_LIBRARY_PATH_ORIG", raising=False)
    else:
        monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", original)
    launcher.restore_library_path()
    assert os.environ.get("LD_LIBRARY_PATH") == original
