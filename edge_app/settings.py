"""The app's settings, one home each: the upload limit, where model bundles are looked for, the address.

The launcher, the page, the inference core and the server's own limit (``server.maxUploadSize``)
read these names; nothing else writes the same figure again. No Streamlit import here: the page's
check of the server it runs in (``server_refusal``) is plain logic, tested without a server.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"  # this computer only: the app never listens on a network
# The largest file the app takes, in MB: the page, the folder reader, the inference core and the server's
# server.maxUploadSize (edge_app/launcher.py) all use this one figure. A microscope photo is a few MB.
MAX_UPLOAD_MB = 50
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
# The image files the app takes (the page's uploader and folder reader, the headless batch command), as
# Path.suffix writes them, lower case: one list, so the page and the batch command accept the same files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "models"  # the shipped bundle(s)
MODELS_ENV = "SMEARSCOPE_MODELS"  # extra folders of a site's own bundles, separated by os.pathsep


def model_folders(extra: Sequence[Path] = (), environ: dict[str, str] | None = None) -> list[Path]:
    """Every folder bundles are offered from: the shipped one, then ``--models`` folders, then $SMEARSCOPE_MODELS.

    The launcher's ``--version`` and ``--selftest`` and the page call this one function, so they always
    list the same bundles.
    """
    return [DEFAULT_MODELS_DIR, *extra, *env_model_folders(environ)]


def env_model_folders(environ: dict[str, str] | None = None) -> list[Path]:
    """The folders named in $SMEARSCOPE_MODELS (os.pathsep between them), in order."""
    environ = os.environ if environ is None else environ
    return [Path(p) for p in environ.get(MODELS_ENV, "").split(os.pathsep) if p]


UNIX_SOCKET_PREFIX = "unix://"  # how Streamlit's server.address names a Unix socket (streamlit.web.server.server)


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to ``address`` (Streamlit's ``server.address``) is reachable from this computer only.

    Unset or empty is Streamlit's default, every interface: not loopback. ``localhost``, 127.0.0.0/8 and ::1
    (also as ::ffff:127.x.y.z) are, and so is a Unix socket, which has no network address. Any other name is
    refused, not looked up.
    """
    address = (address or "").strip()
    if not address:
        return False
    if address.startswith(UNIX_SOCKET_PREFIX) or address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def server_refusal(address: str | None, gather_usage_stats: object) -> str | None:
    """The one sentence the page shows instead of itself when its server is not safe to use, else None.

    Unsafe: listening beyond this computer (``server.address`` not loopback, e.g. a bare ``streamlit run``
    outside the project folder, or ``--server.address 0.0.0.0``), or Streamlit's usage statistics on
    (``browser.gatherUsageStats``; any value but False counts as on).
    """
    problems = []
    if not is_loopback(address):
        shown = (address or "").strip() or "every network interface"
        problems.append(f"listens on {shown}, not on this computer only (server.address)")
    if gather_usage_stats is not False:
        problems.append("sends usage statistics (browser.gatherUsageStats)")
    if not problems:
        return None
    return (
        f"SmearScope will not run on this server: it {', and '.join(problems)}; start it with "
        f"`make app` or `python -m edge_app.launcher`, which serve on {HOST} only with statistics off."
    )
