"""`SyncRuntime`: the hub on an asyncio loop, a store and any transport.

The runtime carries out what the sans-I/O :class:`~autosync_jupyter.core.hub.Hub`
asks for (its :class:`~autosync_jupyter.core.hub.Effects`): it appends the
hub's writes to the store and sends the hub's messages — each message only
after every change written before it is durable (group commit: all writes of
one loop turn share one flush). It loads documents the hub needs, compacts
stored ones, throttles sync rounds of busy documents, and offers the
document API (create, read, change, list, listeners).

It owns no socket: a transport hands it each connected peer as a
:class:`~autosync_jupyter.runtime.transport.PeerSocket` through
:meth:`SyncRuntime.serve_peer`. :class:`~autosync_jupyter.runtime.server.SyncServer`
is this runtime behind its own ``websockets`` server; the Jupyter server
extension uses the runtime directly, behind tornado. Each connection has a
bounded send queue, so a peer that does not read is dropped instead of
growing the process.

>>> async def main():
...     async with SyncRuntime(data_dir=None) as runtime:
...         doc_id = await runtime.create_document({"title": "hello"})
...         return doc_id in runtime.list_documents()
>>> asyncio.run(main())
True
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import logging
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import automerge.core as am
from websockets.frames import CloseCode

from ..core.hub import (
    ConnectionId,
    Effects,
    Hub,
    HubLimits,
    HubView,
    PeerInfo,
    SharePolicy,
)
from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE, encode
from ..crdt.binding import is_panic
from ..crdt.document import Document, MutableMap, document_title
from ..crdt.values import new_document
from ..errors import AutosyncError, DocumentUnreadable, StorageError
from ..ids import DocumentId, generate_document_id, validate_document_id
from ..storage import FileStore, MemoryStore, Store
from ..storage.salvage import load_document, log_salvage
from ..wording import counted
from .client import SSLOption
from .sync_throttle import SyncThrottle
from .transport import PeerClosed, PeerSocket
from .upstream import Upstream

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_LOADED_DOCUMENTS",
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_SEND_QUEUE",
    "DEFAULT_TAKEOVER_TIMEOUT",
    "DEFAULT_UPSTREAM_TIMEOUT",
    "DocumentSummary",
    "ServerListener",
    "SyncRuntime",
]

# The server's logger: the runtime logs what SyncServer always logged, and
# log configurations (and the server extension's) name this logger.
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
#: Seconds a document nobody syncs stays in memory. Clients coming back
#: (a reloaded tab, a restarted kernel, a dropped network) mostly do so
#: within minutes; after that, reloading (one read of its files) costs less
#: than holding it.
DEFAULT_IDLE_TIMEOUT = 300.0
#: Documents held in memory at most, beyond those in use: about 100 MB of
#: small documents (10 KB each); busy servers with large documents lower it.
DEFAULT_MAX_LOADED_DOCUMENTS = 10_000
#: Seconds an upstream server has to answer whether it has a document (and
#: to accept the first connection at start) before peers are told it is not here.
DEFAULT_UPSTREAM_TIMEOUT = 10.0
# A failed read of another server's rows is tried again after this many
# seconds, doubling up to the maximum.
_REFRESH_RETRY = 0.25
_MAX_REFRESH_RETRY = 30.0
# The idle sweep runs this often at most (a quarter of the idle timeout).
_MAX_SWEEP_INTERVAL = 30.0
# Unloaded documents after which the C heap is asked to give freed pages back.
_TRIM_AFTER = 256


def _find_malloc_trim() -> Callable[[int], int] | None:
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    return None


_MALLOC_TRIM = _find_malloc_trim() if sys.platform.startswith("linux") else None


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc only).

    Documents leave memory in the Automerge core's allocations; glibc keeps
    the freed pages for reuse, so without this the process's RSS would
    never shrink after a burst of loads.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_R = TypeVar("_R", bound="SyncRuntime")

#: Called in the runtime's loop with the ids of documents whose content just
#: changed (an empty set when only the connected peers changed).
ServerListener = Callable[[frozenset[DocumentId]], None]


@dataclass(frozen=True)
class DocumentSummary:
    """One row of :meth:`SyncRuntime.document_summaries`.

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


