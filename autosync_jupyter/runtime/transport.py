"""What a transport must offer to carry one peer: :class:`PeerSocket` and :class:`PeerClosed`.

:meth:`SyncRuntime.serve_peer <autosync_jupyter.runtime.sync_runtime.SyncRuntime.serve_peer>`
drives any connection through this protocol: the ``websockets`` server of
:class:`~autosync_jupyter.runtime.server.SyncServer` and the tornado
WebSocket of the Jupyter server extension each adapt theirs to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["PeerClosed", "PeerSocket"]


class PeerClosed(Exception):
    """The peer's connection is gone: nothing more can be sent on it."""


class PeerSocket(Protocol):
    """A message connection to one peer, whatever carries it.

    Iterating yields the peer's messages (``bytes``; ``str`` for a text
    frame, which is refused) and ends when the connection closes.
    """

    @property
    def remote_address(self) -> str:
        """Where the peer connects from, for logs."""

    def __aiter__(self) -> AsyncIterator[bytes | str]:
        """The peer's messages, until the connection closes."""

    async def send(self, data: bytes) -> None:
        """Send one binary message; raise :class:`PeerClosed` if the connection is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code and reason (after what was sent)."""

    def abort(self) -> None:
        """Drop the connection at once (a peer that does not read)."""

    async def ping(self, timeout: float) -> bool:
        """Whether the peer answers a ping within ``timeout`` seconds."""
