"""A plain ``streamlit run edge_app/app.py`` is safe (issue 14, item 6).

Started the way a Streamlit user would, without the launcher, the app once served on every interface with
usage statistics on. Now:

- ``edge_app/.streamlit/config.toml``, beside the page, is the launcher's settings table as a file (all but the
  per-run port). Streamlit reads a config file beside the script over the global and working-folder ones, so a
  plain ``streamlit run`` started from any folder gets the production settings; a test keeps file and table
  equal, and another runs it for real from another folder and reads the kernel's socket table: 127.0.0.1 only.
- The page refuses to serve, with one sentence, on a server whose ``server.address`` is not loopback or whose
  usage statistics are on (``--server.address 0.0.0.0``, ``STREAMLIT_SERVER_ADDRESS``...).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_app import launcher
from edge_app.settings import HOST, is_loopback, server_refusal
from tests.browser import log_tail, stop, wait_until_healthy
from tests.factories import PROJECT_ROOT, listening_addresses, other_local_addresses

APP = PROJECT_ROOT / "edge_app" / "app.py"
CONFIG = PROJECT_ROOT / "edge_app" / ".streamlit" / "config.toml"
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML sections to Streamlit's dotted option names: {"server": {"port": 1}} -> {"server.port": 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# The file and the table


def test_the_config_file_is_the_launchers_table() -> None:
    assert CONFIG.is_file(), "no .streamlit/config.toml: run `python -m edge_app.launcher --write-config`"
    assert CONFIG.read_text(encoding="utf-8") == launcher.config_toml(), (
        "the file differs from settings() in edge_app/launcher.py: run `python -m edge_app.launcher --write-config`"
    )
    expected = {k: v for k, v in launcher.settings(8123).items() if k != "server.port"}
    assert flatten(tomllib.loads(CONFIG.read_text(encoding="utf-8"))) == expected


def test_write_config_writes_the_file(tmp_path: Path) -> None:
    path = launcher.write_config(tmp_path / ".streamlit" / "config.toml")
    assert path.read_text(encoding="utf-8") == launcher.config_toml()


def test_streamlit_reads_every_setting_from_the_file(tmp_path: Path) -> None:
    """Streamlit, started in another folder as `streamlit run /path/to/edge_app/app.py` is, takes every option of
    the table from the file, global.developmentMode (a hidden option) included, and nothing else from it; a
    misspelt option would be dropped with a warning. HOME is empty, so a developer's own
    ~/.streamlit/config.toml plays no part."""
    code = (
        "import json, sys; from streamlit import config\n"
        "config._main_script_path = sys.argv[1]\n"  # as `streamlit run edge_app/app.py` does
        "options = config.get_config_options(force_reparse=True)\n"
        "print(json.dumps({k: [o.value, o.where_defined] for k, o in options.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")} | {"HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(APP)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not a valid config option" not in done.stderr, done.stderr[-2000:]
    options = json.loads(done.stdout.strip().splitlines()[-1])
    from_file = {k: value for k, (value, where) in options.items() if where == str(CONFIG)}
    assert from_file == {k: v for k, v in launcher.settings(8123).items() if k != "server.port"}
    assert options["server.port"][0] == 8501


# The page's own check


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.0.0.2", "127.255.255.254", "localhost", "LOCALHOST", "::1", "::ffff:127.0.0.1",
     " 127.0.0.1 ", "unix:///run/smearscope.sock"],
)  # fmt: skip
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [None, "", " ", "0.0.0.0", "::", "0:0:0:0:0:0:0:0", "192.0.2.2", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1",
     "example.org", "localhost.example.org", "my-pc", "128.0.0.1"],
)  # fmt: skip
def test_other_addresses_are_not_loopback(address: str | None) -> None:
    assert not is_loopback(address)


def test_the_refusal_is_one_sentence_naming_what_is_wrong() -> None:
    assert server_refusal(HOST, False) is None
    assert server_refusal("localhost", False) is None
    every = server_refusal(None, True)
    assert every and every.endswith(".") and ". " not in every  # one sentence
    assert "every network interface" in every and "usage statistics" in every
    address = server_refusal("0.0.0.0", False)
    assert address and "0.0.0.0" in address and "gatherUsageStats" not in address
    stats = server_refusal(HOST, True)
    assert stats and "browser.gatherUsageStats" in stats and "server.address" not in stats
    assert server_refusal(HOST, "false") is not None  # anything but False counts as on


@pytest.fixture
def run_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Runs the real page (AppTest) with the given Streamlit options, its history in a temporary folder."""
    import streamlit
    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1.util import patch_config_options

    monkeypatch.setenv("SMEARSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SMEARSCOPE_MODELS", raising=False)

    def run(options: dict[str, Any]) -> AppTest:
        with patch_config_options(options):
            return AppTest.from_file(str(APP), default_timeout=120).run()

    streamlit.cache_resource.clear()  # the history is cached per process: use this test's folder, leave none
    try:
        yield run
    finally:
        streamlit.cache_resource.clear()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"server.address": "0.0.0.0", "browser.gatherUsageStats": False}, "0.0.0.0"),
        ({"server.address": None, "browser.gatherUsageStats": False}, "every network interface"),
        ({"server.address": "192.0.2.2", "browser.gatherUsageStats": False}, "192.0.2.2"),
        ({"server.address": HOST, "browser.gatherUsageStats": True}, "browser.gatherUsageStats"),
    ],
    ids=["all-interfaces", "unset", "lan-address", "usage-stats"],
)
def test_the_page_refuses_an_unsafe_server(options: dict[str, Any], named: str, run_page) -> None:
    app = run_page(options)
    assert not app.exception
    assert [e.value for e in app.error] == [
        server_refusal(options["server.address"], options["browser.gatherUsageStats"])
    ]
    assert named in app.error[0].value
    assert not app.title and not app.tabs, "the page went on after refusing"


