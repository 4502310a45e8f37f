"""A live connection to a sync server: :func:`connect`, :class:`Connection`, :class:`DocHandle`.

:func:`connect` opens a live :class:`Connection` that carries any number of
documents over one WebSocket. :meth:`Connection.open` and
:meth:`Connection.create` return a :class:`DocHandle` whose ``doc`` stays in
sync: local edits (``with handle.doc.change() as d: ...``) are pushed at once,
remote changes are applied as they arrive and reported to callbacks and to an
async iterator (:class:`ChangeStream`), and after a dropped link or a server
restart the connection comes back with backoff and resyncs every open
document without losing edits made while offline.

>>> from autosync_jupyter import SyncServer, fetch
>>> async def main():
...     async with SyncServer(port=0, data_dir=None) as server:
...         doc_id = await server.create_document({"title": "hello"})
...         doc = await fetch(server.url, doc_id)
...         async with connect(server.url) as conn:
...             handle = await conn.open(doc_id)
...             with handle.doc.change() as d:
...                 d["title"] = "hello again"
...             await handle.flush()
...         return doc.to_py(), (await server.read_document(doc_id))["title"]
>>> asyncio.run(main())
({'title': 'hello'}, 'hello again')

For scripts without an event loop, see :func:`autosync_jupyter.connect_blocking`.
The transport (socket, handshake) lives in :mod:`autosync_jupyter.runtime.client`;
the rules of the conversation (opening, answers, acknowledgement, unavailable
documents, resync after a reconnect) are the sans-I/O
:class:`~autosync_jupyter.core.peer.ClientPeer`, which :class:`Connection`
drives: it feeds it what the server sends and carries out the
:class:`~autosync_jupyter.core.peer.PeerEffects` it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Generator
from collections.abc import Mapping as MappingABC
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, TypeVar

import automerge.core as am
import cbor2
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..auth.redact import redact_url
from ..core.peer import ClientPeer, PeerEffects
from ..core.protocol import Message, Peer, Request, Sync
from ..crdt.document import ChangeEvent, Document, MutableMap
from ..crdt.values import ensure_first_change
from ..errors import (
    AutosyncError,
    ConnectionFailed,
    DocumentUnavailable,
    ProtocolError,
    ServerError,
    SyncTimeout,
)
from ..ids import (
    DocumentId,
    PeerId,
    document_url,
    encode_heads,
    generate_document_id,
    generate_peer_id,
    interpret_as_document_id,
)
from .client import (
    DEFAULT_MAX_MESSAGE_SIZE,
    EMPTY_DOCUMENT_GRACE,
    HANDSHAKE_TIMEOUT,
    SSLOption,
    check_token,
    check_url,
    close_quietly,
    decode_message,
    describe_close,
    empty_answer_message,
    encode_message,
    handshake,
    open_socket,
    unavailable_message,
    verbose_off,
    verbose_on,
)
from .presence import Presence

__all__ = [
    "MAX_OFFERED",
    "ChangeCallback",
    "ChangeStream",
    "Connection",
    "DocHandle",
    "EphemeralCallback",
    "HandleState",
    "connect",
]

logger = logging.getLogger("autosync_jupyter.client")

#: Most document ids :attr:`Connection.offered` remembers (a server is a peer too).
MAX_OFFERED = 100_000

#: Where a :class:`DocHandle` is: asking the server, holding the document
#: (possibly empty, after ``open(..., allow_empty=True)``), told the server
#: does not have it (a later arrival still makes it ready), or closed.
HandleState = Literal["requesting", "ready", "unavailable", "closed"]

T = TypeVar("T")

# Sync work on a document with an open change waits and is retried this
# long after (see crdt.binding.is_transaction_open).
_RETRY_DELAY = 0.01


# -- live connection -----------------------------------------------------------------


ChangeCallback = Callable[[ChangeEvent], object]
EphemeralCallback = Callable[[PeerId, Any], object]


class DocHandle:
    """A document kept in sync over a :class:`Connection`.

    ``doc`` is a live :class:`~autosync_jupyter.Document`: edit it
    with ``with handle.doc.change() as d: ...`` and the change is sent to the
    server at once; changes from other peers are applied as they arrive and
    reported to :meth:`on_change` callbacks and :meth:`changes` iterators
    (every change, local and remote: ``event.origin`` tells them apart).

    Get handles from :meth:`Connection.open` or :meth:`Connection.create`.
    """

    def __init__(self, conn: Connection, document_id: DocumentId, doc: Document) -> None:
        self._conn = conn
        self.document_id: DocumentId = document_id
        #: The live document.
        self.doc: Document = doc
        self._closed = False
        self._callbacks: list[ChangeCallback] = []
        self._ephemeral_callbacks: list[EphemeralCallback] = []
        self._queues: list[asyncio.Queue[ChangeEvent | None]] = []
        # Serialises the connection's work on the document with edits made
        # from other threads (the blocking façade); uncontended in async code.
        self._lock = threading.RLock()
        self._unsubscribe = doc.add_listener(self._on_document_change)
        # Listening from the start: a peer announces itself once, when it
        # arrives, whether or not anyone here has looked yet.
        self._presence = Presence(
            self.broadcast,
            self.on_ephemeral,
            lambda fn: conn._call_in_loop(lambda _: fn(), None),
            peer_id=conn.peer_id,
            reconnects=lambda: conn.reconnects,
        )

    @property
    def url(self) -> str:
        """The document's ``automerge:`` URL, to share with other peers."""
        return document_url(self.document_id)

    @property
    def state(self) -> HandleState:
        """``requesting``, ``ready``, ``unavailable`` or ``closed``."""
        if self._closed:
            return "closed"
        return self._conn._state_of(self.document_id)

    @property
    def ready(self) -> bool:
        """Whether the document holds data (from the server or from local edits)."""
        return self.state == "ready"

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes.

        ``event`` is a :class:`~autosync_jupyter.ChangeEvent`
        (``origin`` is ``"local"`` or ``"remote"``, with the heads before and
        after). Callbacks run in the connection's event loop; an exception in
        one is logged, not raised.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def changes(self) -> ChangeStream:
        """An async iterator over changes from now on, until the handle is closed.

        Changes are queued from the moment this is called, so none is missed
        between the call and the first ``await``:

        >>> async def show(handle):  # doctest: +SKIP
        ...     async for event in handle.changes():
        ...         print(event.origin, handle.doc.to_py())
        """
        return ChangeStream(self)

    def on_ephemeral(self, callback: EphemeralCallback) -> Callable[[], None]:
        """Call ``callback(sender_id, payload)`` for each ephemeral message of this document.

        Ephemeral messages (presence, cursors) are not stored; ``payload`` is
        the decoded CBOR value another peer passed to its ``broadcast``.
        Returns a function that unsubscribes.
        """
        self._ephemeral_callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._ephemeral_callbacks.remove(callback)

        return unsubscribe

    def broadcast(self, payload: Any) -> None:
        """Send an ephemeral message (any CBOR-encodable value) to the document's other peers.

        Best effort, as in automerge-repo: nothing is sent while disconnected.
        """
        _check_not_closed(self)
        self._conn._broadcast(self, payload)

    @property
    def presence(self) -> Presence:
        """Who else is in the document now, and what this peer tells them (nothing is stored).

        ``handle.presence.announce(name="Ada", viewing=["rows"])`` makes this
        peer seen; ``handle.presence.peers`` maps the other peers' ids to
        what they announced (:class:`~autosync_jupyter.PeerPresence`). The
        messages are automerge-repo's ``Presence`` ones, so JS apps see us.
        """
        return self._presence

    async def when_ready(self, timeout: float | None = None) -> None:
        """Wait until the document holds data: a late arrival after ``unavailable`` counts.

        Raises:
            SyncTimeout: not ready within ``timeout`` seconds.
        """
        await self._conn._wait_until(
            lambda: self.state == "ready" or _check_not_closed(self),
            timeout,
            f"document {self.document_id} to arrive",
        )

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the server has acknowledged every change made here so far.

        "Acknowledged" means the server's sync messages advertised heads that
        include ours (our server sends those only once the change is on disk).

        Raises:
            SyncTimeout: not acknowledged within ``timeout`` seconds (default:
                the connection's ``timeout``); the changes are kept and will
                still be sent when the connection allows.
        """
        await self._conn._flush(self, timeout)

    async def close(self, *, flush: bool = True, timeout: float | None = None) -> None:
        """Flush (unless ``flush=False``), then stop syncing this document.

        Iterators from :meth:`changes` end. The :attr:`doc` stays usable as a
        local document. A flush that times out still closes the handle, then
        raises :class:`~autosync_jupyter.errors.SyncTimeout`.
        """
        if self._closed:
            return
        self._presence.leave()
        try:
            if flush and self.ready:
                await self.flush(timeout)
        finally:
            self._conn._forget(self)

    def locked(self) -> AbstractContextManager[Any]:
        """Hold this to read the document from another thread than the connection's.

        The connection applies a server's changes while holding it (in its
        own thread for a :class:`~autosync_jupyter.BlockingConnection`), so
        what you read under it is never a change applied halfway.
        """
        return self._lock

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float | None = None) -> Any:
        """Wait until ``predicate(content)`` is true for the document's content; return it.

        ``timeout`` defaults to the connection's.

        Raises:
            SyncTimeout: the condition did not hold in time.
        """

        def holds() -> bool:
            with self._lock:
                return self.ready and bool(predicate(self.doc.to_py()))

        await self._conn._wait_until(holds, timeout, f"a condition on {self.document_id}")
        with self._lock:
            return self.doc.to_py()

    # -- what the connection calls: _lock, _deliver_ephemeral, _shutdown ---------

    def _on_document_change(self, event: ChangeEvent) -> None:
        # Called by the Document in whatever thread changed it; the
        # connection's work all happens in its own loop.
        self._conn._call_in_loop(self._dispatch, event)

    def _dispatch(self, event: ChangeEvent) -> None:
        if self._closed:
            return
        if event.origin == "local":
            self._conn._local_change(self)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("a change callback of document %s failed", self.document_id)
        for queue in self._queues:
            queue.put_nowait(event)

    def _deliver_ephemeral(self, sender: PeerId, data: bytes) -> None:
        try:
            payload: Any = cbor2.loads(data)
        except Exception:
            payload = data  # not CBOR: hand over the raw bytes
        for callback in list(self._ephemeral_callbacks):
            try:
                callback(sender, payload)
            except Exception:
                logger.exception("an ephemeral callback of document %s failed", self.document_id)

    def _shutdown(self) -> None:
        self._closed = True
        self._unsubscribe()
        self._presence._stop()
        for queue in self._queues:
            queue.put_nowait(None)

    def to_py(self) -> dict[str, Any]:
        """The document's content as plain Python values (a snapshot)."""
        return self.doc.to_py()

    def change(self) -> AbstractContextManager[MutableMap]:
        """Edit the document: ``with handle.change() as d: d["k"] = 1`` (sent at once)."""
        return self.doc.change()

    def __repr__(self) -> str:
        return f"<DocHandle {self.document_id} {self.state}: {self.doc.to_py()!r:.200}>"

    def _repr_html_(self) -> str:
        return (
            f"<div><code>{html.escape(self.url)}</code> ({html.escape(self.state)})</div>"
            + self.doc._repr_html_()
        )


