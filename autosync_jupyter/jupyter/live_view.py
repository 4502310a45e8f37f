"""`LiveView`: a live, read-only, collapsible tree of a document in a notebook.

>>> view = LiveView(handle)                 # doctest: +SKIP
>>> view                                    # doctest: +SKIP

The view follows its document as peers edit it: the front end gets the new
tree at most ten times a second however busy the document is, and briefly
highlights what changed. The Python side lives in the kernel's event loop
and never blocks it.

Its "history" button opens a timeline: a slider over the document's
versions shows each one with what its change touched highlighted, its
author and time; "restore this version" writes that content back as one
new change, "copy link" gives the version's ``automerge:<id>#<heads>`` URL.
A view of a live handle also shows who else is in the document (presence)
and announces the notebook's user there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..crdt.document import Document, MutableMap
from ..crdt.json_tree import document_tree, short_heads
from ..errors import AutosyncError
from ..ids import DocumentId, document_url, interpret_as_document_id
from ..runtime.blocking import BlockingConnection, BlockingDocHandle
from ..runtime.connection import Connection, DocHandle
from ..runtime.presence import Presence, peer_color
from ..runtime.server import SyncServer
from .timeline import notebook_user, version_details, version_heads, write_version

__all__ = ["LiveView", "LiveViewSource", "Throttle"]

logger = logging.getLogger("autosync_jupyter.jupyter.live_view")

STATIC = Path(__file__).parent / "static"

#: Seconds between two updates of a busy view's front end (at most 10 per second).
DEFAULT_INTERVAL = 0.1

#: What a :class:`LiveView` can show.
LiveViewSource = (
    DocHandle
    | BlockingDocHandle
    | Document
    | tuple[SyncServer | Connection | BlockingConnection, str]
)


def in_loop_thread(
    loop: asyncio.AbstractEventLoop, handler: Callable[..., None]
) -> Callable[..., None]:
    """Wrap a front-end message handler so that it runs in ``loop``'s thread.

    Call it in that thread. JupyterLab sends widget messages on a kernel
    subshell where the kernel has them, and ipykernel 7.0 to 7.3 handle those
    in the subshell's own thread: a handler that touched the loop from there
    (a task, a future) would wait until something else woke the loop, maybe
    forever. In the loop's thread the handler runs at once, as before.
    """
    owner = threading.get_ident()

    def dispatch(*args: Any) -> None:
        if threading.get_ident() == owner:
            handler(*args)
        else:
            loop.call_soon_threadsafe(handler, *args)

    return dispatch


def running_loop(what: str) -> asyncio.AbstractEventLoop:
    """The event loop of the calling thread, or a clear error if it runs none.

    Raises:
        AutosyncError: no event loop runs in this thread (the widgets live in
            a notebook kernel's loop, or in async code).
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise AutosyncError(
            f"{what} must be created where an event loop runs: in a notebook cell or in "
            "async code (in a plain script, wrap it in `async def main()` and asyncio.run)"
        ) from None


class Throttle:
    """Coalesce bursts of calls into at most one call of ``action`` per ``interval``.

    :meth:`poke` may be called from any thread; ``action`` always runs in
    ``loop``. The first poke after a quiet spell runs ``action`` on the
    loop's next turn; pokes during the following ``interval`` seconds are
    folded into one more run at its end, so the last state is never lost.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        action: Callable[[], object],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._loop = loop
        self._action = action
        self.interval = interval
        self._thread = threading.get_ident()
        self._pending: asyncio.Handle | None = None
        self._last = float("-inf")
        self._cancelled = False
        self.runs = 0
        """How many times ``action`` ran."""

    def poke(self) -> None:
        """Ask for ``action`` to run soon (thread-safe, never runs it synchronously)."""
        if self._cancelled:
            return
        if threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching
                self._loop.call_soon_threadsafe(self.poke)
            return
        if self._pending is not None:
            return
        delay = max(0.0, self._last + self.interval - self._loop.time())
        self._pending = self._loop.call_later(delay, self._fire)

    def cancel(self) -> None:
        """Drop a pending run and ignore later pokes."""
        self._cancelled = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _fire(self) -> None:
        self._pending = None
        self._last = self._loop.time()
        self.runs += 1
        try:
            self._action()
        except Exception:
            logger.exception("a throttled widget update failed")


class LiveView(anywidget.AnyWidget):
    """A live, read-only, collapsible tree of a document that follows every edit.

    Args:
        source: what to show:

            - a :class:`~autosync_jupyter.DocHandle` (from
              ``await connect(url)``) or a
              :class:`~autosync_jupyter.BlockingDocHandle`: follows
              local and remote changes;
            - a :class:`~autosync_jupyter.Document`: follows its own
              (local) changes;
            - ``(server, doc_id)`` with a
              :class:`~autosync_jupyter.SyncServer` of this kernel:
              follows the served document (loaded from storage if needed);
            - ``(connection, doc_id)``: opens the document on a
              :class:`~autosync_jupyter.Connection` or
              :class:`~autosync_jupyter.BlockingConnection` (in the
              background) and follows it.

        title: the heading (default: the document's ``automerge:`` URL).
        interval: least seconds between two updates of the front end.
        name, color: how this notebook's user appears to the document's
            other peers (default: the user's name from JupyterLab's
            identity once the view is shown, until then the login name,
            and a colour of its own).
        announce: announce the user in the document (presence) when the
            view follows a live handle; ``False`` to only watch.

    Synced to the front end: ``value`` (the tree, see
    :mod:`autosync_jupyter.crdt.json_tree`), ``title``, ``url``, ``heads``
    (short), ``updated`` (how many updates since it was first shown),
    ``error`` (why the document cannot be shown, or ``""``), ``loading``;
    the timeline: ``timeline`` (open or not), ``versions`` (how many),
    ``version`` (the one shown, 1 to ``versions``; 0 follows the document)
    and ``past`` (that version's tree, changed paths, author, time, message
    and URL); ``presence`` (who is in the document, this user first) and
    ``status`` (what the last action did).

    Raises:
        AutosyncError: created outside a running event loop.
        TypeError: ``source`` is none of the above.
        InvalidDocumentId: the ``doc_id`` of a pair is not a document id or URL.
    """

    _esm = STATIC / "live_view.js"
    _css = STATIC / "widgets.css"

    value = traitlets.Any(None, allow_none=True).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    url = traitlets.Unicode("").tag(sync=True)
    heads = traitlets.List(traitlets.Unicode()).tag(sync=True)
    updated = traitlets.Int(0).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    loading = traitlets.Bool(False).tag(sync=True)
    timeline = traitlets.Bool(False).tag(sync=True)
    versions = traitlets.Int(0).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)
    past = traitlets.Any(None, allow_none=True).tag(sync=True)
    presence = traitlets.List(traitlets.Dict()).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    #: Set by the front end: JupyterLab's identity of its user (``/api/me``).
    identity = traitlets.Dict().tag(sync=True)

    # Widget.__del__ calls close(), even on an instance whose __init__ raised.
    _started = False

    def __init__(
        self,
        source: LiveViewSource,
        *,
        title: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        name: str | None = None,
        color: str | None = None,
        announce: bool = True,
    ) -> None:
        loop = running_loop("LiveView")
        super().__init__()
        self._name = name
        self._color = color
        self._announce = announce
        self._presence: Presence | None = None
        self._announced = False
        self._write: Callable[[Callable[[MutableMap], object], str], None] | None = None
        self._last_timeline: tuple[tuple[bytes, ...], int] | None = None
        self._loop = loop
        self._throttle = Throttle(loop, self._render, interval)
        self._detachers: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._read: Callable[[], Document | None] = lambda: None
        self._lock: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
        self._last_heads: list[bytes] | None = None
        self._shown = False
        self._detached = False
        #: The id of the document shown (None for a plain Document).
        self.document_id: DocumentId | None = None
        self._started = True
        self._attach(source)
        if self.document_id is not None:
            self.url = document_url(self.document_id)
        self.title = title if title is not None else (self.url or "Document")
        self.on_msg(in_loop_thread(loop, self._on_msg))
        # Front-end trait changes may arrive in another thread: the throttle
        # brings the work into the loop.
        self.observe(lambda change: self._throttle.poke(), names=["timeline", "version"])
        self.observe(self._on_identity, names=["identity"])
        self._render()

    # -- sources ---------------------------------------------------------------------

    def _attach(self, source: LiveViewSource) -> None:
        if isinstance(source, BlockingDocHandle):
            source = source.handle
        if isinstance(source, DocHandle):
            self._follow_handle(source)
        elif isinstance(source, Document):
            document = source
            self._read = lambda: document

            def write(edit: Callable[[MutableMap], object], message: str) -> None:
                with document.change(message=message) as root:
                    edit(root)

            self._write = write
            self._detachers.append(document.add_listener(lambda event: self._throttle.poke()))
        elif isinstance(source, tuple) and len(source) == 2:
            owner, doc_id = source
            self.document_id = interpret_as_document_id(doc_id)
            if isinstance(owner, SyncServer):
                self._follow_server(owner, self.document_id)
            elif isinstance(owner, (Connection, BlockingConnection)):
                self._open_on(owner, self.document_id)
            else:
                raise TypeError(
                    "a LiveView pair is (SyncServer | Connection | BlockingConnection, doc_id), "
                    f"not ({type(owner).__name__}, ...)"
                )
        else:
            raise TypeError(
                "LiveView shows a DocHandle, BlockingDocHandle, Document, (server, doc_id) or "
                f"(connection, doc_id), not {type(source).__name__}"
            )

    def _follow_handle(self, handle: DocHandle) -> None:
        self.document_id = handle.document_id
        self._read = lambda: handle.doc
        # The connection applies remote changes under this lock, possibly in
        # its own thread (BlockingConnection): read under it too.
        self._lock = handle.locked
        self._detachers.append(handle.on_change(lambda event: self._throttle.poke()))

        def write(edit: Callable[[MutableMap], object], message: str) -> None:
            with handle.locked(), handle.doc.change(message=message) as root:
                edit(root)

        self._write = write
        self._presence = presence = handle.presence
        self._detachers.append(presence.on_change(lambda peers: self._throttle.poke()))
        if self._announce:
            self._announce_user()

    def _follow_server(self, server: SyncServer, doc_id: DocumentId) -> None:
        def changed(ids: frozenset[DocumentId]) -> None:
            if doc_id in ids:
                self._throttle.poke()

        def read() -> Document | None:
            snapshot = server.snapshot(doc_id)
            if snapshot is None and self._task is None:
                self._task = self._loop.create_task(self._load_from(server, doc_id))
            return snapshot

        self._read = read
        self._detachers.append(server.add_listener(changed))

        def write(edit: Callable[[MutableMap], object], message: str) -> None:
            # The served document changes in the hub: through the server.
            task = self._loop.create_task(server.change_document(doc_id, edit))
            task.add_done_callback(self._write_done)

        self._write = write

    async def _load_from(self, server: SyncServer, doc_id: DocumentId) -> None:
        self.loading = True
        try:
            await server.get_document(doc_id)
        except KeyError:
            self.error = f"the server holds no document {doc_id}"
            return
        except (AutosyncError, OSError) as exc:
            self.error = f"cannot load document {doc_id}: {exc}"
            return
        finally:
            self.loading = False
        self._throttle.poke()

    def _open_on(self, conn: Connection | BlockingConnection, doc_id: DocumentId) -> None:
        inner = conn.connection if isinstance(conn, BlockingConnection) else conn
        handle = inner.handles.get(doc_id)
        if handle is not None:
            self._follow_handle(handle)
            return
        self._task = self._loop.create_task(self._open_async(conn, doc_id))

    async def _open_async(self, conn: Connection | BlockingConnection, doc_id: DocumentId) -> None:
        self.loading = True
        try:
            if isinstance(conn, BlockingConnection):
                # Its open() blocks until the document arrives: not in this loop.
                handle = (await asyncio.to_thread(conn.open, doc_id)).handle
            else:
                handle = await conn.open(doc_id)
        except AutosyncError as exc:
            self.error = str(exc)
            return
        finally:
            self.loading = False
        if self._detached:
            return
        self._follow_handle(handle)
        self._throttle.poke()

    # -- updates ---------------------------------------------------------------------

    def _render(self) -> None:
        if self._detached:
            return
        self._render_presence()
        try:
            document = self._read()
            if document is None:
                return
            with self._lock():
                heads = document.heads
                tree = document_tree(document) if heads != self._last_heads else None
                timeline = self._timeline_state(document, heads)
        except (AutosyncError, KeyError, RuntimeError, IndexError, ValueError) as exc:
            logger.warning("cannot show document %s: %s", self.document_id, exc)
            self.error = f"cannot show the document: {exc}"
            return
        if timeline is not None:
            versions, past = timeline
            with self.hold_sync():
                self.versions = versions
                self.past = past
            self._announce_version(past)
        if tree is None:
            return
        self._last_heads = heads
        with self.hold_sync():
            self.value = tree
            self.heads = short_heads(heads)
            self.error = ""
            if self._shown:
                self.updated += 1
        self._shown = True

    # -- timeline ----------------------------------------------------------------------

    def _timeline_state(
        self, document: Document, heads: list[bytes]
    ) -> tuple[int, dict[str, Any] | None] | None:
        """The new ``versions`` and ``past``, or None when they are as last sent."""
        if not self.timeline and not self.version:
            return None  # closed: long histories cost nothing
        key = (tuple(heads), self.version)
        if key == self._last_timeline:
            return None
        self._last_timeline = key
        versions = len(document.history())
        if not self.version:
            return versions, None
        version = min(max(self.version, 1), versions)
        return versions, version_details(document, version, self.document_id)

    def _document_now(self) -> Document:
        document = self._read()
        if document is None:
            raise AutosyncError("the document is not loaded yet")
        return document

    def version_url(self, version: int) -> str:
        """The ``automerge:<id>#<heads>`` URL of version ``version`` (1 is the first change).

        Raises:
            AutosyncError: the view shows a plain Document, which has no id.
            IndexError: there is no such version.
        """
        if self.document_id is None:
            raise AutosyncError("a plain Document has no automerge: URL; share it first")
        document = self._document_now()
        with self._lock():
            return document_url(self.document_id, version_heads(document.history(), version))

    def restore(self, version: int) -> None:
        """Make the document's content that of ``version`` again, as one new change.

        History is never rewritten: the change goes on top of every other
        one (peers see an ordinary edit), and only what differs is written.
        The view goes back to following the document.

        Raises:
            IndexError: there is no such version.
            AutosyncError: the document is not loaded, or the view cannot
                change it.
        """
        if self._write is None:
            raise AutosyncError("this view cannot change its document")
        document = self._document_now()
        with self._lock():
            past = document.at(version_heads(document.history(), version))
        self._write(lambda root: write_version(root, past), f"restore version {version}")
        with self.hold_sync():
            self.version = 0
            self.status = f"version {version} restored as a new change"

    def _write_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.status = f"restoring failed: {task.exception()}"

    def _on_msg(self, widget: Any, content: Any, buffers: list[bytes]) -> None:
        if not isinstance(content, dict) or content.get("type") != "restore":
            return
        version = content.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            return
        try:
            self.restore(version)
        except (AutosyncError, IndexError, KeyError) as exc:
            self.status = f"cannot restore version {version}: {exc}"

    # -- presence ----------------------------------------------------------------------

    def _user_state(self) -> dict[str, Any]:
        identity = self.identity if isinstance(self.identity, dict) else {}
        name = self._name or identity.get("name") or notebook_user()
        color = self._color or identity.get("color")
        presence = self._presence
        if not color and presence is not None and presence.peer_id is not None:
            color = peer_color(presence.peer_id)
        return {"name": str(name), "color": str(color or peer_color(str(name)))}

    def _announce_user(self) -> None:
        if self._presence is None or self._detached:
            return
        state = self._user_state()
        self._presence.announce(name=state["name"], color=state["color"], viewing=[])
        self._announced = True
        self._throttle.poke()

    def _on_identity(self, change: Any) -> None:
        if self._announced and self._presence is not None:
            state = self._user_state()  # thread-safe: the presence hops to its loop
            self._presence.announce(name=state["name"], color=state["color"])
        self._throttle.poke()

    def _announce_version(self, past: dict[str, Any] | None) -> None:
        if self._announced and self._presence is not None:
            heads = past["url_heads"] if past is not None else None
            if self._presence.local.get("heads") != heads:
                self._presence.announce(heads=heads)

    def _render_presence(self) -> None:
        presence = self._presence
        if presence is None:
            return
        rows: list[dict[str, Any]] = []
        if self._announced and presence.announced:
            me = presence.local
            rows.append(
                {
                    "peer": presence.peer_id or "",
                    "name": str(me.get("name", "")),
                    "color": str(me.get("color", "")),
                    "viewing": me.get("viewing"),
                    "heads": me.get("heads"),
                    "me": True,
                }
            )
        for peer in sorted(presence.peers.values(), key=lambda p: (p.label(), p.peer_id)):
            rows.append(
                {
                    "peer": peer.peer_id,
                    "name": peer.label(),
                    "color": peer.color,
                    "viewing": _jsonable(peer.viewing),
                    "heads": _jsonable(peer.state.get("heads")),
                    "me": False,
                    "last_seen": peer.last_seen.isoformat(),
                }
            )
        if rows != self.presence:
            self.presence = rows

    def refresh(self) -> None:
        """Re-read the document now (it is re-read on every change anyway)."""
        self._last_heads = None
        self._throttle.poke()

    def detach(self) -> None:
        """Stop following the document; the view keeps showing its last state."""
        if not self._started:
            return
        self._detached = True
        self._throttle.cancel()
        for remove in self._detachers:
            remove()
        self._detachers.clear()
        if self._announced and self._presence is not None:
            self._presence.leave()
            self._announced = False
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def close(self) -> None:
        """Stop following the document and close the widget (its views disappear)."""
        self.detach()
        super().close()

    def __repr__(self) -> str:
        what = self.title or "Document"
        if self.error:
            return f"<LiveView {what}: error: {self.error}>"
        if self.value is None:
            return f"<LiveView {what}: loading>"
        keys = len(self.value) if isinstance(self.value, dict) else 0
        state = "detached" if self._detached else "live"
        return (
            f"<LiveView {what}: {keys} key{'s' * (keys != 1)}, "
            f"{self.updated} update{'s' * (self.updated != 1)}, {state}>"
        )


def _jsonable(value: Any) -> Any:
    """A peer's value as the front end can take it (peers may send anything CBOR holds)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return repr(value)
