"""The running app's server: reachable from this computer only, and XSRF protection on.

Starts the app as users get it (tests/browser.py starts it the documented way) and checks the
sockets it listens on (every one bound to 127.0.0.1, none to all interfaces, read from the
kernel's socket table), that it cannot be reached on this computer's other addresses, and that
an upload without the XSRF token is refused (403), so another web page open in the same browser
cannot post files into a session.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.browser import streamlit_app
from tests.factories import PROJECT_ROOT, listening_addresses, other_local_addresses

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/net socket tables")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("server")
    env = os.environ | {"SMEARSCOPE_DATA": str(work / "data")}
    env.pop("SMEARSCOPE_MODELS", None)
    with streamlit_app(PROJECT_ROOT / "edge_app" / "app.py", PROJECT_ROOT, env, work / "app.log") as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_listens_on_loopback_only(app_url: str) -> None:
    port = port_of(app_url)
    addresses = listening_addresses(port)
    assert addresses, f"nothing listens on port {port}"
    assert set(addresses) == {"0100007F"}, f"the server listens on {addresses}, not only 127.0.0.1"
    for address in other_local_addresses():
        with socket.socket() as probe:
            probe.settimeout(3)
            assert probe.connect_ex((address, port)) != 0, f"the app answers on {address}:{port}"
    with urllib.request.urlopen(f"{app_url}/_stcore/health", timeout=30) as response:
        assert response.read() == b"ok"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Xsrftoken": "forged", "Cookie": "_streamlit_xsrf=2|00000000|00000000|0"}],
    ids=["no-token", "forged-token"],
)
def test_upload_without_the_xsrf_token_is_refused(app_url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"{app_url}/_stcore/upload_file/some-session/some-file",
        data=b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\nx\r\n--b--\r\n',
        method="PUT",
        headers={"Content-Type": "multipart/form-data; boundary=b", **headers},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
