"""What ``%autosync`` keeps in one kernel: its sync server and its client connections.

Everything here lives in the kernel's own event loop (the main thread's),
so the server keeps serving between cells and, thanks to
:mod:`autosync_jupyter.nesting`, during blocking magics too. The session is
closed when the extension is unloaded (``%unload_ext``, ``%reload_ext``) and
when the kernel process exits (shutdown or restart), so no server is left
listening and connected peers see a clean close (1001).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..auth.redact import redact_url
from ..errors import AutosyncError
from ..nesting import kernel_loop, run_blocking
from ..runtime.client import SSLOption
from ..runtime.connection import Connection, connect
from ..runtime.server import SyncServer

if TYPE_CHECKING:
    from .announce import ServerAnnouncer

__all__ = ["KernelSession", "current_session"]

logger = logging.getLogger("autosync_jupyter.jupyter.session")

T = TypeVar("T")

# Bounds the cleanup at kernel exit: jupyter_client kills a kernel that has
# not exited 5 s after a shutdown request.
_CLOSE_TIMEOUT = 3.0


class KernelSession:
    """The in-kernel server and the live connections opened by ``%autosync``."""

    def __init__(self) -> None:
        self.server: SyncServer | None = None
        self.connections: dict[tuple[str, str | None], Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._announcer: ServerAnnouncer | None = None
        atexit.register(self._close_at_exit)

    def require_kernel(self, what: str) -> asyncio.AbstractEventLoop:
        """Return the kernel's loop, or refuse: the caller is not in the kernel's main thread."""
        loop = kernel_loop()
        if loop is None:
            raise AutosyncError(
                f"{what} must run in a notebook kernel's main thread, where the kernel's "
                "event loop runs (not in an ipykernel subshell or another thread): the "
                "server would otherwise live in a loop that stops with the thread"
            )
        if self._loop is not None and loop is not self._loop and self.server is not None:
            raise AutosyncError(f"{what}: the kernel's event loop changed; restart the kernel")
        self._loop = loop
        return loop

    def run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        """Run a coroutine to completion from a magic, keeping the kernel's loop going."""
        try:
            self.require_kernel(what)
        except AutosyncError:
            coro.close()
            raise
        return run_blocking(coro, name=what, alternative=f"await ... instead of {what}")

    def check_no_server(self) -> None:
        """Raise unless this kernel may start a server (one runs at a time)."""
        if self.server is not None and self.server.running:
            raise AutosyncError(
                f"a server already runs in this kernel at {self.server.url}; "
                "`%autosync stop` it first"
            )

    async def start_server(self, server: SyncServer) -> SyncServer:
        """Start ``server`` in this loop as the kernel's server (one at a time)."""
        self.check_no_server()
        await server.start()
        self.server = server
        self._announce(server)
        return server

    def _announce(self, server: SyncServer) -> None:
        # Under a Jupyter server with the extension, the JupyterLab panel
        # lists this server's documents.
        from .announce import ServerAnnouncer
        from .discovery import jupyter_server

        try:
            found = jupyter_server()
        except Exception as exc:  # a broken runtime dir must not break serve
            logger.debug("no Jupyter server to announce to: %s", exc)
            return
        if found is not None:
            self._announcer = ServerAnnouncer(server, *found)
            self._announcer.start()

    async def stop_server(self) -> str | None:
        """Stop the kernel's server; returns its URL, or None if none was running."""
        server, self.server = self.server, None
        announcer, self._announcer = self._announcer, None
        url = None
        if server is not None and server.running:
            url = server.url
            await server.close()
        if announcer is not None:
            # After the close: at kernel exit the withdrawal may fail (no
            # threads any more); the panel's entry then expires by itself.
            try:
                await announcer.stop()
            except Exception as exc:
                logger.debug("withdrawing the server's announcement failed: %s", exc)
        return url

    def require_server(self) -> SyncServer:
        """The running in-kernel server, or a clear error saying how to start one."""
        if self.server is None or not self.server.running:
            raise AutosyncError("no server runs in this kernel: start one with `%autosync serve`")
        return self.server

    async def connection(
        self, url: str, *, token: str | None = None, ssl: SSLOption = None
    ) -> Connection:
        """A live connection to ``url`` (shared by every ``%autosync open`` of it)."""
        key = (url, token)
        conn = self.connections.get(key)
        if conn is not None and not conn.closed:
            return conn
        conn = await connect(url, token=token, ssl=ssl).start()
        self.connections[key] = conn
        return conn

    async def aclose(self) -> None:
        """Close every connection (flushing edits), then the server."""
        connections, self.connections = list(self.connections.values()), {}
        for conn in connections:
            try:
                await conn.close(timeout=_CLOSE_TIMEOUT)
            except Exception as exc:
                logger.warning("closing the connection to %s: %s", redact_url(conn.url), exc)
        with contextlib.suppress(Exception):
            await self.stop_server()

    def close(self) -> None:
        """Close everything now, from a cell (``%unload_ext``) or at process exit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        if kernel_loop() is not None:
            run_blocking(self.aclose(), name="close", alternative="await")
        else:
            self._close_at_exit()

    def _close_at_exit(self) -> None:
        # The kernel's loop has stopped (shutdown request) but is not closed:
        # run it once more so peers get their closing handshake and every
        # acknowledged change is flushed.
        self._closed = True
        loop = self._loop
        if loop is None or loop.is_closed() or loop.is_running():
            return
        if self.server is None and not self.connections:
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait_for(self.aclose(), _CLOSE_TIMEOUT * 2))


_session: KernelSession | None = None


def current_session(create: bool = True) -> KernelSession | None:
    """The kernel's session (made on first use unless ``create`` is False)."""
    global _session
    if _session is None and create:
        _session = KernelSession()
    return _session


def end_session() -> None:
    """Close and forget the kernel's session (the extension is being unloaded)."""
    global _session
    session, _session = _session, None
    if session is not None:
        session.close()