def test_the_page_serves_with_the_launchers_settings(run_page) -> None:
    table = launcher.settings(8123)
    app = run_page({k: table[k] for k in ("server.address", "browser.gatherUsageStats")})
    assert not app.exception
    assert not app.error, [e.value for e in app.error]
    assert app.title and len(app.tabs) == 5


# A real `streamlit run`, no launcher


def edge_python() -> Path:
    python = os.environ.get("SMEARSCOPE_EDGE_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("set SMEARSCOPE_EDGE_PYTHON to the edge venv's python (make test does; .venv-edge) to run this")
    return Path(python).absolute()  # make test gives a relative path; the server here starts in another folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/net socket tables")
def test_a_plain_streamlit_run_listens_on_loopback_only_with_statistics_off(tmp_path: Path) -> None:
    """`python -m streamlit run /path/to/edge_app/app.py --server.port N` started in another folder, as a Streamlit
    user would start it (the config file beside the page applies wherever Streamlit is started). HOME is a
    temporary folder, so neither a developer's ~/.streamlit/config.toml nor the absence of one changes the
    outcome and nothing is written to the home folder; SMEARSCOPE_DATA too, for the history."""
    python = edge_python()
    port = launcher.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_") and k != "SMEARSCOPE_MODELS"}
    env |= {"HOME": str(tmp_path / "home"), "SMEARSCOPE_DATA": str(tmp_path / "data")}
    log = tmp_path / "streamlit.log"
    command = [str(python), "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=elsewhere, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until_healthy(f"http://{HOST}:{port}", process, log, timeout=60)
        addresses = listening_addresses(port)
        for address in other_local_addresses():
            with socket.socket() as probe:
                probe.settimeout(3)
                assert probe.connect_ex((address, port)) != 0, f"the app answers on {address}:{port}"
    finally:
        stop(process, timeout=15)
    output = log_tail(log, 100_000)
    assert addresses, f"nothing listens on port {port}:\n{output}"
    assert set(addresses) == {LOOPBACK_HEX}, f"a plain streamlit run listens on {addresses}, not only 127.0.0.1"
    # Streamlit prints this when statistics are on by default, and looks up an external IP when it listens widely.
    assert "Collecting usage statistics" not in output and "Network URL" not in output, output
    assert f"http://{HOST}:{port}" in output, output
    assert "Traceback" not in output, output

    # The options that run resolved, read the way it reads them (same folder, same environment).
    code = (
        f"import json; from streamlit import config; config._main_script_path = {str(APP)!r}; "
        "print(json.dumps([config.get_option(k) for k in ('server.address', 'browser.gatherUsageStats')]))"
    )
    done = subprocess.run([str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [HOST, False]
    assert not (tmp_path / "home" / ".streamlit" / "credentials.toml").exists()  # no e-mail prompt: headless