@dataclass
class _PeerLink:
    """One peer connection and what waits to be sent on it."""

    ws: PeerSocket
    conn_id: ConnectionId
    queue: deque[tuple[asyncio.Future[None] | None, bytes]] = field(default_factory=deque)
    queued_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set while nothing waits to be sent and nothing is being sent.
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the hub may have stopped waiting for a load or a probe.
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    close_task: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.idle.set()


class _GroupCommit:
    """Every write of one loop turn shares one flush of the store (group commit).

    A message may leave only after every change written before it is
    durable (the hub's :class:`~autosync_jupyter.core.hub.Effects` contract):
    it waits on :attr:`barrier`, the flush pending when it was queued.
    ``flushed`` is called with the documents a successful flush made durable.
    """

    def __init__(
        self,
        store: Store,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        flushed: Callable[[set[DocumentId]], None],
    ) -> None:
        self._store = store
        self._spawn = spawn
        self._flushed = flushed
        self._barrier: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None
        self._written: set[DocumentId] = set()

    def wrote(self, doc_id: DocumentId) -> None:
        """``doc_id`` was appended to the store: flush at the end of this loop turn."""
        self._written.add(doc_id)
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            loop.call_soon(self._start)
        self._barrier = self._next

    @property
    def barrier(self) -> asyncio.Future[None] | None:
        """The flush a message queued now must wait for (None: everything is durable)."""
        return self._barrier if self._barrier is not None and not self._barrier.done() else None

    def _start(self) -> None:
        barrier, self._next = self._next, None
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
            self._flushed(written)

        self._spawn(flush())


class _Busy:
    """The documents the runtime still works on: never unloaded."""

    def __init__(self, runtime: SyncRuntime) -> None:
        self._runtime = runtime

    def __contains__(self, doc_id: object) -> bool:
        runtime = self._runtime
        return (
            doc_id in runtime._unflushed
            or doc_id in runtime._compacting
            or doc_id in runtime._loads
        )