def _check_not_closed(handle: DocHandle) -> bool:
    """False, or ConnectionFailed if ``handle`` is closed (for wait conditions)."""
    if handle.state == "closed":
        raise ConnectionFailed(f"the handle of document {handle.document_id} is closed")
    return False


class ChangeStream:
    """The changes of one :class:`DocHandle`, as an async iterator (see :meth:`DocHandle.changes`).

    Events queue up until read; ``await stream.aclose()`` (or closing the
    handle) ends it.
    """

    def __init__(self, handle: DocHandle) -> None:
        self._handle = handle
        self._queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue()
        self._done = handle.state == "closed"
        if not self._done:
            handle._queues.append(self._queue)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> ChangeEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._finish()
            raise StopAsyncIteration
        return event

    def pending(self) -> int:
        """How many changes are queued and not read yet."""
        return self._queue.qsize()

    async def aclose(self) -> None:
        """Stop receiving changes."""
        self._finish()

    def _finish(self) -> None:
        self._done = True
        with contextlib.suppress(ValueError):
            self._handle._queues.remove(self._queue)


class _ServerLink:
    """One open WebSocket of a connection and its ordered outgoing queue."""

    def __init__(self, ws: ClientConnection, server: PeerId) -> None:
        self.ws = ws
        self.server = server
        self.outbox: deque[bytes] = deque()
        self.wakeup = asyncio.Event()

    def send(self, data: bytes) -> None:
        self.outbox.append(data)
        self.wakeup.set()

    async def pump(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                while self.outbox:
                    await self.ws.send(self.outbox.popleft())


class Connection:
    """A live connection to a sync server carrying several documents.

    Create it with :func:`connect`, then ``await`` it or use it as an async
    context manager::

        async with connect("wss://sync.automerge.org") as conn:
            handle = await conn.open("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu")
            print(handle.doc.to_py())

    The first connection attempt raises if it fails. After that, a dropped
    link is re-established with exponential backoff (with jitter, capped at
    ``max_backoff``) under the same peer id, and every open document resyncs
    from a fresh sync state; edits made meanwhile are kept and sent then. An
    ``error`` from the server during a handshake (authentication, protocol
    version) stops the reconnecting: retrying would not help.

    Args:
        url: ``ws://`` or ``wss://`` URL of the server.
        token: sent as ``Authorization: Bearer <token>`` on every upgrade.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (see :func:`fetch`).
        peer_id: this client's peer id (default: a random ``py-...``).
        timeout: default seconds for :meth:`open`, :meth:`create`, flushes
            and the handshake.
        reconnect: re-establish dropped connections (default True).
        min_backoff, max_backoff: first and largest delay between reconnect
            attempts, in seconds.
        ping_interval, ping_timeout: WebSocket keep-alive (None disables).
        max_message_size: largest incoming message in bytes (None: no limit).
        verbose: log every step and message (see :func:`fetch`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl: SSLOption = None,
        peer_id: str | None = None,
        timeout: float = 30.0,
        reconnect: bool = True,
        min_backoff: float = 0.25,
        max_backoff: float = 15.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        verbose: bool = False,
    ) -> None:
        check_url(url, ssl)
        check_token(token)
        self.url = url
        # For messages and logs: a Jupyter token may ride in the URL's query.
        self._shown_url = redact_url(url)
        self.peer_id: PeerId = PeerId(peer_id) if peer_id else generate_peer_id()
        self.timeout = timeout
        self._token = token
        self._ssl = ssl
        self._reconnect = reconnect
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_message_size = max_message_size
        self._verbose = verbose
        self._handles: dict[DocumentId, DocHandle] = {}
        # Documents the server offered unasked (it announces them), in order.
        self._offered: dict[DocumentId, None] = {}
        self._link: _ServerLink | None = None
        self._server_peer: Peer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._progress = asyncio.Event()
        # The rules of the conversation: what to send, when a document is
        # ready, unavailable or acknowledged.
        self._peer = ClientPeer(self.peer_id)
        self._push_scheduled = False
        self._retry_scheduled = False
        self._failure: AutosyncError | None = None
        self._closing = False
        self._closed = False
        self.reconnects = 0
        """How many times the connection was re-established."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> Connection:
        """Connect and join; returns once the server answered.

        Raises:
            ConnectionFailed, ServerError, ProtocolError, SyncTimeout: as :func:`fetch`.
        """
        if self._loop is not None:
            raise AutosyncError("the connection is already started")
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        if self._verbose:
            verbose_on()
        try:
            link = await self._connect_once()
        except BaseException:
            self._closed = True
            if self._verbose:
                verbose_off()
            raise
        self._attach(link)  # connected from now on; _serve starts reading
        self._runner = asyncio.ensure_future(self._run(link))
        return self

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.start().__await__()

    async def __aenter__(self) -> Connection:
        if self._loop is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        except SyncTimeout:
            if exc_type is None:
                raise
            logger.warning("closing after an error: unflushed changes were left behind")

    async def close(self, *, flush: bool = True, timeout: float | None = None) -> None:
        """Flush every open document (unless ``flush=False``), then disconnect.

        The flush is bounded by ``timeout`` (default: the connection's);
        if it runs out the connection is closed anyway and
        :class:`~autosync_jupyter.errors.SyncTimeout` names what was not
        acknowledged.
        """
        if self._closed or self._closing:
            return
        pending: list[str] = []
        if flush and self._failure is None:
            limit = self.timeout if timeout is None else timeout
            results = await asyncio.gather(
                *(self._flush(h, limit) for h in list(self._handles.values()) if h.ready),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, SyncTimeout):
                    pending.append(str(result))
                elif isinstance(result, BaseException):
                    # The connection failed or a handle closed meanwhile: nothing
                    # more can be flushed, and closing goes on regardless.
                    logger.debug("flush before close: %s", result)
        announced = [h for h in self._handles.values() if h._presence.announced]
        for handle in announced:
            handle._presence.leave()  # the others forget us at once, not after a timeout
        self._closing = True
        link = self._link
        if link is not None:
            # Give the pump a few turns to write the goodbyes before the close frame.
            for _ in range(100 if announced else 0):
                if not link.outbox:
                    break
                await asyncio.sleep(0)
            await close_quietly(link.ws)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._link = None
        for doc_id, handle in list(self._handles.items()):
            self._peer.close(doc_id)
            handle._shutdown()
        self._handles.clear()
        self._closed = True
        self._pulse()
        if self._verbose:
            verbose_off()
        logger.debug("connection to %s closed", self._shown_url)
        if pending:
            raise SyncTimeout("closed with unacknowledged changes: " + "; ".join(pending))

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is up and the server answered ``join`` right now."""
        return self._link is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` completed (or the first connection failed)."""
        return self._closed

    @property
    def server_peer_id(self) -> PeerId | None:
        """The server's peer id from its last ``peer`` message."""
        return self._server_peer.sender_id if self._server_peer else None

    @property
    def server_storage_id(self) -> str | None:
        """The server's storage id (None for an ephemeral server)."""
        meta = self._server_peer.peer_metadata if self._server_peer else None
        return meta.storage_id if meta else None

    @property
    def handles(self) -> dict[DocumentId, DocHandle]:
        """The open documents by id (a copy)."""
        return dict(self._handles)

    @property
    def offered(self) -> list[DocumentId]:
        """Documents the server offered without being asked, in the order they came.

        A server that announces its documents (``autosync serve --share
        announce``, or a share policy returning True) sends each one to a
        peer that joins; a server that shares on request only (the default,
        as the public JS server) offers none. At most :data:`MAX_OFFERED`
        are remembered.
        """
        return list(self._offered)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is up (e.g. after a drop).

        Raises:
            SyncTimeout: still down after ``timeout`` seconds.
        """
        await self._wait_until(
            lambda: self.connected, timeout, f"a connection to {self._shown_url}"
        )

    # -- documents -------------------------------------------------------------------

    async def open(
        self,
        doc_id: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        allow_empty: bool = False,
    ) -> DocHandle:
        """Open a document by id or ``automerge:`` URL and keep it in sync.

        With ``wait`` (the default) this returns once the document has
        arrived. Opening an open document returns its handle.

        Args:
            doc_id: a document id, an ``automerge:`` URL or a legacy UUID.
            wait: False returns the handle at once (``state`` is
                ``requesting``); it becomes ``ready`` when the document
                arrives, even after the server said ``unavailable``.
            timeout: seconds to wait (default: the connection's ``timeout``).
            allow_empty: when the server answers with an empty document (it
                holds no changes for the id), return a ``ready`` handle of
                that empty document instead of raising DocumentUnavailable:
                for servers that create documents on request (R's
                ``autosync``, ``autosync serve --create-on-request``). Edits
                to it are sent to the server as usual.

        Raises:
            DocumentUnavailable: the server does not have the document, or
                answered with an empty document (unless ``allow_empty``).
            SyncTimeout: it did not arrive within ``timeout``.
        """
        document_id = interpret_as_document_id(doc_id)
        self._check_usable()
        handle = self._handles.get(document_id)
        created = handle is None
        if handle is None:
            # Document() would make a first (empty) change; a document being
            # requested must have none, or it would be announced instead.
            handle = self._add_handle(document_id, Document(core=am.Document()))
        if not wait:
            return handle
        what = f"document {document_id} from {self._shown_url}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        peer = self._peer

        def settled() -> bool:
            return handle.state != "requesting"

        try:
            await self._wait_until(
                lambda: settled() or peer.answered_empty(document_id), timeout, what
            )
            if not settled():
                # The server answered with an empty document: give data or a
                # doc-unavailable that may follow a moment to arrive.
                with contextlib.suppress(SyncTimeout):
                    await self._wait_until(
                        lambda: settled() or not peer.answered_empty(document_id),
                        min(EMPTY_DOCUMENT_GRACE, max(0.0, deadline - loop.time())),
                        what,
                    )
                if not settled() and peer.answered_empty(document_id):
                    self._carry_out(peer.conclude_empty(document_id, accept=allow_empty))
                    if not allow_empty:
                        raise DocumentUnavailable(
                            document_id, empty_answer_message(document_id, self._shown_url)
                        )
                elif not settled():
                    # More than the empty answer is arriving: wait for it.
                    await self._wait_until(settled, max(0.0, deadline - loop.time()), what)
        except BaseException:
            if created:
                self._forget(handle)
            raise
        if handle.state == "unavailable":
            if created:
                self._forget(handle)
            raise DocumentUnavailable(
                document_id, unavailable_message(document_id, self._shown_url)
            )
        return handle

    async def create(
        self,
        initial: MappingABC[str, Any] | Document | None = None,
        *,
        doc_id: str | None = None,
        timeout: float | None = None,
    ) -> DocHandle:
        """Make a new document (with ``initial`` content), announce it and return its handle.

        The document gets a first change before it is announced (a document
        without changes cannot be told from "I don't have it", protocol
        §4.4). Returns once the server acknowledged it, so its id can be
        shared at once.

        Args:
            initial: a mapping for the root, or a :class:`Document` to upload.
            doc_id: the new document's id (default: a new random one), e.g.
                to upload a document under an id someone already asked for.
            timeout: seconds to wait for the server (default: the connection's).

        Raises:
            SyncTimeout: the server did not acknowledge it in time; the
                handle stays open and the document is sent when possible.
            ValueError: ``doc_id`` is open on this connection already.
        """
        self._check_usable()
        document_id = (
            interpret_as_document_id(doc_id) if doc_id is not None else generate_document_id()
        )
        if document_id in self._handles:
            raise ValueError(f"document {document_id} is open on this connection already")
        doc = initial if isinstance(initial, Document) else Document(initial)
        if ensure_first_change(doc.core):
            doc.notify("local", [])
        handle = self._add_handle(document_id, doc)  # ready: it holds a change
        await self._flush(handle, timeout)
        return handle

    def _add_handle(self, document_id: DocumentId, doc: Document) -> DocHandle:
        handle = DocHandle(self, document_id, doc)
        self._handles[document_id] = handle
        self._carry_out(self._peer.open(document_id, doc.core, lock=handle._lock))
        return handle

    # -- internals: waiting ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed or self._closing:
            raise ConnectionFailed(f"the connection to {self._shown_url} is closed")
        if self._loop is None:
            raise AutosyncError("the connection is not started: await connect(...) first")

    def _pulse(self) -> None:
        """Wake every waiter to re-check its condition."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def _wait_until(
        self, predicate: Callable[[], bool], timeout: float | None, what: str
    ) -> None:
        limit = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            self._check_usable()
            if predicate():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SyncTimeout(f"timed out after {limit} s waiting for {what}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def _flush(self, handle: DocHandle, timeout: float | None) -> None:
        heads = list(handle.doc.core.get_heads())

        def acknowledged() -> bool:
            _check_not_closed(handle)
            return self._link is not None and self._peer.acknowledged(handle.document_id, heads)

        await self._wait_until(
            acknowledged,
            timeout,
            f"{self._shown_url} to acknowledge the changes to {handle.document_id} "
            f"(heads {', '.join(h[:8] for h in encode_heads(heads))})",
        )

    # -- internals: the connection ----------------------------------------------------

    async def _connect_once(self) -> _ServerLink:
        ws = await open_socket(
            self.url,
            token=self._token,
            ssl=self._ssl,
            max_message_size=self._max_message_size,
            open_timeout=min(self.timeout, HANDSHAKE_TIMEOUT),
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
        )
        try:
            peer = await asyncio.wait_for(
                handshake(ws, self.peer_id, self.url), min(self.timeout, HANDSHAKE_TIMEOUT)
            )
        except asyncio.TimeoutError:
            ws.transport.abort()
            raise SyncTimeout(f"{self._shown_url} did not answer join in time") from None
        except BaseException:
            ws.transport.abort()
            raise
        self._server_peer = peer
        return _ServerLink(ws, peer.sender_id)

    async def _run(self, link: _ServerLink) -> None:
        """Serve the link; when it drops, reconnect with backoff until closed."""
        attempt = 0
        while True:
            await self._serve(link)
            if self._closing or not self._reconnect:
                if not self._closing:
                    self._failure = ConnectionFailed(
                        f"the connection to {self._shown_url} was lost"
                    )
                    self._pulse()
                return
            while True:
                delay = min(self._max_backoff, self._min_backoff * 2**attempt)
                delay *= random.uniform(0.5, 1.0)  # jitter: clients do not return in step
                attempt += 1
                logger.warning(
                    "connection to %s lost; reconnecting in %.2f s (attempt %d)",
                    self.url,
                    delay,
                    attempt,
                )
                await asyncio.sleep(delay)
                try:
                    link = await self._connect_once()
                except (ServerError, ProtocolError) as exc:
                    # The server answered and said no: retrying will not help.
                    logger.error("reconnecting to %s failed for good: %s", self._shown_url, exc)
                    self._failure = exc
                    self._pulse()
                    return
                except (ConnectionFailed, SyncTimeout) as exc:
                    logger.info("reconnect to %s failed: %s", self._shown_url, exc)
                    continue
                attempt = 0
                self.reconnects += 1
                logger.warning("reconnected to %s", self._shown_url)
                break

    def _attach(self, link: _ServerLink) -> None:
        """Use ``link`` from now on: every open document starts afresh on it."""
        self._link = link
        self._carry_out(self._peer.connected(link.server))

    async def _serve(self, link: _ServerLink) -> None:
        if self._link is not link:
            self._attach(link)  # a reconnect (start() attached the first link)
        pump = asyncio.ensure_future(link.pump())
        try:
            self._pulse()
            async for data in link.ws:
                if isinstance(data, str):
                    logger.warning("%s sent a text frame: ignored", self._shown_url)
                    continue
                try:
                    msg = decode_message(data, self.url)
                except ProtocolError as exc:
                    logger.warning("%s", exc)  # as JS clients do: log and go on
                    continue
                self._receive(msg)
        except ConnectionClosed as exc:
            logger.info("connection to %s closed (%s)", self._shown_url, describe_close(exc))
        finally:
            self._link = None
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            # Unavailable documents are asked for again on the next connection.
            self._carry_out(self._peer.disconnected())
            self._pulse()

    def _receive(self, msg: Message) -> None:
        handle = None
        if isinstance(msg, (Sync, Request)):
            handle = self._handles.get(msg.document_id)
        if handle is None:
            fx = self._peer.receive(msg)
            if fx.offered:
                logger.debug("ignoring %s for %s: not open here", msg.type, fx.offered[0])
            self._carry_out(fx)
        else:
            # Listeners hear of a remote change before an edit from another
            # thread can slip in.
            with handle._lock:
                self._carry_out(self._peer.receive(msg))
        self._pulse()

    def _carry_out(self, fx: PeerEffects) -> None:
        """Do what the peer asked: send, notify listeners, log, schedule a retry."""
        link = self._link
        if link is not None:
            for msg in fx.send:
                link.send(encode_message(msg))
        for doc_id in fx.offered:
            if len(self._offered) < MAX_OFFERED:
                self._offered[doc_id] = None
        for text in fx.rejected:
            logger.warning("%s: %s", self._shown_url, text)
        for doc_id, before in fx.changed:
            handle = self._handles.get(doc_id)
            if handle is not None:
                handle.doc.notify("remote", before)
        for doc_id, sender, data in fx.ephemeral:
            handle = self._handles.get(doc_id)
            if handle is not None:
                handle._deliver_ephemeral(sender, data)
        for text in fx.server_errors:
            logger.warning("%s reported an error: %s", self._shown_url, text)
        if fx.retry:
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        # Only while a change is open across an await (rare): try again soon.
        if not self._retry_scheduled and self._loop is not None:
            self._retry_scheduled = True
            self._loop.call_later(_RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_scheduled = False
        self._carry_out(self._peer.retry())
        self._pulse()

    def _call_in_loop(self, fn: Callable[[T], None], arg: T) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread_id:
            fn(arg)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(fn, arg)

    def _state_of(self, document_id: DocumentId) -> HandleState:
        return self._peer.state(document_id) or "closed"

    def _local_change(self, handle: DocHandle) -> None:
        # Local edits go out on the next loop turn, so a burst of changes
        # made in one go becomes one message instead of one per change.
        self._carry_out(self._peer.local_change(handle.document_id))
        if not self._push_scheduled and self._loop is not None:
            self._push_scheduled = True
            self._loop.call_soon(self._push)

    def _push(self) -> None:
        self._push_scheduled = False
        self._carry_out(self._peer.push())
        self._pulse()

    def _broadcast(self, handle: DocHandle, payload: Any) -> None:
        if self._link is None:
            logger.debug("not connected: ephemeral message for %s dropped", handle.document_id)
            return
        self._carry_out(self._peer.broadcast(handle.document_id, cbor2.dumps(payload)))

    def _forget(self, handle: DocHandle) -> None:
        if self._handles.get(handle.document_id) is handle:
            del self._handles[handle.document_id]
            self._peer.close(handle.document_id)
        handle._shutdown()
        self._pulse()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._failure is not None:
            state = f"failed: {self._failure}"
        else:
            state = "connected" if self.connected else "disconnected"
        return f"<Connection {self._shown_url} {state}, {len(self._handles)} documents>"


def connect(
    url: str,
    *,
    token: str | None = None,
    ssl: SSLOption = None,
    peer_id: str | None = None,
    timeout: float = 30.0,
    reconnect: bool = True,
    min_backoff: float = 0.25,
    max_backoff: float = 15.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    verbose: bool = False,
) -> Connection:
    """Connect to a sync server for live documents: ``await`` it or ``async with`` it.

    >>> async def main(url, doc_id):  # doctest: +SKIP
    ...     async with connect(url) as conn:
    ...         handle = await conn.open(doc_id)
    ...         handle.on_change(lambda event: print(handle.doc.to_py()))
    ...         with handle.doc.change() as d:
    ...             d["seen"] = True

    The arguments are those of :class:`Connection`.
    """
    return Connection(
        url,
        token=token,
        ssl=ssl,
        peer_id=peer_id,
        timeout=timeout,
        reconnect=reconnect,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        max_message_size=max_message_size,
        verbose=verbose,
    )
