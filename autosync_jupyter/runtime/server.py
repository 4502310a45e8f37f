"""`SyncServer`: the hub behind a WebSocket server (``websockets``, asyncio).

The server runs in whatever asyncio loop is current (a notebook kernel's, or
its own from the command line). It is a thin transport around
:class:`~autosync_jupyter.hub.Hub`: it reads binary frames, hands them to the
hub, appends the hub's writes to the store and sends the hub's messages —
each message only after every change written before it is durable (group
commit: all writes of one loop turn share one flush). Each connection has a
bounded send queue, so a peer that does not read is dropped instead of
growing the server.

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
import datetime
import errno
import ipaddress
import logging
import os
import shutil
import ssl as ssl_module
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

import automerge.core as am
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from ..auth.oidc import AuthConfig, extract_bearer
from ..auth.redact import websocket_logger
from ..core.hub import (
    ConnectionId,
    Effects,
    Hub,
    HubLimits,
    PeerInfo,
    SharePolicy,
)
from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE, Error, encode
from ..crdt.binding import is_panic
from ..crdt.document import Document, MutableMap, document_title
from ..crdt.values import new_document
from ..errors import AuthError, AutosyncError, DocumentUnreadable, StorageError
from ..ids import DocumentId, generate_document_id, validate_document_id
from ..nesting import wait_blocking
from ..storage import FileStore, MemoryStore, Store
from ..storage.salvage import load_document, log_salvage
from ..wording import counted, printable

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

logger = logging.getLogger("autosync_jupyter.server")

#: A connection whose unsent messages exceed this many bytes is dropped.
DEFAULT_MAX_SEND_QUEUE = 256 * 1024 * 1024
#: All connections' unsent messages together: beyond, the slowest reader goes.
DEFAULT_MAX_QUEUED_BYTES = 512 * 1024 * 1024
#: Connections served at once; more are refused (HTTP 503, or close 1013).
DEFAULT_MAX_CONNECTIONS = 4096
#: How long a connection holding a peer id has to answer a ping when another
#: connection joins with that id (it keeps the id if it answers).
DEFAULT_TAKEOVER_TIMEOUT = 2.0


T = TypeVar("T")

#: Called in the server's loop with the ids of documents whose content just
#: changed (an empty set when only the connected peers changed).
ServerListener = Callable[[frozenset[DocumentId]], None]


@dataclass(frozen=True)
class DocumentSummary:
    """One row of :meth:`SyncServer.document_summaries`.

    Attributes:
        document_id: the document's id.
        loaded: whether it is in memory (a stored document is loaded when a
            peer or the API first asks for it; until then its heads and size
            are unknown).
        heads: its current heads in automerge-repo's URL form (bs58check,
            as after ``#`` in ``automerge:`` URLs), sorted; empty if not
            loaded. ``Document.heads`` gives the raw bytes.
        size: bytes of its compact saved form (None if not loaded).
        peers: connected peers syncing it.
        last_change: when this server last received or made a change to it
            (None if not since the server started).
        error: why the document cannot be read (its stored bytes do not
            load), else None.
        title: what a person calls it: the text of its top-level ``title``
            (else ``name``) field when that is a string or a text, at most
            200 characters; None when it has neither or is not loaded.
    """

    document_id: DocumentId
    loaded: bool
    heads: tuple[str, ...]
    size: int | None
    peers: int
    last_change: datetime.datetime | None
    error: str | None = None
    title: str | None = None


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


class PeerClosed(Exception):
    """The peer's connection is gone: nothing more can be sent on it."""