class SyncRuntime:
    """The sync hub with its store, served to peers over any transport.

    Everything of a sync server but the socket: :meth:`serve_peer` serves a
    peer connected by whatever transport (the Jupyter server extension's
    tornado WebSocket; :class:`~autosync_jupyter.runtime.server.SyncServer`
    adds its own ``websockets`` server). Start it with :meth:`start` (or
    ``async with``) in the loop that will run it; :meth:`close` flushes.

    Args:
        data_dir: directory of the durable store (compatible with the JS
            sync server's NodeFS layout and R's ``<id>.automerge`` files);
            None keeps documents in memory only.
        store: a :class:`~autosync_jupyter.storage.Store` to use instead of
            ``data_dir``.
        ephemeral: announce no storage id (``isEphemeral``) and keep
            everything in memory.
        share: the share policy (see :data:`~autosync_jupyter.core.hub.SharePolicy`);
            call :meth:`policy_changed` when a callable policy's answers change.
        create_on_request: R-compatible "create empty documents on request".
        max_message_size: largest message in bytes; bounds what one message
            may make the hub hold.
        sync_interval: the longest a change to a document shared by
            several peers waits before it is relayed, in seconds. A server
            that is not busy relays each change at once (the next loop
            turn); under load (many changes relayed to many peers each
            second, or a busy CPU) a document's changes are gathered into
            one message per peer, rounds up to this far apart (as the JS
            server's 100 ms throttle does always). A change never waits
            for the answers to earlier ones. A document with a single peer
            is answered at once. 0 never waits. See
            :mod:`~autosync_jupyter.runtime.sync_throttle`.
        max_send_queue: bytes of unsent messages after which a peer that does
            not read is disconnected.
        max_queued_bytes: unsent bytes of all connections together; beyond,
            the connection with the most waiting is dropped (the memory for
            outgoing data stays within this).
        max_connections: connections served at once; :meth:`serve_peer`
            closes more with 1013 (try again later).
        takeover_timeout: when a second connection joins with the peer id of
            a live one (without authentication), the live one is pinged; if it
            answers within this many seconds it keeps the id and the newcomer
            is refused, else it is replaced (a client back after a dropped
            socket). With authentication, only the same identity may take a
            peer id over, at once.
        idle_timeout: seconds after which a document no peer syncs, and
            whose every change is durable, leaves memory (None: never). It
            is loaded again, the same, when next asked for.
        max_loaded_documents: documents kept in memory at most (None: no
            bound); beyond, the least recently used idle ones leave memory
            at once. Documents in use (peers syncing them, writes not yet
            durable) stay whatever their number.
        upstreams: other automerge-repo servers (``ws://``/``wss://`` URLs,
            or :class:`~autosync_jupyter.runtime.upstream.Upstream` objects
            for a token or TLS context each) this one is also a client of:
            every document with changes here is synced with them both ways,
            and a document a peer asks for that is not here is asked of
            them before the peer hears it is unavailable. Connections are
            kept up (reconnected with backoff); :meth:`start` waits up to
            ``upstream_timeout`` for the first.
        upstream_token, upstream_ssl: the bearer token and ``ssl`` context
            for upstreams given as URLs.
        upstream_timeout: seconds to wait for an upstream's answer about a
            document (and for its first connection at start).
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = ".automerge",
        store: Store | None = None,
        ephemeral: bool = False,
        share: SharePolicy = "request",
        create_on_request: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        sync_interval: float = 0.1,
        max_send_queue: int = DEFAULT_MAX_SEND_QUEUE,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        takeover_timeout: float = DEFAULT_TAKEOVER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_loaded_documents: int | None = DEFAULT_MAX_LOADED_DOCUMENTS,
        upstreams: Sequence[str | Upstream] = (),
        upstream_token: str | None = None,
        upstream_ssl: SSLOption = None,
        upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
    ) -> None:
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive or None, not {idle_timeout!r}")
        if max_loaded_documents is not None and max_loaded_documents < 0:
            raise ValueError(f"max_loaded_documents must be >= 0, not {max_loaded_documents!r}")
        if store is None:
            store = MemoryStore() if ephemeral or data_dir is None else FileStore(data_dir)
        self.data_dir = None if ephemeral or data_dir is None else os.fspath(data_dir)
        self.ephemeral = ephemeral
        self._share = share
        self._create_on_request = create_on_request
        self._store = store
        self._max_message_size = max_message_size
        self._max_send_queue = max_send_queue
        self._max_queued_bytes = max_queued_bytes
        self._max_connections = max_connections
        self._takeover_timeout = takeover_timeout
        self._queued_bytes = 0
        self._hub: Hub | None = None
        self._started = False
        self._links: dict[ConnectionId, _PeerLink] = {}
        self._loads: dict[DocumentId, asyncio.Future[None]] = {}
        self._commit = _GroupCommit(store, self._spawn, self._compact_flushed)
        self._throttle = SyncThrottle(sync_interval, self._propagate)
        self._compacting: set[DocumentId] = set()
        # Documents whose rows another server process added are being read
        # (load_new); those announced again meanwhile, or while loading or
        # compacting, are read once that ends.
        self._refreshing: set[DocumentId] = set()
        self._refresh_again: set[DocumentId] = set()
        self._refresh_failures: dict[DocumentId, int] = {}
        self._idle_timeout = idle_timeout
        self._max_loaded = max_loaded_documents
        # Per document, the flush its latest write waits for: until it
        # succeeds, the document stays in memory.
        self._unflushed: dict[DocumentId, asyncio.Future[None]] = {}
        self._busy = _Busy(self)
        # (loop time, hub.uses) at each sweep: maps the hub's use counter to time.
        self._use_marks: deque[tuple[float, int]] = deque()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._unloaded_since_trim = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._listeners: list[ServerListener] = []
        self._last_change: dict[DocumentId, datetime.datetime] = {}
        # Per document: the heads its size and title were measured at.
        self._sizes: dict[DocumentId, tuple[tuple[str, ...], int, str | None]] = {}
        if isinstance(upstreams, str):
            raise TypeError("upstreams must be a list of URLs, not one string")
        self.upstreams: list[Upstream] = [
            each
            if isinstance(each, Upstream)
            else Upstream(
                each,
                token=upstream_token,
                ssl=upstream_ssl if each.startswith("wss://") else None,
                max_message_size=max_message_size,
            )
            for each in upstreams
        ]
        if len({u.url for u in self.upstreams}) != len(self.upstreams):
            raise ValueError("the same upstream URL is given twice")
        self._upstream_timeout = upstream_timeout
        self._asking: dict[DocumentId, asyncio.TimerHandle] = {}
        self._upstream_tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle ---------------------------------------------------------------

    async def start(self: _R) -> _R:
        """Open the store and make the hub; from now on :meth:`serve_peer` serves peers."""
        await self._open()
        await self._await_upstreams()
        logger.info("sync hub ready (data: %s)", self.data_location)
        return self

    async def _await_upstreams(self) -> None:
        """Give each upstream a first attempt (bounded), so early requests can reach it."""
        for upstream in self.upstreams:
            self._upstream_tasks.append(self._spawn(upstream.run(self._serve_upstream(upstream))))
        waits = [u.settled.wait() for u in self.upstreams]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self._upstream_timeout)

    async def _open(self) -> None:
        if self._started:
            raise AutosyncError("server already started")
        await self._store.open()
        self._started = True
        self._hub = Hub(
            storage_id=None if self.ephemeral else self._store.storage_id,
            share=self._share,
            stored=self._store,
            create_on_request=self._create_on_request,
            limits=HubLimits.for_message_size(self._max_message_size),
            upstreams=[u.url for u in self.upstreams],
        )
        self._store.watch(self._stored_elsewhere)
        if self._idle_timeout is not None:
            self._schedule_sweep()
        if self._share != "request" and self._share != "deny":
            # Announcing needs every id: list them off the loop before a
            # peer joins, rather than in its join.
            self._spawn(self._store.all_document_ids())

    async def close(self) -> None:
        """Flush everything and close every connection with 1001 (a server stops listening)."""
        if not self._started:
            return
        hub = self._require_hub()
        self._throttle.cancel()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for timer in self._asking.values():
            timer.cancel()
        self._asking.clear()
        self._apply(hub.propagate())
        with contextlib.suppress(Exception):
            await self._store.flush()
        # Let queued replies (acknowledgements) go out before the close; a
        # peer that does not read gets two seconds, not one per connection.
        with contextlib.suppress(Exception):
            drains = [self._drain(link) for link in self._links.values()]
            await asyncio.wait_for(asyncio.gather(*drains), timeout=2)
        # Upstream connections end here (what was queued for them is sent):
        # cancelled, so they do not reconnect.
        upstreams, self._upstream_tasks = self._upstream_tasks, []
        for task in upstreams:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*upstreams, return_exceptions=True), 5)
        self._apply(hub.shutdown())
        await self._close_connections()
        for task in list(self._tasks):
            task.cancel()
        await self._store.close()
        self._started = False
        self._closed.set()
        logger.info("server closed")

    async def _close_connections(self) -> None:
        """Wait, a few seconds at most, for the closes the hub's shutdown asked for."""
        closing = [link.close_task for link in self._links.values() if link.close_task]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*closing), timeout=5)

    async def serve_forever(self) -> None:
        """Run until :meth:`close` is called (from another task or a signal)."""
        await self._closed.wait()

    async def __aenter__(self: _R) -> _R:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        """Whether it is started (and, for a :class:`SyncServer`, listening)."""
        return self._started

    @property
    def data_location(self) -> str:
        """Where the documents are kept, for people: a directory, a database URL
        (without its password), or ``"memory"``."""
        return self._store.location or "memory"

    @property
    def storage_id(self) -> str | None:
        """The persistent storage id announced to peers (None when ephemeral)."""
        return self._hub.storage_id if self._hub else None

    @property
    def peer_id(self) -> str | None:
        """This server's peer id (new at every start)."""
        return self._hub.peer_id if self._hub else None

    @property
    def hub(self) -> HubView:
        """What the sync engine knows (its peers, documents), read-only."""
        return HubView(self._require_hub())

    def peers(self) -> list[PeerInfo]:
        """The peers connected right now."""
        return self._require_hub().peers()

    def policy_changed(self) -> None:
        """Apply the share policy anew to every connected peer and document.

        Call it when a callable share policy would now answer differently:
        peers that lost a document are told it is unavailable and get no
        more of it; peers it is now announced to receive it.
        """
        self._apply(self._require_hub().policy_changed())

    def _status(self) -> str:
        """State, store and counts, for ``repr``."""
        state = "running" if self._started else "stopped"
        # Listing every stored document could take seconds: only those in memory.
        docs = self._hub.resident_count() if self._hub else 0
        return (
            f"{state}, data: {self.data_location}, {counted(docs, 'document')} in memory, "
            f"{counted(len(self._links), 'connection')}"
        )

    def __repr__(self) -> str:
        return f"<SyncRuntime {self._status()}>"

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
        ...     async with SyncRuntime(data_dir=None) as runtime:
        ...         doc_id = await runtime.create_document({"items": []})
        ...         await runtime.change_document(doc_id, lambda d: d["items"].append(1))
        ...         return await runtime.read_document(doc_id)
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
        # Twice more at most: a document loaded for us may leave memory again
        # (max_loaded_documents) before this task runs on.
        for _attempt in range(3):
            if hub.is_loaded(doc_id) or not hub.load_needed(doc_id):
                break
            self._apply(hub.request_load(doc_id))
            pending = self._loads.get(doc_id)
            if pending is not None:
                await asyncio.shield(pending)
        if not hub.is_loaded(doc_id):
            problem = hub.problem(doc_id)
            if problem is not None:
                raise DocumentUnreadable(doc_id, f"document {doc_id} cannot be read: {problem}")
            raise KeyError(doc_id)

    # -- peers -------------------------------------------------------------------

    def _full(self) -> bool:
        """Whether ``max_connections`` peers are served already."""
        return len(self._links) >= self._max_connections

    async def serve_peer(self, peer: PeerSocket, *, identity: dict[str, Any] | None = None) -> None:
        """Serve one connected peer until its connection closes.

        The transport has done its own authentication; ``identity``
        (verified claims) reaches share policies as ``peer.identity``.
        """
        hub = self._require_hub()
        if self._full():
            logger.warning("refused %s: too many connections", peer.remote_address)
            await peer.close(CloseCode.TRY_AGAIN_LATER, "too many connections, try again later")
            return
        conn_id = hub.open_connection(remote_address=peer.remote_address, identity=identity)
        await self._serve(peer, conn_id)

    def _serve_upstream(self, upstream: Upstream) -> Callable[[PeerSocket], Awaitable[None]]:
        async def serve(peer: PeerSocket) -> None:
            hub = self._require_hub()
            conn_id, fx = hub.open_upstream(upstream.url, remote_address=upstream.shown)
            await self._serve(peer, conn_id, upstream=upstream, first=fx)

        return serve

    async def _serve(
        self,
        peer: PeerSocket,
        conn_id: ConnectionId,
        *,
        upstream: Upstream | None = None,
        first: Effects | None = None,
    ) -> None:
        """Read a connection's messages into the hub until it closes."""
        hub = self._require_hub()
        link = _PeerLink(peer, conn_id)
        self._links[conn_id] = link
        self._notify(frozenset())
        sender = asyncio.create_task(self._send_loop(link))
        if first is not None:
            self._apply(first)
        try:
            async for data in peer:
                if isinstance(data, str):
                    logger.warning("%s sent a text frame: closing", peer.remote_address)
                    await peer.close(CloseCode.UNSUPPORTED_DATA, "binary frames only")
                    break
                self._apply(hub.receive(conn_id, data))
                del data  # an idle connection must not hold on to its last frame
                joining = upstream is not None and not upstream.joined.is_set()
                if joining and upstream is not None and hub.upstream_joined(upstream.url):
                    upstream.mark_joined()
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
            self._bound_loaded()  # its documents may be idle now
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
                self._commit.wrote(doc_id)
                barrier = self._commit.barrier
                if barrier is not None:
                    self._unflushed[doc_id] = barrier
                self._last_change[doc_id] = now
                changed.add(doc_id)
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
        for doc_id in fx.asked:
            timer = self._asking.pop(doc_id, None)
            if timer is not None:
                timer.cancel()
            self._asking[doc_id] = asyncio.get_running_loop().call_later(
                self._upstream_timeout, self._upstream_silent, doc_id
            )
        hub = self._hub
        if hub is not None and hub.pending_propagation():
            self._throttle.schedule(hub, (doc_id for doc_id, _ in fx.writes))

    def _upstream_silent(self, doc_id: DocumentId) -> None:
        self._asking.pop(doc_id, None)
        hub = self._hub
        if hub is not None and self._started:
            self._apply(hub.upstream_timeout(doc_id))

    def _propagate(self, doc_ids: set[DocumentId]) -> None:
        """A round of sync messages for ``doc_ids`` (the throttle says when)."""
        hub = self._require_hub()
        self._apply(hub.propagate(doc_ids, hold=self._throttle.busy()))

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

    # -- sending -------------------------------------------------------------------

    def _enqueue(self, link: _PeerLink, data: bytes) -> None:
        link.queue.append((self._commit.barrier, data))
        link.queued_bytes += len(data)
        self._queued_bytes += len(data)
        link.idle.clear()
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

    def _drop(self, link: _PeerLink) -> None:
        """Cut off a peer that does not read, and free what waited for it."""
        link.closing = True
        self._discard_queue(link)
        self._spawn(self._abort(link))

    def _discard_queue(self, link: _PeerLink) -> None:
        link.queue.clear()
        self._queued_bytes -= link.queued_bytes
        link.queued_bytes = 0
        link.idle.set()

    async def _send_loop(self, link: _PeerLink) -> None:
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
                link.idle.set()
        except PeerClosed:
            pass
        except AutosyncError:
            await link.ws.close(CloseCode.INTERNAL_ERROR, "storage failure")

    async def _drain(self, link: _PeerLink) -> None:
        """Wait until everything queued for ``link`` is sent (or discarded)."""
        await link.idle.wait()

    async def _close_link(self, link: _PeerLink, code: int, reason: str) -> None:
        # Send what is queued first (the error message explaining the close).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain(link), timeout=2)
        await link.ws.close(code, reason)

    async def _abort(self, link: _PeerLink) -> None:
        link.ws.abort()

    # -- storage -------------------------------------------------------------------

    def _spawn_load(self, doc_id: DocumentId) -> None:
        if doc_id in self._loads:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loads[doc_id] = future

        async def load() -> None:
            try:
                self._apply(await self._load(doc_id))
                self._bound_loaded()  # still in _loads: this one stays
            finally:
                self._loads.pop(doc_id, None)
                future.set_result(None)
                self._resume()
                self._refresh_if_asked(doc_id)

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

    def _stored_elsewhere(self, doc_id: DocumentId) -> None:
        """The store says another server process may have stored changes to ``doc_id``."""
        hub = self._hub
        if hub is None or not self._started:
            return
        if doc_id in self._loads or doc_id in self._refreshing or doc_id in self._compacting:
            # A load may have read before that commit; a compaction must not
            # delete rows read after its snapshot was taken: read them after.
            self._refresh_again.add(doc_id)
            return
        missing = hub.is_missing(doc_id)  # asked for before it was here: read it all
        if not missing and not hub.is_loaded(doc_id):
            return  # its next load reads everything
        self._refreshing.add(doc_id)
        self._spawn(self._refresh(doc_id, whole=missing))

    def _refresh_if_asked(self, doc_id: DocumentId) -> None:
        if doc_id in self._refresh_again:
            self._refresh_again.discard(doc_id)
            self._stored_elsewhere(doc_id)

    async def _refresh(self, doc_id: DocumentId, *, whole: bool = False) -> None:
        """Read what other processes stored for a document and give it to the hub."""
        try:
            if whole:
                data = await self._store.load(doc_id)
            else:
                data = await self._store.load_new(doc_id)
            # At once, no await in between: the store counts these rows as
            # read, and a compaction may delete what it has read.
            if data:
                self._apply(self._require_hub().stored_changes_arrived(doc_id, data))
                self._last_change[doc_id] = datetime.datetime.now(datetime.timezone.utc)
                self._notify(frozenset({doc_id}))
            self._refresh_failures.pop(doc_id, None)
        except AutosyncError as exc:
            # The rows stay unread: read them again soon rather than at the
            # document's next notification, which may never come.
            failures = self._refresh_failures[doc_id] = self._refresh_failures.get(doc_id, 0) + 1
            delay = min(_REFRESH_RETRY * 2 ** (failures - 1), _MAX_REFRESH_RETRY)
            logger.error(
                "document %s: reading what another server stored failed (%s); again in %.1f s",
                doc_id,
                exc,
                delay,
            )
            asyncio.get_running_loop().call_later(delay, self._stored_elsewhere, doc_id)
        finally:
            self._refreshing.discard(doc_id)
            self._refresh_if_asked(doc_id)

    def _compact_flushed(self, written: set[DocumentId]) -> None:
        for doc_id in written:
            barrier = self._unflushed.get(doc_id)
            if barrier is not None and barrier.done() and barrier.exception() is None:
                del self._unflushed[doc_id]
            self._maybe_compact(doc_id)
        self._bound_loaded()

    # -- memory: idle documents leave it -------------------------------------------

    def _schedule_sweep(self) -> None:
        assert self._idle_timeout is not None
        interval = min(self._idle_timeout / 4, _MAX_SWEEP_INTERVAL)
        self._sweep_timer = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Unload documents idle for ``idle_timeout``; runs every quarter of it (30 s at most)."""
        hub = self._hub
        if hub is None or not self._started or self._idle_timeout is None:
            return
        now = asyncio.get_running_loop().time()
        marks = self._use_marks
        marks.append((now, hub.uses))
        cutoff = now - self._idle_timeout
        while len(marks) > 1 and marks[1][0] <= cutoff:
            marks.popleft()
        when, uses = marks[0]
        if when <= cutoff:
            # Last used when the counter was at most ``uses``: idle since ``when``.
            self._unload(hub.idle_documents(used_before=uses + 1, busy=self._busy))
        self._bound_loaded()
        self._schedule_sweep()

    def _bound_loaded(self) -> None:
        """Unload the least recently used idle documents beyond ``max_loaded_documents``."""
        hub = self._hub
        if hub is None or self._max_loaded is None or not self._started:
            return
        excess = hub.resident_count() - self._max_loaded
        if excess > 0:
            self._unload(hub.idle_documents(limit=excess, busy=self._busy))

    def _unload(self, doc_ids: list[DocumentId]) -> None:
        hub = self._require_hub()
        for doc_id in doc_ids:
            self._apply(hub.unload(doc_id))
            if not hub.is_loaded(doc_id):
                self._store.forget(doc_id)
                self._sizes.pop(doc_id, None)
        if doc_ids:
            logger.debug("%s left memory (idle)", counted(len(doc_ids), "document"))
            self._unloaded_since_trim += len(doc_ids)
            if self._unloaded_since_trim >= _TRIM_AFTER:
                self._unloaded_since_trim = 0
                _trim_heap()

    def _maybe_compact(self, doc_id: DocumentId) -> None:
        hub = self._hub
        if (
            hub is None
            or doc_id in self._compacting
            or doc_id in self._refreshing
            or not hub.is_loaded(doc_id)
        ):
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
                self._refresh_if_asked(doc_id)

        self._spawn(compact())

    # -- tasks ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (PeerClosed, AutosyncError)):
                logger.error("background task failed", exc_info=exc)

    def _require_hub(self) -> Hub:
        if self._hub is None:
            raise AutosyncError("the server is not started: call start() first")
        return self._hub
