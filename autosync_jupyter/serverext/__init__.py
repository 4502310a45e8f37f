"""The Jupyter server extension: the sync hub on the Jupyter server's own port.

Installing the package enables it; it mounts, under the server's
``{base_url}autosync/``, a WebSocket endpoint any automerge-repo client can
sync with (``autosync/ws``), a small REST API to list, create and read
documents (``autosync/api/documents``) and the OIDC callback page
(``autosync/oidc/callback``). See :class:`AutosyncExtension` for its settings
and :mod:`autosync_jupyter.serverext.handlers` for the routes.
"""

from __future__ import annotations

from typing import Any

from .app import AutosyncExtension

__all__ = ["AutosyncExtension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell jupyter_server where the extension lives."""
    return [{"module": "autosync_jupyter.serverext", "app": AutosyncExtension}]
