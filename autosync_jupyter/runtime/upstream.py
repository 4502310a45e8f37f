"""`Upstream`: a server's connection to another automerge-repo server, kept up.

A server with upstreams is also a client, the way a JS ``Repo`` with both a
server and a client network adapter relays: the hub joins each upstream
server as a peer (:meth:`~autosync_jupyter.core.hub.Hub.open_upstream`),
syncs every document that has changes with it, and asks it for documents
its own peers want and it lacks. This module only keeps the socket: it
connects (``ws://`` or ``wss://``, an optional bearer token), hands the
connection to the runtime's serve loop, and reconnects with exponential
backoff whenever it drops, for as long as the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..auth.redact import redact_url
from ..errors import ConnectionFailed, SyncTimeout
from .client import SSLOption, check_token, check_url, open_socket
from .transport import PeerSocket
from .websocket_peer import WebsocketPeer

__all__ = ["Upstream"]

logger = logging.getLogger("autosync_jupyter.server")

# A connection that lived this long was a success: the next drop starts
# the backoff over.
_HEALTHY_AFTER = 10.0


class Upstream:
    """One upstream server: where it is, how to reach it, and whether we are joined.

    Args:
        url: ``ws://`` or ``wss://`` URL of the server.
        token: a bearer token for servers that authenticate peers.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (a private CA, a
            self-signed certificate); None uses the system's trust store.
        max_message_size: largest message accepted from it, in bytes.
        min_backoff, max_backoff: first and largest wait between attempts.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl: SSLOption = None,
        max_message_size: int | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        check_url(url, ssl)
        check_token(token)
        self.url = url
        self.shown = redact_url(url)
        self._token = token
        self._ssl = ssl
        self._max_message_size = max_message_size
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        #: Set once the first attempt ended: joined, refused or unreachable.
        self.settled = asyncio.Event()
        #: Set while the hub is joined to the server (cleared when it drops).
        self.joined = asyncio.Event()
        #: Why the last attempt failed, for status displays (None after a join).
        self.last_error: str | None = None
        self.connections = 0

    def __repr__(self) -> str:
        state = "joined" if self.joined.is_set() else (self.last_error or "connecting")
        return f"<Upstream {self.shown} {state}>"

    async def run(self, serve: Callable[[PeerSocket], Awaitable[None]]) -> None:
        """Connect, let ``serve`` run the connection, reconnect when it ends; until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = self._min_backoff
        while True:
            try:
                ws = await open_socket(
                    self.url,
                    token=self._token,
                    ssl=self._ssl,
                    max_message_size=self._max_message_size,
                    open_timeout=10.0,
                    ping_interval=20.0,
                    ping_timeout=20.0,
                )
            except (ConnectionFailed, SyncTimeout, ValueError) as exc:
                if self.last_error != str(exc):
                    logger.warning("upstream server: %s; retrying in the background", exc)
                self.last_error = str(exc)
                self.settled.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self.connections += 1
            started = loop.time()
            try:
                await serve(WebsocketPeer(ws, remote_address=self.shown))
            finally:
                self.joined.clear()
                self.settled.set()  # refused after the upgrade: settled too
                # Also when cancelled (the server closes): a clean close, no
                # socket left to the garbage collector.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(1001, "server shutting down"), 2)
            if loop.time() - started >= _HEALTHY_AFTER:
                backoff = self._min_backoff
            logger.info("upstream %s: connection closed; reconnecting", self.shown)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def mark_joined(self) -> None:
        """The hub is joined (the server answered our join)."""
        self.last_error = None
        self.joined.set()
        self.settled.set()
