"""The app's settings, one home each: the upload limit, where model bundles are looked for, the address.

The launcher, the page, the inference core and the server's own limit (``server.maxUploadSize``)
read these names; nothing else writes the same figure again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"  # this computer only: the app never listens on a network
# The largest file the app takes, in MB: the page, the folder reader, the inference core and the server's
# server.maxUploadSize (edge_app/launcher.py) all use this one figure. A microscope photo is a few MB.
MAX_UPLOAD_MB = 50
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "models"  # the shipped bundle(s)
MODELS_ENV = "SMEARSCOPE_MODELS"  # extra folders of a site's own bundles, separated by os.pathsep


def model_folders(extra: Sequence[Path] = (), environ: dict[str, str] | None = None) -> list[Path]:
    """Every folder bundles are offered from: the shipped one, then ``--models`` folders, then $SMEARSCOPE_MODELS.

    The launcher's ``--version`` and ``--selftest`` and the page call this one function, so they always
    list the same bundles.
    """
    environ = os.environ if environ is None else environ
    from_env = [Path(p) for p in environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return [DEFAULT_MODELS_DIR, *extra, *from_env]
