"""Tell the Jupyter server extension about this kernel's sync server (for the JupyterLab panel).

When ``%autosync serve`` runs in a kernel that a Jupyter server started,
:class:`ServerAnnouncer` PUTs the server's URL and document summaries to
``{base_url}autosync/api/servers/<id>`` — at once, again at most once a
second while documents change, and every 20 s as a heartbeat — and DELETEs
the entry when the server stops. Failures are logged, never raised: the
panel is a convenience, the server works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..ids import DocumentId, document_url
from ..runtime.server import SyncServer
from .discovery import MAX_ANNOUNCEMENT, MAX_DOCUMENTS, SECRET_HEADER, SECRET_VARIABLE

__all__ = ["ServerAnnouncer"]

logger = logging.getLogger("autosync_jupyter.jupyter.announce")

_HEARTBEAT = 20.0
_MIN_INTERVAL = 1.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerAnnouncer:
    """Keeps one entry about ``server`` up to date on a Jupyter server's extension."""

    def __init__(self, server: SyncServer, jupyter_url: str, token: str | None) -> None:
        self.server = server
        self.server_id = secrets.token_urlsafe(12)
        base = jupyter_url if jupyter_url.endswith("/") else jupyter_url + "/"
        self.endpoint = f"{base}autosync/api/servers/{self.server_id}"
        self._token = token
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None

    def start(self) -> None:
        """Announce now and keep the entry fresh until :meth:`stop`."""
        self._remove_listener = self.server.add_listener(self._on_change)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop refreshing and withdraw the entry."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
            await asyncio.to_thread(self._request, "DELETE", None)

    def _on_change(self, changed: frozenset[DocumentId]) -> None:
        self._changed.set()

    async def _run(self) -> None:
        while self.server.running:
            self._changed.clear()
            await asyncio.to_thread(self._request, "PUT", self._announcement())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _HEARTBEAT)
            await asyncio.sleep(_MIN_INTERVAL)

    def _announcement(self) -> dict[str, Any]:
        name = os.environ.get("JPY_SESSION_NAME") or f"kernel {os.getpid()}"
        rows = self.server.document_summaries()
        # The newest ones: an announcement is small, and says how many there are.
        rows.sort(key=lambda row: row.last_change.timestamp() if row.last_change else 0.0)
        newest = rows[-MAX_DOCUMENTS:][::-1]
        documents = [
            {
                "id": row.document_id,
                "url": document_url(row.document_id),
                "size": row.size,
                "heads": list(row.heads),
                "peers": row.peers,
                "last_change": row.last_change.isoformat() if row.last_change else None,
                "title": row.title,
            }
            for row in newest
        ]
        body = {
            "url": self.server.url,
            "name": os.path.basename(name)[:200],
            "documents": documents,
            "document_count": len(rows),
        }
        # Documents with many heads make rows long: the oldest give way.
        while documents and len(json.dumps(body).encode()) > MAX_ANNOUNCEMENT:
            documents.pop()
        return body

    def _request(self, method: str, body: dict[str, Any] | None) -> None:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"token {self._token}"
        # Proves this is a kernel of that Jupyter server (inherited from it).
        headers[SECRET_HEADER] = os.environ.get(SECRET_VARIABLE, "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.endpoint, data=data, method=method, headers=headers)
        try:
            with _NO_PROXY.open(request, timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.debug("announcing the kernel's server (%s) failed: %s", method, exc)
