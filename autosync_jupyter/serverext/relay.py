"""``autosync/relay``: a kernel-hosted sync server reached through the Jupyter server.

A kernel's ``%autosync serve`` listens on ``ws://127.0.0.1:PORT`` of the
kernel's machine, which a browser elsewhere (JupyterHub, a remote server)
cannot reach. The Jupyter server runs its kernels on its own machine and the
browser reaches the Jupyter server, so the JupyterLab panel opens kernel
documents through ``{base_url}autosync/relay?server=<announced URL>``: this
handler connects to the kernel's server and passes the frames through
unchanged, both ways, with back-pressure (each side's send is awaited
before the next frame is read from the other).

Only servers a kernel of this Jupyter server announced (``PUT
autosync/api/servers/<id>`` with the kernels' secret) at
``ws://127.0.0.1:PORT`` or ``ws://[::1]:PORT`` (a plain path at most, no
query) are relayed, so the relay cannot be pointed at other hosts or
services. Refusals happen before
the upgrade: 403 as for ``autosync/ws``, 404 for a URL nobody announced or
that is not relayed, 502 when the kernel's server does not answer. Close
codes travel across (an abnormal end of one side closes the other with
1014, "bad gateway").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from tornado import web
from tornado.websocket import WebSocketClosedError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import CloseCode

from .base import AuthorizedWebSocketHandler, ExtensionServices
from .registry import kernel_server_url

__all__ = ["KernelServerRelayHandler", "relayable"]

logger = logging.getLogger("autosync_jupyter.serverext.relay")

#: Seconds to wait for the kernel's server to accept the relayed connection.
CONNECT_TIMEOUT: Final = 5.0

# Codes a close may carry on the wire; the others (1005, 1006, 1015) only
# describe what a side observed, and become 1014 ("bad gateway").
_SENDABLE: Final = frozenset(
    {
        CloseCode.NORMAL_CLOSURE,
        CloseCode.GOING_AWAY,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.MANDATORY_EXTENSION,
        CloseCode.INTERNAL_ERROR,
    }
)


def relayable(url: str) -> bool:
    """Whether the relay may connect to ``url``: where a kernel's server listens.

    >>> relayable("ws://127.0.0.1:8765"), relayable("ws://[::1]:1")
    (True, True)
    >>> relayable("ws://10.0.0.5:8765"), relayable("wss://127.0.0.1:8765")
    (False, False)
    >>> relayable("ws://127.0.0.1:8765/admin?drop=all")
    False
    """
    return kernel_server_url(url) is not None


def _wire_code(code: int | None) -> int:
    return code if code is not None and (code in _SENDABLE or 3000 <= code < 5000) else 1014


class KernelServerRelayHandler(AuthorizedWebSocketHandler):
    """``autosync/relay?server=<url>``: frames passed between a browser and a kernel's server."""

    def initialize(self, extension: ExtensionServices) -> None:
        super().initialize(extension)
        self._upstream: ClientConnection | None = None
        self._opened = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authorize, check the target, connect to it, then upgrade."""
        await self.authorize()
        target = self.get_query_argument("server", "")
        if target not in {entry.url for entry in self.extension.kernel_servers.entries()}:
            raise web.HTTPError(404, "no kernel server is announced at that URL")
        if not relayable(target):
            raise web.HTTPError(
                404, "only kernel servers on this machine's loopback over ws:// are relayed"
            )
        try:
            self._upstream = await connect(
                target,
                open_timeout=CONNECT_TIMEOUT,
                max_size=self.max_message_size,
                compression=None,
            )
        except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
            logger.info("cannot relay to the kernel server %s: %s", target, exc)
            raise web.HTTPError(502, "the kernel server does not answer") from None
        try:
            await super().get(*args, **kwargs)  # returns when the connection ends
        finally:
            if not self._opened:  # the upgrade was refused (Origin, headers)
                self._spawn(self._upstream.close())

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Start passing the kernel server's frames to the browser."""
        super().open(*args, **kwargs)  # WebSocketMixin starts its keep-alive pings
        assert self._upstream is not None
        self._opened = True
        self._spawn(self._downstream(self._upstream))

    async def _downstream(self, upstream: ClientConnection) -> None:
        try:
            async for message in upstream:
                await self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            return  # the browser left; on_close closes the upstream side
        except ConnectionClosed:
            pass
        self.close(_wire_code(upstream.close_code), upstream.close_reason or "")

    async def on_message(self, message: str | bytes) -> None:
        # Awaited by tornado before it reads the next frame: back-pressure.
        if self._upstream is None:
            return
        with contextlib.suppress(ConnectionClosed):  # _downstream closes the browser's side
            await self._upstream.send(message)

    def on_close(self) -> None:
        if self._upstream is not None:
            # A browser that vanished without a close frame simply left.
            code = 1000 if self.close_code is None else _wire_code(self.close_code)
            self._spawn(self._upstream.close(code, self.close_reason or ""))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
