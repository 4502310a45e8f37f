"""`WebsocketPeer`: a ``websockets`` connection, either side, as a :class:`PeerSocket`.

The server's accepted connections and the connections a server opens to
its upstream servers are served by the same
:meth:`~autosync_jupyter.runtime.sync_runtime.SyncRuntime.serve_peer` loop;
this adapter is all that differs from the tornado socket of the Jupyter
server extension.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from .transport import PeerClosed

__all__ = ["WebsocketPeer", "format_address"]


def format_address(address: Any) -> str:
    """``host:port`` of a socket address, for logs."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class WebsocketPeer:
    """A ``websockets`` asyncio connection (server or client side) as a :class:`PeerSocket`."""

    def __init__(self, ws: Connection, *, remote_address: str | None = None) -> None:
        self._ws = ws
        self.remote_address = remote_address or format_address(ws.remote_address)

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        frames = aiter(self._ws)
        while True:
            try:
                # No local name: a generator would keep its last frame alive
                # for as long as the connection stays idle.
                yield await anext(frames)
            except (StopAsyncIteration, ConnectionClosed):
                return

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise PeerClosed(str(exc)) from None

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionClosed):  # closed already: what we wanted
            await self._ws.close(code, reason)

    def abort(self) -> None:
        self._ws.transport.abort()

    async def ping(self, timeout: float) -> bool:
        try:
            pong = await self._ws.ping()
            await asyncio.wait_for(pong, timeout)
        except (ConnectionClosed, asyncio.TimeoutError):
            return False
        return True
