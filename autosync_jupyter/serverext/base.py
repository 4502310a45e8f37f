"""What every route of the server extension shares: Jupyter's login, the hub, JSON, logs.

Handlers receive their collaborators through tornado's ``initialize``: an
:class:`ExtensionServices` (the running extension, seen only through what
handlers use), so this module and the handlers never import the
application that mounts them.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, Protocol

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketHandler

from ..auth.redact import redact_url
from ..runtime.sync_runtime import SyncRuntime
from .registry import KernelServerRegistry

__all__ = [
    "AUTH_RESOURCE",
    "NOT_RUNNING",
    "AuthorizedWebSocketHandler",
    "AutosyncAPIHandler",
    "ExtensionServices",
    "RedactedLogs",
]

logger = logging.getLogger("autosync_jupyter.serverext.handlers")

#: The resource name Jupyter's authorizer is asked about.
AUTH_RESOURCE: Final = "autosync"

#: The reason of a 503 when the hub could not start.
NOT_RUNNING: Final = "the autosync hub is not running (see the Jupyter server log)"


class ExtensionServices(Protocol):
    """What the handlers need from the running extension (see ``app.AutosyncExtension``)."""

    @property
    def max_message_size(self) -> int:
        """Largest frame or request body accepted, in bytes."""

    @property
    def kernel_servers(self) -> KernelServerRegistry:
        """Servers of kernels that announced themselves."""

    @property
    def kernel_secret(self) -> str:
        """The secret kernels of this server announce with."""

    async def ready(self) -> SyncRuntime:
        """The running hub (started at the first call); raises if it cannot start."""


class RedactedLogs:
    """Mixin: tornado's log lines about a refused request show its URL without the token.

    (Tornado logs every ``HTTPError`` with the raw request URI, which carries
    ``?token=...`` for WebSocket clients.)
    """

    request: Any

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact_url(self.request.uri)} ({self.request.remote_ip})"


class AuthorizedWebSocketHandler(RedactedLogs, WebSocketMixin, JupyterHandler, WebSocketHandler):
    """Base of the extension's WebSockets: Jupyter's login, authorizer and Origin check.

    :meth:`authorize` answers 403 unless the request carries Jupyter's login
    cookie or token and the authorizer allows ``write`` on ``"autosync"``.
    Jupyter's Origin check (``check_origin`` of :class:`WebSocketMixin`) and
    keep-alive pings apply as for kernel connections; frames are limited to
    ``AutosyncExtension.max_message_size`` bytes (larger ones close with
    1009) and never compressed.
    """

    auth_resource = AUTH_RESOURCE

    def initialize(self, extension: ExtensionServices) -> None:
        self.extension = extension

    @property
    def max_message_size(self) -> int:  # tornado reads this for every frame
        return int(self.extension.max_message_size)

    def get_compression_options(self) -> dict[str, Any] | None:
        # Automerge messages are already compact (and compression costs CPU
        # and memory per connection): off, as in SyncServer.
        return None

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Start keep-alive pings; send each message at once."""
        super().open(*args, **kwargs)
        # Sync messages are small and answered one by one: with Nagle's
        # algorithm on (tornado's default) each reply waited for the peer's
        # delayed ACK, ~40 ms per hop (measured by bench/relay_bench.py).
        self.set_nodelay(True)

    async def authorize(self) -> None:
        """Raise 403 unless a signed-in user may write on ``"autosync"``."""
        user = self.current_user
        if user is None:
            logger.warning(
                "refused an unauthenticated autosync WebSocket: %s", redact_url(self.request.uri)
            )
            raise web.HTTPError(403)
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, user, "write", self.auth_resource)
        )
        if not allowed:
            raise web.HTTPError(403, f"not authorized to write on {self.auth_resource}")


class AutosyncAPIHandler(RedactedLogs, APIHandler):
    """Base of the JSON routes: authorization resource, the hub, JSON replies."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, extension: ExtensionServices) -> None:
        self.extension = extension

    async def hub_server(self) -> SyncRuntime:
        """The running hub, or HTTP 503."""
        try:
            return await self.extension.ready()
        except Exception:
            raise web.HTTPError(503, NOT_RUNNING) from None

    def reply(self, value: Any, status: int = 200) -> None:
        """Send ``value`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))
