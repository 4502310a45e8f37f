"""A tornado WebSocket handler seen as a :class:`~autosync_jupyter.runtime.transport.PeerSocket`.

:meth:`SyncRuntime.serve_peer <autosync_jupyter.runtime.sync_runtime.SyncRuntime.serve_peer>`
drives one peer through four operations (iterate messages, send, close,
abort). Tornado pushes messages into callbacks instead, so :class:`TornadoPeer`
turns them into a bounded queue: the handler's ``on_message`` awaits
:meth:`TornadoPeer.feed` (tornado reads no further frame until it returns,
which is what keeps a fast sender from filling memory), ``on_close`` calls
:meth:`TornadoPeer.feed_closed`, and the hub's side iterates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..runtime.transport import PeerClosed

__all__ = ["TornadoPeer"]

logger = logging.getLogger("autosync_jupyter.serverext.peer")

#: Messages received but not yet taken by the hub; beyond this tornado stops
#: reading from the socket (as ``websockets``' ``max_queue`` does for SyncServer).
MAX_INCOMING: Final = 64
#: How long :meth:`TornadoPeer.close` waits for the peer's closing frame.
CLOSE_TIMEOUT: Final = 5.0


class _Closed:
    """Queue sentinel: the connection is gone."""


class _EndOfMessages(Exception):
    """The connection closed: no more messages."""


_CLOSED: Final = _Closed()


class TornadoPeer:
    """One tornado WebSocket connection, as the sync runtime wants to see it.

    Args:
        handler: the open WebSocket handler (the adapter only calls
            ``write_message``, ``close`` and reads ``ws_connection``).
        remote_address: where the peer connects from, for logs.
        max_incoming: received messages held before tornado stops reading.
    """

    def __init__(
        self,
        handler: WebSocketHandler,
        remote_address: str,
        *,
        max_incoming: int = MAX_INCOMING,
    ) -> None:
        self._handler = handler
        self.remote_address = remote_address
        self._incoming: asyncio.Queue[bytes | str | _Closed] = asyncio.Queue(max_incoming)
        self._closed = asyncio.Event()
        self._pong: asyncio.Future[None] | None = None

    # -- fed by the tornado handler ----------------------------------------------

    async def feed(self, message: bytes | str) -> None:
        """Hand over one received message (waits while the hub is behind)."""
        if self._closed.is_set():
            return
        await self._incoming.put(message)

    def feed_closed(self) -> None:
        """Record that the connection closed (from ``on_close``): iteration ends."""
        if self._closed.is_set():
            return
        self._closed.set()
        # Never block here: on_close is synchronous. Make room for the sentinel
        # by dropping what the hub will not read anyway (the peer is gone).
        while True:
            try:
                self._incoming.put_nowait(_CLOSED)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._incoming.get_nowait()
            else:
                return

    def feed_pong(self) -> None:
        """Record a pong (from the handler's ``on_pong``)."""
        if self._pong is not None and not self._pong.done():
            self._pong.set_result(None)

    @property
    def closed(self) -> bool:
        """Whether the connection has closed."""
        return self._closed.is_set()

    # -- the PeerSocket side -------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        while True:
            try:
                # No local name: the generator must not keep its last frame
                # alive while the connection is idle.
                yield await self._next()
            except _EndOfMessages:
                return

    async def _next(self) -> bytes | str:
        item = await self._incoming.get()
        if isinstance(item, _Closed):
            raise _EndOfMessages
        return item

    async def send(self, data: bytes) -> None:
        """Send one binary message; raise :class:`PeerClosed` if the connection is gone."""
        if self._closed.is_set():
            raise PeerClosed("connection closed")
        try:
            # write_message raises at once when closing, and its future fails
            # if the stream dies before the bytes are written.
            await self._handler.write_message(data, binary=True)
        except WebSocketClosedError as exc:
            raise PeerClosed(str(exc) or "connection closed") from None

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``, after what was already sent.

        Waits (up to a few seconds) for the peer's answering close frame, so
        a server shutdown returns once peers have actually seen the close.
        """
        if not self._closed.is_set():
            self._handler.close(code, reason)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), CLOSE_TIMEOUT)

    async def ping(self, timeout: float) -> bool:
        """Whether the peer answers a ping within ``timeout`` seconds."""
        if self._closed.is_set():
            return False
        if self._pong is None or self._pong.done():
            self._pong = asyncio.get_running_loop().create_future()
        try:
            self._handler.ping(b"autosync")
            await asyncio.wait_for(asyncio.shield(self._pong), timeout)
        except (WebSocketClosedError, asyncio.TimeoutError):
            return False
        return not self._closed.is_set()

    def abort(self) -> None:
        """Drop the connection at once (a peer that does not read)."""
        connection = self._handler.ws_connection
        if connection is not None and connection.stream is not None:
            # Closing the stream ends tornado's read loop, which calls on_close.
            connection.stream.close()
        self.feed_closed()
