"""`SyncServer`: the sync runtime behind its own WebSocket server (``websockets``, asyncio).

The server runs in whatever asyncio loop is current (a notebook kernel's, or
its own from the command line). Everything about documents, peers and
storage is :class:`~autosync_jupyter.runtime.sync_runtime.SyncRuntime`'s;
this module owns only the socket: listening (plain or TLS), answering plain
HTTP requests (health checks, wrong paths, too many connections), Origin
checks, the OIDC check of each upgrade, and the adapter that hands each
accepted connection to :meth:`~SyncRuntime.serve_peer`.
:class:`BackgroundSyncServer` runs one in a thread of its own, for code
without an event loop.

>>> async def main():
...     async with SyncServer(port=0, data_dir=None) as server:
...         doc_id = await server.create_document({"title": "hello"})
...         return server.url.startswith("ws://127.0.0.1:"), doc_id in server.list_documents()
>>> asyncio.run(main())
(True, True)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import shutil
import ssl as ssl_module
import weakref
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from ..auth.oidc import AuthConfig, extract_bearer
from ..auth.redact import websocket_logger
from ..core.hub import SharePolicy
from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE, Error, encode
from ..crdt.document import Document, MutableMap
from ..errors import AuthError, AutosyncError
from ..ids import DocumentId
from ..storage import Store
from ..wording import printable
from .loop_thread import LoopThread
from .sync_runtime import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_LOADED_DOCUMENTS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_SEND_QUEUE,
    DEFAULT_TAKEOVER_TIMEOUT,
    DEFAULT_UPSTREAM_TIMEOUT,
    DocumentSummary,
    ServerListener,
    SyncRuntime,
    logger,
)
from .transport import PeerClosed, PeerSocket
from .upstream import Upstream
from .websocket_peer import WebsocketPeer, format_address

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_SEND_QUEUE",
    "BackgroundSyncServer",
    "DocumentSummary",
    "PeerClosed",
    "PeerSocket",
    "ServerListener",
    "SyncServer",
]

T = TypeVar("T")
_S = TypeVar("_S", bound="SyncServer")


def _listen_error(host: str, port: int, exc: OSError) -> str:
    """What to tell a user whose server could not listen."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (another autosync serve, or a "
            "kernel's %autosync serve?); choose another port, or port 0 for any free one"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address"
    return f"cannot listen on {where}: {exc.strerror or exc}"


