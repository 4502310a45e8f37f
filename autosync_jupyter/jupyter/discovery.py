"""How a kernel and its Jupyter server find each other: names both sides agree on.

A leaf module: the kernel side (``session``, ``share``, ``announce``) and the
server extension (``serverext.registry``) both read these names, so neither
has to import the other's machinery.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "MAX_ANNOUNCEMENT",
    "MAX_DOCUMENTS",
    "SECRET_HEADER",
    "SECRET_VARIABLE",
    "jupyter_server",
]

#: Most document summaries one announcement carries (the newest; it says
#: how many there are in ``document_count``).
MAX_DOCUMENTS = 40
#: Largest announcement body in bytes (the server extension refuses more).
MAX_ANNOUNCEMENT = 16 * 1024
#: The environment variable holding the secret kernels of a Jupyter server
#: announce with (the server extension sets it; its kernels inherit it).
SECRET_VARIABLE = "AUTOSYNC_KERNEL_SECRET"
#: The header carrying it.
SECRET_HEADER = "X-Autosync-Kernel-Secret"


def jupyter_server() -> tuple[str, str | None] | None:
    """The URL (``http://host:port/base/``) and token of the Jupyter server that started
    this kernel, or None (a kernel run by nbclient or a console).

    ``$AUTOSYNC_JUPYTER_URL`` (and ``$AUTOSYNC_JUPYTER_TOKEN``) override it.
    """
    explicit = os.environ.get("AUTOSYNC_JUPYTER_URL")
    if explicit:
        return explicit, os.environ.get("AUTOSYNC_JUPYTER_TOKEN") or None
    # Read the parent's runtime file directly: jupyter_server.serverapp's
    # list_running_servers costs ~3 s of imports (jsonschema grammars) in a
    # fresh kernel, which the first %autosync serve used to pay.
    from jupyter_core.paths import jupyter_runtime_dir

    path = Path(jupyter_runtime_dir()) / f"jpserver-{os.getppid()}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    return info["url"], str(info.get("token") or "") or None
