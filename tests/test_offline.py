"""Offline means offline: the app classifies through its page in a network namespace with only
loopback, and its server makes no connection attempt to any address but loopback.

The real-browser test (tests/test_browser_e2e.py) runs inside ``unshare --net`` (a new network
namespace: no interface but ``lo``, which the test brings up), with the app's server under
``strace -f -e trace=connect,sendto,sendmsg``. Every address the server tried to reach is read
from the trace; any that is not loopback fails the test, and so does a trace without the server's
own HTTP answers to the browser (proof that the trace followed the server). A control run shows
that a connection attempt to an outside address is seen by the same trace and parser.

Needs Linux, root (as in CI) for the namespace, strace (.ci/run installs it) and chromium; skips
with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import find_chromium
from tests.factories import PROJECT_ROOT

STRACE = shutil.which("strace")
TRACED_CALLS = "trace=connect,sendto,sendmsg"
# strace's rendering of an IPv4 or IPv6 socket address in connect()/sendto()/sendmsg()
INET = re.compile(r'sin_addr=inet_addr\("(?P<v4>[0-9.]+)"\)|inet_pton\(AF_INET6, "(?P<v6>[0-9a-fA-F:.]+)"')


def namespace_works() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare (util-linux) or ip (iproute2) is missing"
    try:
        done = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare --net failed: {error}"
    if done.returncode != 0:
        return f"unshare --net needs root here (CI runs as root): {done.stderr.decode(errors='replace').strip()}"
    return None


NO_NAMESPACE = namespace_works()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NO_NAMESPACE is not None, reason=str(NO_NAMESPACE)),
    pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace; .ci/run does)"),
]


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


def inet_addresses(trace: str) -> list[str]:
    """Every IPv4/IPv6 address the traced processes tried to reach (connect/sendto/sendmsg lines)."""
    found = []
    for line in trace.splitlines():
        if re.search(r"\b(connect|sendto|sendmsg)\(", line):
            found += [m["v4"] or m["v6"] for m in INET.finditer(line)]
    return found


def in_namespace(script: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a shell script in a new network namespace whose only interface, lo, is up.

    Also a new PID namespace: when the script ends, the kernel ends every process left in it (the
    test stops the traced server by signalling strace, which detaches and would leave it running)."""
    return subprocess.run(
        ["unshare", "--net", "--pid", "--kill-child", "sh", "-c", f"ip link set lo up && {script}"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_parser_reads_strace_addresses() -> None:
    trace = "\n".join(
        [
            '41 connect(7, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("142.250.1.1")}, 16) = -1',
            '41 connect(8, {sa_family=AF_INET6, sin6_port=htons(53), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001'
            ':4860::8888", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH (Network is unreachable)',
            '42 sendto(9, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("8.8.8.8")}, 16) = -1',
            '43 connect(5, {sa_family=AF_INET, sin_port=htons(8501), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            '44 connect(3, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = -1 ENOENT',
            "45 sendto(4, [{nlmsg_len=20, nlmsg_type=RTM_GETADDR}], 20, 0, NULL, 0) = 20",
        ]
    )
    addresses = inet_addresses(trace)
    assert addresses == ["142.250.1.1", "2001:4860::8888", "8.8.8.8", "127.0.0.1"]
    assert [a for a in addresses if not is_loopback(a)] == ["142.250.1.1", "2001:4860::8888", "8.8.8.8"]


def test_trace_sees_an_outside_connection_attempt(tmp_path: Path) -> None:
    """The control: the same namespace, trace and parser catch a process that does try to go out."""
    log = tmp_path / "control.strace"
    code = (
        "import socket\n"
        "try:\n    socket.create_connection(('203.0.113.7', 443), timeout=2)\n"
        "except OSError as e:\n    print('refused:', e)\n"
    )
    done = in_namespace(f'strace -f -qq -e {TRACED_CALLS} -o "{log}" "{sys.executable}" -c "{code}"', dict(os.environ),
                        timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout  # the namespace has no route out
    assert "203.0.113.7" in inet_addresses(log.read_text())


@pytest.mark.skipif(
    find_chromium() is None, reason="no chromium (/usr/bin/chromium or on PATH): apt-get install chromium"
)
def test_app_classifies_offline_and_tries_no_outside_address(tmp_path: Path) -> None:
    pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install -r requirements-dev.txt)"
    )
    log = tmp_path / "server.strace"
    links = tmp_path / "links.txt"
    env = dict(os.environ) | {
        "SMEARSCOPE_SERVER_WRAPPER": f"strace -f -qq -e {TRACED_CALLS} -o {log}",
        "SMEARSCOPE_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    e2e = "tests/test_browser_e2e.py::test_upload_in_a_real_browser"
    done = in_namespace(
        f'ip -o link show > "{links}" && "{sys.executable}" -m pytest -q -p no:cacheprovider "{e2e}"', env, timeout=900
    )
    assert done.returncode == 0, f"the browser test failed offline:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert "1 passed" in done.stdout, done.stdout[-3000:]  # it ran, it did not skip

    interfaces = [line.split(":")[1].strip() for line in links.read_text().splitlines()]
    assert interfaces == ["lo"], f"the namespace was not loopback-only: {interfaces}"
    trace = log.read_text()
    addresses = inet_addresses(trace)
    outside = sorted({a for a in addresses if not is_loopback(a)})
    print(f"\nserver trace: {len(trace.splitlines())} lines, {len(addresses)} inet addresses, outside: {outside}")
    assert "HTTP/1.1 200 OK" in trace, "the trace does not show the server answering the page: not traced"
    assert outside == [], f"the app's server tried to reach {outside}"