class PeerSocket(Protocol):
    """A message connection to one peer, whatever carries it (see :meth:`SyncServer.serve_peer`).

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


class _WebsocketsPeer:
    """A ``websockets`` server connection as a :class:`PeerSocket`."""

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        self.remote_address = _format_address(ws.remote_address)

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


@dataclass
class _Link:
    """One peer connection and what waits to be sent on it."""

    ws: PeerSocket
    conn_id: ConnectionId
    queue: deque[tuple[asyncio.Future[None] | None, bytes]] = field(default_factory=deque)
    queued_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the hub may have stopped waiting for a load or a probe.
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    close_task: asyncio.Future[None] | None = None


class SyncServer:
    """An automerge-repo sync server: JS, Rust, R and Python peers connect to it.

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
        share: the share policy (see :data:`~autosync_jupyter.hub.SharePolicy`).
        create_on_request: R-compatible "create empty documents on request".
        ssl: an ``ssl.SSLContext`` to serve ``wss://`` (see
            :func:`~autosync_jupyter.tls.self_signed_context`).
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
        path: str | None = None,
        auth: AuthConfig | None = None,
        insecure_auth_on_loopback: bool = False,
    ) -> None:
        if auth is not None and ssl is None:
            if not insecure_auth_on_loopback:
                raise ValueError(
                    "authentication without TLS would send ID tokens in clear text: "
                    "pass ssl=... (see autosync_jupyter.tls), or, for tests on this "
                    "machine only, insecure_auth_on_loopback=True"
                )
            if not _is_loopback(host):
                raise ValueError(
                    f"insecure_auth_on_loopback=True needs a loopback host, not {host!r}"
                )
            logger.warning("INSECURE: authentication without TLS (loopback testing only)")
        if store is None:
            store = MemoryStore() if ephemeral or data_dir is None else FileStore(data_dir)
        self.host = host
        self.port = port
        self.data_dir = None if ephemeral or data_dir is None else os.fspath(data_dir)
        self.ssl = ssl
        self.path = path
        self.ephemeral = ephemeral
        self._share = share
        self._create_on_request = create_on_request
        self._store = store
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self._origins = list(origins) if origins is not None else None
        self._max_send_queue = max_send_queue
        self._max_queued_bytes = max_queued_bytes
        self._max_connections = max_connections
        self._takeover_timeout = takeover_timeout
        self._queued_bytes = 0
        self._auth = auth
        # Outcome of the token check of each upgrade: claims, or the AuthError.
        self._identities: weakref.WeakKeyDictionary[
            ServerConnection, dict[str, Any] | AuthError
        ] = weakref.WeakKeyDictionary()
        self._hub: Hub | None = None
        self._server: Server | None = None
        self._started = False
        self._links: dict[ConnectionId, _Link] = {}
        self._loads: dict[DocumentId, asyncio.Future[None]] = {}
        self._barrier: asyncio.Future[None] | None = None
        self._next_flush: asyncio.Future[None] | None = None
        self._sync_interval = sync_interval
        self._propagate_scheduled = False
        self._due: set[DocumentId] = set()
        self._last_sync: dict[DocumentId, float] = {}
        self._sync_timers: dict[DocumentId, asyncio.TimerHandle] = {}
        self._written: set[DocumentId] = set()
        self._compacting: set[DocumentId] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._listeners: list[ServerListener] = []
        self._last_change: dict[DocumentId, datetime.datetime] = {}
        # Per document: the heads its size and title were measured at.
        self._sizes: dict[DocumentId, tuple[tuple[str, ...], int, str | None]] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> SyncServer:
        """Open the store and start listening; returns once the socket is bound.

        With ``listen=False`` no socket is opened: connections come from
        another transport through :meth:`serve_peer` (the Jupyter server
        extension mounts the hub on Jupyter's own port this way).
        """
        if self._started:
            raise AutosyncError("server already started")
        made_dir = self.data_dir is not None and not os.path.exists(self.data_dir)
        await self._store.open()
        self._started = True
        self._hub = Hub(
            storage_id=None if self.ephemeral else self._store.storage_id,
            share=self._share,
            stored=self._store,
            create_on_request=self._create_on_request,
            limits=HubLimits.for_message_size(self._max_message_size),
        )
        if not listen:
            logger.info("sync hub ready (data: %s)", self.data_dir or "memory")
            return self
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
        logger.info("serving %s (data: %s)", self.url, self.data_dir or "memory")
        return self

    async def close(self) -> None:
        """Flush everything, close every connection with 1001 and stop listening."""
        if not self._started:
            return
        hub = self._require_hub()
        for timer in self._sync_timers.values():
            timer.cancel()
        self._sync_timers.clear()
        self._apply(hub.propagate())
        with contextlib.suppress(Exception):
            await self._store.flush()
        # Let queued replies (acknowledgements) go out before the close; a
        # peer that does not read gets two seconds, not one per connection.
        with contextlib.suppress(Exception):
            drains = [self._drain(link) for link in self._links.values()]
            await asyncio.wait_for(asyncio.gather(*drains), timeout=2)
        self._apply(hub.shutdown())
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        else:
            closing = [link.close_task for link in self._links.values() if link.close_task]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*closing), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await self._store.close()
        self._server = None
        self._started = False
        self._closed.set()
        logger.info("server closed")

    async def serve_forever(self) -> None:
        """Run until :meth:`close` is called (from another task or a signal)."""
        await self._closed.wait()

    async def __aenter__(self) -> SyncServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``ws://host:port`` (or ``wss://``) of the listening socket."""
        scheme = "wss" if self.ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path or ''}"

    @property
    def storage_id(self) -> str | None:
        """The persistent storage id announced to peers (None when ephemeral)."""
        return self._hub.storage_id if self._hub else None

    @property
    def peer_id(self) -> str | None:
        """This server's peer id (new at every start)."""
        return self._hub.peer_id if self._hub else None

    @property
    def hub(self) -> Hub:
        """The sync engine (for embedding in other transports)."""
        return self._require_hub()

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        docs = len(self._store.document_ids()) if self._hub else 0
        return (
            f"<SyncServer {self.url if self._server else '(not started)'} {state}, "
            f"data: {self.data_dir or 'memory'}, {counted(docs, 'document')}, "
            f"{counted(len(self._links), 'connection')}>"
        )

    # -- documents -----------------------------------------------------------------

    def list_documents(self) -> list[DocumentId]:
        """Ids of every document the server holds (stored or in memory)."""
        hub = self._require_hub()
        ids = set(self._store.document_ids())
        ids.update(info.document_id for info in hub.list_documents())
        return sorted(ids)

    def document_summaries(self) -> list[DocumentSummary]:
        """Describe every document the server holds, sorted by id.

        Cheap enough to call on every refresh of a view: sizes are computed
        once per set of heads.
        """
        hub = self._require_hub()
        loaded = {info.document_id: info for info in hub.list_documents()}
        out = []
        for doc_id in self.list_documents():
            info = loaded.get(doc_id)
            size: int | None = None
            title: str | None = None
            error = hub.problem(doc_id)
            if info is not None:
                cached = self._sizes.get(doc_id)
                if cached is not None and cached[0] == info.heads:
                    size, title = cached[1], cached[2]
                else:
                    try:
                        core = hub.document(doc_id)
                        size, title = len(core.save()), document_title(core)
                    except BaseException as exc:  # one bad document must not hide the others
                        if not (isinstance(exc, Exception) or is_panic(exc)):
                            raise
                        logger.exception("document %s: cannot measure it", doc_id)
                        error = "the Automerge core cannot save it (see the server's log)"
                    else:
                        self._sizes[doc_id] = (info.heads, size, title)
            out.append(
                DocumentSummary(
                    document_id=doc_id,
                    loaded=info is not None,
                    heads=info.heads if info is not None else (),
                    size=size,
                    peers=info.peers if info is not None else 0,
                    last_change=self._last_change.get(doc_id),
                    error=error,
                    title=title,
                )
            )
        return out

    def snapshot(self, doc_id: str) -> Document | None:
        """A copy of a document if it is in memory, else None (no waiting).

        For views that must not await; :meth:`get_document` loads it.
        """
        valid = validate_document_id(doc_id)
        hub = self._require_hub()
        if not hub.is_loaded(valid):
            return None
        return Document(core=hub.document(valid))

    def add_listener(self, listener: ServerListener) -> Callable[[], None]:
        """Call ``listener(changed_ids)`` whenever documents change or peers come and go.

        It runs in the server's loop, right after the change is applied (it
        may not be durable yet), with the ids of the documents that changed,
        or an empty set when only a connection opened or closed. Keep it
        quick: schedule work rather than doing it there. Returns a function
        that removes the listener.
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._started

    def _notify(self, changed: frozenset[DocumentId]) -> None:
        for listener in list(self._listeners):
            try:
                listener(changed)
            except Exception:
                logger.exception("a server listener failed")

    async def create_document(
        self, initial: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> DocumentId:
        """Make a new document (with ``initial`` content) and return its id.

        It is written durably before this returns, and announced to peers
        under the ``announce`` policy. Raises ValueError if ``doc_id`` exists.
        """
        hub = self._require_hub()
        new_id = validate_document_id(doc_id) if doc_id is not None else generate_document_id()
        if new_id in self._store or hub.is_loaded(new_id):
            raise ValueError(f"document {new_id} already exists")
        document = new_document(initial)
        self._apply(hub.add_document(new_id, document))
        await self._store.flush()
        return new_id

    async def get_document(self, doc_id: str) -> Document:
        """Return a copy of a document (loading it from storage if needed).

        The copy is yours to read and even change; to change the served
        document use :meth:`change_document`.

        Raises:
            KeyError: the server does not hold the document;
                :class:`DocumentUnreadable` (a KeyError) when it holds it but
                cannot read it (damaged or unreadable files; the message says
                which).
        """
        valid = validate_document_id(doc_id)
        await self._ensure_loaded(valid)
        return Document(core=self._require_hub().document(valid))

    async def read_document(self, doc_id: str) -> dict[str, Any]:
        """Return a document's content as plain Python values."""
        return (await self.get_document(doc_id)).to_py()

    async def change_document(self, doc_id: str, edit: Callable[[MutableMap], object]) -> None:
        """Edit a document on the server; the change reaches every connected peer.

        ``edit`` receives the document's root as in ``with doc.change() as d``
        (``d["title"] = "x"``, ``d["items"].append(1)``, ``d.increment("n")``)
        and its changes form one Automerge change. Returns once it is durable.

        >>> async def main():
        ...     async with SyncServer(port=0, data_dir=None) as server:
        ...         doc_id = await server.create_document({"items": []})
        ...         await server.change_document(doc_id, lambda d: d["items"].append(1))
        ...         return await server.read_document(doc_id)
        >>> asyncio.run(main())
        {'items': [1]}
        """
        valid = validate_document_id(doc_id)
        await self._ensure_loaded(valid)

        def apply(core: am.Document) -> None:
            with Document(core=core).change() as root:
                edit(root)

        self._apply(self._require_hub().change_document(valid, apply))
        await self._store.flush()

    async def _ensure_loaded(self, doc_id: DocumentId) -> None:
        hub = self._require_hub()
        if hub.is_loaded(doc_id):
            return
        if hub.load_needed(doc_id):
            self._apply(hub.request_load(doc_id))
            pending = self._loads.get(doc_id)
            if pending is not None:
                await asyncio.shield(pending)
        if not hub.is_loaded(doc_id):
            problem = hub.problem(doc_id)
            if problem is not None:
                raise DocumentUnreadable(doc_id, f"document {doc_id} cannot be read: {problem}")
            raise KeyError(doc_id)

    # -- transport ---------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: HttpRequest
    ) -> HttpResponse | None:
        path, _, query = request.path.partition("?")
        if self.path is not None and path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no sync endpoint at this path\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            # Health checks (the JS sync server answers GET / the same way).
            return connection.respond(HTTPStatus.OK, "autosync-jupyter sync server is running\n")
        if len(self._links) >= self._max_connections:
            logger.warning(
                "refused %s: %d connections already (max_connections)",
                _format_address(connection.remote_address),
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
        address = _format_address(connection.remote_address)
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
        await self.serve_peer(_WebsocketsPeer(ws), identity=identity)

    async def serve_peer(self, peer: PeerSocket, *, identity: dict[str, Any] | None = None) -> None:
        """Serve one connected peer until its connection closes.

        For transports other than this server's own socket (the Jupyter
        server extension's tornado WebSocket). The transport has done its
        own authentication; ``identity`` (verified claims) reaches share
        policies as ``peer.identity``.
        """
        hub = self._require_hub()
        if len(self._links) >= self._max_connections:
            logger.warning("refused %s: too many connections", peer.remote_address)
            await peer.close(CloseCode.TRY_AGAIN_LATER, "too many connections, try again later")
            return
        conn_id = hub.open_connection(remote_address=peer.remote_address, identity=identity)
        link = _Link(peer, conn_id)
        self._links[conn_id] = link
        self._notify(frozenset())
        sender = asyncio.create_task(self._send_loop(link))
        try:
            async for data in peer:
                if isinstance(data, str):
                    logger.warning("%s sent a text frame: closing", peer.remote_address)
                    await peer.close(CloseCode.UNSUPPORTED_DATA, "binary frames only")
                    break
                self._apply(hub.receive(conn_id, data))
                del data  # an idle connection must not hold on to its last frame
                if link.closing:
                    break
                # While the hub waits (a document loading, a probe of who holds
                # this peer id), read nothing more: the peer's next messages
                # stay in the socket, not in memory.
                while hub.is_waiting(conn_id) and not link.closing:
                    link.resume.clear()
                    await link.resume.wait()
            if link.close_task is not None:
                # Returning now would close with 1000; let the close we chose happen.
                await asyncio.shield(link.close_task)
        except PeerClosed:
            pass
        finally:
            self._links.pop(conn_id, None)
            self._discard_queue(link)
            self._apply(hub.close_connection(conn_id))
            self._notify(frozenset())
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _apply(self, fx: Effects) -> None:
        """Carry out what the hub asked for (sync; no awaiting in here)."""
        if fx.writes:
            now = datetime.datetime.now(datetime.timezone.utc)
            changed = set()
            for doc_id, data in fx.writes:
                self._store.append(doc_id, data)
                self._written.add(doc_id)
                self._last_change[doc_id] = now
                changed.add(doc_id)
            self._schedule_flush()
            self._notify(frozenset(changed))
        for conn_id, msg in fx.send:
            link = self._links.get(conn_id)
            if link is not None and not link.closing:
                self._enqueue(link, encode(msg))
        for conn_id, code, reason in fx.close:
            link = self._links.get(conn_id)
            if link is not None and not link.closing:
                link.closing = True
                link.close_task = self._spawn(self._close_link(link, code, reason))
        for doc_id in fx.load:
            self._spawn_load(doc_id)
        for holder, newcomer in fx.probe:
            self._spawn(self._probe(holder, newcomer))
        hub = self._hub
        if hub is not None and hub.pending_propagation():
            self._schedule_sync(hub)

    async def _probe(self, holder: ConnectionId, newcomer: ConnectionId) -> None:
        link = self._links.get(holder)
        live = link is not None and not link.closing
        if link is not None and live:
            live = await link.ws.ping(self._takeover_timeout)
        self._apply(self._require_hub().probe_result(newcomer, live))
        self._resume()

    def _resume(self) -> None:
        # A load or a probe finished: connections waiting on the hub look again.
        for link in self._links.values():
            link.resume.set()

    def _schedule_sync(self, hub: Hub) -> None:
        # Per document: at once after a quiet spell, else at the end of the
        # interval since its last round (leading and trailing edge).
        loop = asyncio.get_running_loop()
        now = loop.time()
        for doc_id in hub.dirty_documents():
            if doc_id in self._due or doc_id in self._sync_timers:
                continue
            # With one peer there is nothing to gather: answer it at once.
            interval = self._sync_interval if hub.peer_count(doc_id) > 1 else 0.0
            wait = self._last_sync.get(doc_id, -1e9) + interval - now
            if wait <= 0:
                self._due.add(doc_id)
            else:
                self._sync_timers[doc_id] = loop.call_later(wait, self._sync_later, doc_id)
        if self._due and not self._propagate_scheduled:
            self._propagate_scheduled = True
            loop.call_soon(self._sync_now)

    def _sync_now(self) -> None:
        self._propagate_scheduled = False
        due, self._due = self._due, set()
        self._sync_round(due)

    def _sync_later(self, doc_id: DocumentId) -> None:
        self._sync_timers.pop(doc_id, None)
        self._sync_round({doc_id})

    def _sync_round(self, doc_ids: set[DocumentId]) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._last_sync) > 10_000:  # forget documents that went quiet
            horizon = now - self._sync_interval
            self._last_sync = {d: t for d, t in self._last_sync.items() if t > horizon}
        for doc_id in doc_ids:
            self._last_sync[doc_id] = now
        self._apply(self._require_hub().propagate(doc_ids))

    def _schedule_flush(self) -> None:
        # Every write of this loop turn shares one flush (group commit).
        if self._next_flush is None:
            loop = asyncio.get_running_loop()
            self._next_flush = loop.create_future()
            loop.call_soon(self._start_flush)
        self._barrier = self._next_flush

    def _start_flush(self) -> None:
        barrier, self._next_flush = self._next_flush, None
        written, self._written = self._written, set()
        assert barrier is not None

        async def flush() -> None:
            try:
                await self._store.flush()
            except BaseException as exc:
                logger.exception("storage flush failed: nothing more is acknowledged")
                barrier.set_exception(AutosyncError(f"storage failure: {exc}"))
                raise
            barrier.set_result(None)
            for doc_id in written:
                self._maybe_compact(doc_id)

        self._spawn(flush())

    def _enqueue(self, link: _Link, data: bytes) -> None:
        barrier = self._barrier if self._barrier is not None and not self._barrier.done() else None
        link.queue.append((barrier, data))
        link.queued_bytes += len(data)
        self._queued_bytes += len(data)
        link.wakeup.set()
        if link.queued_bytes > self._max_send_queue:
            logger.warning(
                "peer at %s does not read (%d bytes queued): disconnecting",
                link.ws.remote_address,
                link.queued_bytes,
            )
            self._drop(link)
        while self._queued_bytes > self._max_queued_bytes:
            slowest = max(self._links.values(), key=lambda each: each.queued_bytes)
            if not slowest.queued_bytes:
                break
            logger.warning(
                "%d bytes queued for all peers (max_queued_bytes): disconnecting the slowest, "
                "%s (%d bytes)",
                self._queued_bytes,
                slowest.ws.remote_address,
                slowest.queued_bytes,
            )
            self._drop(slowest)

    def _drop(self, link: _Link) -> None:
        """Cut off a peer that does not read, and free what waited for it."""
        link.closing = True
        self._discard_queue(link)
        self._spawn(self._abort(link))

    def _discard_queue(self, link: _Link) -> None:
        link.queue.clear()
        self._queued_bytes -= link.queued_bytes
        link.queued_bytes = 0

    async def _send_loop(self, link: _Link) -> None:
        try:
            while True:
                await link.wakeup.wait()
                link.wakeup.clear()
                while link.queue:
                    barrier, data = link.queue.popleft()
                    link.queued_bytes -= len(data)
                    self._queued_bytes -= len(data)
                    if barrier is not None and not barrier.done():
                        await asyncio.shield(barrier)
                    await link.ws.send(data)
                    del data
        except PeerClosed:
            pass
        except AutosyncError:
            await link.ws.close(CloseCode.INTERNAL_ERROR, "storage failure")

    async def _drain(self, link: _Link) -> None:
        while link.queue:
            await asyncio.sleep(0.01)

    async def _close_link(self, link: _Link, code: int, reason: str) -> None:
        # Send what is queued first (the error message explaining the close).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain(link), timeout=2)
        await link.ws.close(code, reason)

    async def _abort(self, link: _Link) -> None:
        link.ws.abort()

    def _spawn_load(self, doc_id: DocumentId) -> None:
        if doc_id in self._loads:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loads[doc_id] = future

        async def load() -> None:
            try:
                self._apply(await self._load(doc_id))
            finally:
                self._loads.pop(doc_id, None)
                future.set_result(None)
                self._resume()

        self._spawn(load())

    async def _load(self, doc_id: DocumentId) -> Effects:
        """Read ``doc_id`` from the store and hand the hub what it loads to."""
        hub = self._require_hub()
        try:
            data = await self._store.load(doc_id)
        except StorageError as exc:
            logger.error("document %s: %s", doc_id, exc)
            cause = exc.__cause__
            detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else None
            # Not "missing": a peer's edits must not start a new history
            # over files a later read might still recover.
            return hub.document_load_failed(doc_id, f"its files cannot be read ({detail or exc})")
        except Exception:
            logger.exception("loading document %s failed", doc_id)
            return hub.document_load_failed(
                doc_id, "reading its files failed (see the server's log)"
            )
        if not data:
            problem = None
            if (damage := self._store.damage(doc_id)).damaged_bytes:
                problem = (
                    f"all {damage.damaged_bytes} stored bytes were damaged (set aside "
                    "under .corrupt/); a peer with a copy restores it"
                )
            return hub.document_loaded(doc_id, None, problem=problem)
        # Salvage may reload growing prefixes of damaged bytes: off the loop.
        loaded = await asyncio.to_thread(load_document, data)
        del data
        if loaded.document is None:
            logger.error("document %s: nothing in storage could be loaded", doc_id)
            return hub.document_load_failed(doc_id, "its stored bytes do not load")
        log_salvage(doc_id, loaded)
        return hub.document_loaded(doc_id, loaded.document, waiting=loaded.waiting)

    def _maybe_compact(self, doc_id: DocumentId) -> None:
        hub = self._hub
        if hub is None or doc_id in self._compacting or not hub.is_loaded(doc_id):
            return
        if not self._store.needs_compaction(doc_id):
            return
        self._compacting.add(doc_id)
        snapshot, heads = hub.save_document(doc_id)
        expected = (sorted(heads), hub.waiting_changes(doc_id))

        def verify(data: bytes) -> bool:
            # The snapshot as the store reads it back must load to the same
            # document, waiting changes included.
            loaded = load_document(data)
            if loaded.document is None:
                return False
            return (sorted(loaded.document.get_heads()), len(loaded.waiting)) == expected

        async def compact() -> None:
            try:
                await self._store.compact(doc_id, snapshot, heads, verify=verify)
            except AutosyncError as exc:
                logger.error(
                    "compaction of document %s failed, its files are kept: %s", doc_id, exc
                )
            finally:
                self._compacting.discard(doc_id)

        self._spawn(compact())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (ConnectionClosed, PeerClosed, AutosyncError)):
                logger.error("background task failed", exc_info=exc)

    def _require_hub(self) -> Hub:
        if self._hub is None:
            raise AutosyncError("the server is not started: call start() first")
        return self._hub

    def peers(self) -> list[PeerInfo]:
        """The peers connected right now."""
        return self._require_hub().peers()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SyncServer | None = None
        self._closed = False

    def start(self) -> BackgroundSyncServer:
        """Start the server thread; returns once the socket is listening."""
        if self._closed:
            raise AutosyncError("this server was closed; make a new BackgroundSyncServer")
        if self._server is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(SyncServer(**self._options).start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_until_complete(self._server.serve_forever())
            loop.close()

        self._thread = threading.Thread(target=run, name="autosync-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def _call(self, coro: Awaitable[T]) -> T:
        if self._loop is None:
            raise AutosyncError("the server is not started")

        async def wrapper() -> T:
            return await coro

        return wait_blocking(asyncio.run_coroutine_threadsafe(wrapper(), self._loop))

    def close(self) -> None:
        """Stop the server (flushing everything) and join its thread."""
        self._closed = True
        if self._server is not None and self._thread is not None:
            self._call(self._server.close())
            self._thread.join(timeout=10)
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