class SyncServer(SyncRuntime):
    """An automerge-repo sync server: JS, Rust, R and Python peers connect to it.

    A :class:`~autosync_jupyter.runtime.sync_runtime.SyncRuntime` (whose
    document methods it has) listening on its own socket.

    Args:
        host: interface to listen on (``127.0.0.1`` keeps it on this machine).
        port: TCP port; 0 picks a free one (read it back from :attr:`url`).
        data_dir: directory of the durable store (compatible with the JS
            sync server's NodeFS layout and R's ``<id>.automerge`` files);
            None keeps documents in memory only.
        store: a :class:`~autosync_jupyter.storage.Store` to use instead of
            ``data_dir``.
        ephemeral: announce no storage id (``isEphemeral``) and keep
            everything in memory.
        share: the share policy (see :data:`~autosync_jupyter.core.hub.SharePolicy`).
        create_on_request: R-compatible "create empty documents on request".
        ssl: an ``ssl.SSLContext`` to serve ``wss://`` (see
            :func:`~autosync_jupyter.auth.tls.server_ssl_context`).
        max_message_size: largest accepted message in bytes (close 1009 above).
        ping_interval, ping_timeout: keep-alive; a peer that misses a pong
            for ``ping_timeout`` seconds is dropped.
        close_timeout: how long a closing handshake may take before the
            connection is cut.
        sync_interval: the shortest time between two rounds of sync
            messages for a document shared by several peers, in seconds. The
            first change after a quiet spell goes out at once; changes
            arriving faster are gathered into one message per peer (as the
            JS server's 100 ms throttle does). A document with a single peer
            is answered at once. 0 sends at every loop turn.
        origins: if given, only browser pages from these origins may connect.
        max_send_queue: bytes of unsent messages after which a peer that does
            not read is disconnected.
        max_queued_bytes: unsent bytes of all connections together; beyond,
            the connection with the most waiting is dropped (the server's
            memory for outgoing data stays within this).
        max_connections: connections served at once; more are refused with
            HTTP 503 before the upgrade (or closed with 1013 when they come
            through :meth:`serve_peer`).
        takeover_timeout: when a second connection joins with the peer id of
            a live one (without authentication), the live one is pinged; if it
            answers within this many seconds it keeps the id and the newcomer
            is refused, else it is replaced (a client back after a dropped
            socket). With authentication, only the same identity may take a
            peer id over, at once.
        idle_timeout: seconds after which a document no peer syncs, its
            every change durable, leaves memory (None: never); it is loaded
            again when next asked for.
        max_loaded_documents: documents kept in memory at most (None: no
            bound); beyond, the least recently used idle ones leave it.
        upstreams, upstream_token, upstream_ssl, upstream_timeout: other
            servers this one is also a client of, syncing every document
            with them (see :class:`~autosync_jupyter.runtime.sync_runtime.SyncRuntime`).
        path: if given, only upgrades on this URL path are accepted.
        auth: an :class:`~autosync_jupyter.auth.AuthConfig`: every connection
            must present a valid OIDC ID token, as ``Authorization: Bearer``
            on the upgrade (what R and Python clients send) or as a ``token``
            query parameter (the only channel a browser's WebSocket, and so
            the official JS client, has; accepted only over ``wss://``). A
            failed check gets an ``error`` message ("Authentication failed",
            as R clients expect) and a 1008 close before the peer can touch
            any document. The verified claims reach share policies as
            ``peer.identity``. Tokens are checked when a connection opens; a
            token that expires later does not cut a live connection (as in
            R), the next reconnect needs a fresh one. Requires ``ssl``.
        insecure_auth_on_loopback: allow ``auth`` without TLS on a loopback
            host, for tests only (tokens then travel in clear text).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = ".automerge",
        store: Store | None = None,
        ephemeral: bool = False,
        share: SharePolicy = "request",
        create_on_request: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        ping_interval: float | None = 10.0,
        ping_timeout: float | None = 10.0,
        close_timeout: float = 5.0,
        sync_interval: float = 0.1,
        origins: Sequence[str] | None = None,
        max_send_queue: int = DEFAULT_MAX_SEND_QUEUE,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        takeover_timeout: float = DEFAULT_TAKEOVER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_loaded_documents: int | None = DEFAULT_MAX_LOADED_DOCUMENTS,
        upstreams: Sequence[str | Upstream] = (),
        upstream_token: str | None = None,
        upstream_ssl: ssl_module.SSLContext | None = None,
        upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
        path: str | None = None,
        auth: AuthConfig | None = None,
        insecure_auth_on_loopback: bool = False,
    ) -> None:
        if auth is not None and ssl is None:
            if not insecure_auth_on_loopback:
                raise ValueError(
                    "authentication without TLS would send ID tokens in clear text: "
                    "pass ssl=... (autosync_jupyter.server_ssl_context), or, for tests on this "
                    "machine only, insecure_auth_on_loopback=True"
                )
            if not _is_loopback(host):
                raise ValueError(
                    f"insecure_auth_on_loopback=True needs a loopback host, not {host!r}"
                )
            logger.warning("INSECURE: authentication without TLS (loopback testing only)")
        super().__init__(
            data_dir=data_dir,
            store=store,
            ephemeral=ephemeral,
            share=share,
            create_on_request=create_on_request,
            max_message_size=max_message_size,
            sync_interval=sync_interval,
            max_send_queue=max_send_queue,
            max_queued_bytes=max_queued_bytes,
            max_connections=max_connections,
            takeover_timeout=takeover_timeout,
            idle_timeout=idle_timeout,
            max_loaded_documents=max_loaded_documents,
            upstreams=upstreams,
            upstream_token=upstream_token,
            upstream_ssl=upstream_ssl,
            upstream_timeout=upstream_timeout,
        )
        self.host = host
        self.port = port
        self.ssl = ssl
        self.path = path
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._origins = list(origins) if origins is not None else None
        self._auth = auth
        # Outcome of the token check of each upgrade: claims, or the AuthError.
        self._identities: weakref.WeakKeyDictionary[
            ServerConnection, dict[str, Any] | AuthError
        ] = weakref.WeakKeyDictionary()
        self._server: Server | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self: _S) -> _S:
        """Open the store and start listening; returns once the socket is bound.

        To serve peers over another transport without a socket of its own,
        use a :class:`~autosync_jupyter.runtime.sync_runtime.SyncRuntime`.
        """
        made_dir = self.data_dir is not None and not os.path.exists(self.data_dir)
        await self._open()
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self.port,
                ssl=self.ssl,
                compression=None,
                max_size=self._max_message_size,
                max_queue=64,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                close_timeout=self._close_timeout,
                origins=self._origins,  # type: ignore[arg-type]
                process_request=self._process_request,
                server_header="autosync-jupyter",
                logger=websocket_logger("autosync_jupyter.server.websocket"),
            )
        except OSError as exc:
            await self._store.close()
            self._started, self._hub = False, None
            if made_dir and self.data_dir is not None:
                # Nothing was stored yet: leave the disk as it was.
                shutil.rmtree(self.data_dir, ignore_errors=True)
            raise AutosyncError(_listen_error(self.host, self.port, exc)) from exc
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        await self._await_upstreams()
        logger.info("serving %s (data: %s)", self.url, self.data_location)
        return self

    async def _close_connections(self) -> None:
        # Stop listening too: websockets closes what is still open (1001).
        if self._server is None:
            return
        self._server.close(close_connections=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        self._server = None

    @property
    def url(self) -> str:
        """``ws://host:port`` (or ``wss://``) of the listening socket."""
        scheme = "wss" if self.ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path or ''}"

    def __repr__(self) -> str:
        return f"<SyncServer {self.url if self._server else '(not started)'} {self._status()}>"

    # -- the socket --------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: HttpRequest
    ) -> HttpResponse | None:
        path, _, query = request.path.partition("?")
        if self.path is not None and path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no sync endpoint at this path\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            # Health checks (the JS sync server answers GET / the same way).
            return connection.respond(HTTPStatus.OK, "autosync-jupyter sync server is running\n")
        if self._full():
            logger.warning(
                "refused %s: %d connections already (max_connections)",
                format_address(connection.remote_address),
                len(self._links),
            )
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "too many connections, try again later\n"
            )
        if self._auth is not None:
            self._identities[connection] = await self._authenticate(connection, request, query)
        return None

    async def _authenticate(
        self, connection: ServerConnection, request: HttpRequest, query: str
    ) -> dict[str, Any] | AuthError:
        assert self._auth is not None
        address = format_address(connection.remote_address)
        in_url = parse_qs(query).get("token")
        try:
            header = request.headers.get("Authorization")
            if header is None and in_url:
                if self.ssl is None:
                    # A URL is logged by proxies and browsers' histories:
                    # never accept a token there without TLS.
                    raise AuthError("token in the URL of a plain ws:// server")
                token = in_url[0]
            else:
                token = extract_bearer(header)
            claims = await self._auth.authenticate(token)
        except AuthError as exc:
            logger.warning("authentication failed for %s: %s", address, printable(exc.reason))
            return exc
        who = printable(claims.get("email") or claims.get("sub"))  # claims are the peer's text
        logger.info("authenticated %s as %s", address, who)
        return claims

    async def _handle(self, ws: ServerConnection) -> None:
        identity = None
        if self._auth is not None:
            outcome = self._identities.pop(ws, None)
            if not isinstance(outcome, dict):
                # R-compatible: the reason in-band, then close; nothing reached the hub.
                public = AuthError.public_message
                hub = self._require_hub()
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(encode(Error(sender_id=hub.peer_id, message=public)))
                    await ws.close(CloseCode.POLICY_VIOLATION, public)
                return
            identity = outcome
        await self.serve_peer(WebsocketPeer(ws), identity=identity)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BackgroundSyncServer:
    """A :class:`SyncServer` running in its own thread, with blocking methods.

    For scripts and consoles that have no event loop of their own; the hub
    still runs on one loop (the thread's). Arguments are those of
    :class:`SyncServer`. It starts on first use (or with :meth:`start`, or
    ``with``); :meth:`close` (or leaving the ``with``) flushes and stops it.

    >>> with BackgroundSyncServer(data_dir=None) as server:
    ...     doc_id = server.create_document({"n": 1})
    ...     server.read_document(doc_id)
    {'n': 1}
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._runner: LoopThread | None = None
        self._server: SyncServer | None = None
        self._closed = False

    def start(self) -> BackgroundSyncServer:
        """Start the server thread; returns once the socket is listening."""
        if self._closed:
            raise AutosyncError("this server was closed; make a new BackgroundSyncServer")
        if self._server is not None:
            return self
        runner = LoopThread("autosync-server")
        try:
            self._server = runner.run(SyncServer(**self._options).start())
        except BaseException:
            runner.stop()
            raise
        self._runner = runner
        return self

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._runner is not None, "start() first"
        return self._runner.run(coro)

    def close(self) -> None:
        """Stop the server (flushing everything) and join its thread."""
        self._closed = True
        if self._server is not None and self._runner is not None:
            try:
                self._call(self._server.close())
            finally:
                self._runner.stop()
                self._server = None

    def _running(self) -> SyncServer:
        self.start()
        assert self._server is not None
        return self._server

    @property
    def url(self) -> str:
        """The server's URL (starting it if need be)."""
        return self._running().url

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen for ``port=0``), starting it if need be."""
        return self._running().port

    def create_document(
        self, initial: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> DocumentId:
        """Blocking :meth:`SyncServer.create_document`."""
        return self._call(self._running().create_document(initial, doc_id))

    def list_documents(self) -> list[DocumentId]:
        """Blocking :meth:`SyncServer.list_documents`."""
        server = self._running()

        async def run() -> list[DocumentId]:
            return server.list_documents()

        return self._call(run())

    def get_document(self, doc_id: str) -> Document:
        """Blocking :meth:`SyncServer.get_document`."""
        return self._call(self._running().get_document(doc_id))

    def read_document(self, doc_id: str) -> dict[str, Any]:
        """Blocking :meth:`SyncServer.read_document`."""
        return self._call(self._running().read_document(doc_id))

    def change_document(self, doc_id: str, edit: Callable[[MutableMap], object]) -> None:
        """Blocking :meth:`SyncServer.change_document`."""
        self._call(self._running().change_document(doc_id, edit))

    def __enter__(self) -> BackgroundSyncServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._server) if self._server else "<BackgroundSyncServer (not started)>"
