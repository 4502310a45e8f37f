"""`DocumentBrowser`: the documents of a server, live, with a view of the one opened.

>>> DocumentBrowser(server)       # this kernel's SyncServer  # doctest: +SKIP
>>> DocumentBrowser(connection)   # documents open on a Connection  # doctest: +SKIP

The automerge-repo protocol has no "list documents" message, so a browser
of a remote server (through a :class:`~autosync_jupyter.Connection`)
lists the documents open on that connection and offers a field to open
another by id or ``automerge:`` URL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anywidget
import ipywidgets  # type: ignore[import-untyped]
import traitlets

from ..crdt.document import ChangeEvent
from ..crdt.json_tree import short_heads
from ..errors import AutosyncError, InvalidDocumentId
from ..ids import DocumentId, document_url, interpret_as_document_id
from ..runtime.blocking import BlockingConnection
from ..runtime.connection import Connection, DocHandle
from ..runtime.server import SyncServer
from .live_view import STATIC, LiveView, Throttle, in_loop_thread, running_loop

__all__ = ["BrowserSource", "DocumentBrowser"]

logger = logging.getLogger("autosync_jupyter.jupyter.browser")

#: What a :class:`DocumentBrowser` lists.
BrowserSource = SyncServer | Connection | BlockingConnection

#: Least seconds between two refreshes of the table caused by changes: a
#: refresh re-measures every changed document, so it is kept calmer than a view.
REFRESH_INTERVAL = 0.25


class BrowserTable(anywidget.AnyWidget):
    """The front end of a :class:`DocumentBrowser`: its table and toolbar.

    ``rows`` holds one dict per document: ``id``, ``url``, ``loaded``,
    ``size`` (bytes or None), ``heads`` (short hex), ``peers`` (None when
    unknown), ``last_change`` (ISO 8601 or None) and ``state``.
    """

    _esm = STATIC / "browser.js"
    _css = STATIC / "widgets.css"

    rows = traitlets.List(traitlets.Dict()).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    kind = traitlets.Unicode("server").tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)


def _iso(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.timezone.utc).isoformat() if when is not None else None


class DocumentBrowser:
    """A live table of a server's documents; open one to see it as a :class:`LiveView`.

    Args:
        source: this kernel's :class:`~autosync_jupyter.SyncServer`
            (every document it holds, with sizes, heads, connected peers and
            when each last changed), or a
            :class:`~autosync_jupyter.Connection` /
            :class:`~autosync_jupyter.BlockingConnection` to a
            remote server (the documents open on it; peers are unknown).
        open_in_place: show an opened document's view below the table. With
            False, :meth:`open` only returns the view (and tells
            :meth:`on_open` callbacks), for you to place it.

    In the front end: "Open" shows a document below the table, "Copy URL"
    copies its ``automerge:`` URL, "New document" creates an empty one and
    the field opens a document by id or URL. The table follows changes and
    peers as they happen.

    Display it as it is; to place it in a layout, use :attr:`widget` (an
    ``ipywidgets.VBox`` of :attr:`table` and :attr:`slot`).

    Raises:
        AutosyncError: created outside a running event loop, or the server
            is not running.
        TypeError: ``source`` is neither a server nor a connection.
    """

    def __init__(self, source: BrowserSource, *, open_in_place: bool = True) -> None:
        if not isinstance(source, (SyncServer, Connection, BlockingConnection)):
            raise TypeError(
                "a DocumentBrowser lists a SyncServer, Connection or BlockingConnection, "
                f"not {type(source).__name__}"
            )
        loop = running_loop("DocumentBrowser")
        self.table = BrowserTable()
        #: Where the opened document's view goes.
        self.slot = ipywidgets.Box(layout=ipywidgets.Layout(width="100%"))
        #: The whole browser as one widget, for layouts.
        self.widget = ipywidgets.VBox([self.table, self.slot])
        self.widget.add_class("autosync-browser-box")
        self._loop = loop
        self._source = source
        self.open_in_place = open_in_place
        self._throttle = Throttle(loop, self._refresh_logged, REFRESH_INTERVAL)
        self._view: LiveView | None = None
        self._open_callbacks: list[Callable[[LiveView], object]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # Per connection-sourced document: when a change was last seen, the
        # unsubscribe function, and its size at given heads.
        self._seen: dict[DocumentId, dt.datetime] = {}
        self._watching: dict[DocumentId, Callable[[], None]] = {}
        self._sizes: dict[DocumentId, tuple[list[bytes], int | None]] = {}
        self._remove_listener: Callable[[], None] | None = None
        if isinstance(source, SyncServer):
            self.table.kind = "server"
            self.table.source = f"this kernel's server {source.url}"
        else:
            self.table.kind = "connection"
            self.table.source = f"documents open on the connection to {self._connection.url}"
        self.refresh()  # first, so that a server that is not running leaves nothing behind
        if isinstance(source, SyncServer):
            self._remove_listener = source.add_listener(lambda ids: self._throttle.poke())
        self.table.on_msg(in_loop_thread(loop, self._on_msg))

    # -- Python API --------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The table's rows as shown (see :class:`BrowserTable`)."""
        return [dict(row) for row in self.table.rows]

    @property
    def view(self) -> LiveView | None:
        """The view of the document opened last in place, if any."""
        return self._view

    def refresh(self) -> list[dict[str, Any]]:
        """Re-read the documents now and return the new rows.

        Raises:
            AutosyncError: the server is not running.
        """
        if isinstance(self._source, SyncServer):
            rows = self._server_rows(self._source)
        else:
            rows = self._connection_rows()
        self.table.rows = rows
        return self.rows

    def open(self, doc_id: str) -> LiveView:
        """Open a document (id or ``automerge:`` URL) as a :class:`LiveView` and return it.

        On a connection, a document not open there yet is opened in the
        background (the view shows it once it arrives, or the error).

        Raises:
            InvalidDocumentId: ``doc_id`` is not a document id or URL.
        """
        document_id = interpret_as_document_id(doc_id)
        view = LiveView((self._source, document_id))
        if isinstance(self._source, (Connection, BlockingConnection)):
            # The document joins the connection's list once it arrives.
            view.observe(lambda change: self._throttle.poke(), names="loading")
        if self.open_in_place:
            if self._view is not None:
                self._view.close()
            self._view = view
            self.slot.children = (view,)
            self.table.selected = document_id
        for callback in list(self._open_callbacks):
            try:
                callback(view)
            except Exception:
                logger.exception("an on_open callback of a DocumentBrowser failed")
        return view

    def on_open(self, callback: Callable[[LiveView], object]) -> Callable[[], None]:
        """Call ``callback(view)`` whenever a document is opened; returns a remover."""
        self._open_callbacks.append(callback)

        def remove() -> None:
            if callback in self._open_callbacks:
                self._open_callbacks.remove(callback)

        return remove

    def create(self, initial: Mapping[str, Any] | None = None) -> asyncio.Task[DocumentId]:
        """Create a document (with ``initial`` content), then list and open it.

        Returns a task at once, so it works from a plain cell; ``await`` it
        for the new id. On a connection the task ends when the server has
        acknowledged the document.
        """
        return self._spawn(self._create(initial))

    def close(self) -> None:
        """Stop following the source and close the browser and its view."""
        self._throttle.cancel()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for unsubscribe in self._watching.values():
            unsubscribe()
        self._watching.clear()
        for task in self._tasks:
            task.cancel()
        if self._view is not None:
            self._view.close()
            self._view = None
        self.table.close()
        self.slot.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displaying the browser displays its widget.
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<DocumentBrowser of {self.table.source}: {len(self.table.rows)} documents>"

    # -- rows --------------------------------------------------------------------------

    @property
    def _connection(self) -> Connection:
        source = self._source
        assert not isinstance(source, SyncServer)
        return source.connection if isinstance(source, BlockingConnection) else source

    @staticmethod
    def _server_rows(server: SyncServer) -> list[dict[str, Any]]:
        return [
            {
                "id": summary.document_id,
                "url": document_url(summary.document_id),
                "loaded": summary.loaded,
                "size": summary.size,
                "heads": short_heads(summary.heads),
                "peers": summary.peers,
                "last_change": _iso(summary.last_change),
                "state": "loaded" if summary.loaded else "stored",
            }
            for summary in server.document_summaries()
        ]

    def _connection_rows(self) -> list[dict[str, Any]]:
        handles = self._connection.handles
        for doc_id in set(self._watching) - set(handles):
            self._watching.pop(doc_id)()
        rows = []
        for doc_id, handle in sorted(handles.items()):
            if doc_id not in self._watching:
                self._watching[doc_id] = handle.on_change(self._change_listener(doc_id))
            # The connection may apply changes in its own thread: read under its lock.
            with handle.locked():
                heads = handle.doc.heads
                size = self._size(doc_id, handle, heads)
            rows.append(
                {
                    "id": doc_id,
                    "url": handle.url,
                    "loaded": handle.ready,
                    "size": size,
                    "heads": short_heads(heads),
                    "peers": None,
                    "last_change": _iso(self._seen.get(doc_id)),
                    "state": handle.state,
                }
            )
        return rows

    def _size(self, doc_id: DocumentId, handle: DocHandle, heads: list[bytes]) -> int | None:
        cached = self._sizes.get(doc_id)
        if cached is not None and cached[0] == heads:
            return cached[1]
        try:
            size: int | None = len(handle.doc.save()) if heads else None
        except AutosyncError:  # a change is open on it right now; measure next time
            return None
        self._sizes[doc_id] = (heads, size)
        return size

    def _change_listener(self, doc_id: DocumentId) -> Callable[[ChangeEvent], None]:
        def changed(event: ChangeEvent) -> None:
            # Runs in the connection's thread, which need not be this loop's.
            self._seen[doc_id] = dt.datetime.now(dt.timezone.utc)
            self._throttle.poke()

        return changed

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            logger.warning("cannot refresh the document browser: %s", exc)
            self.table.message = f"cannot list the documents: {exc}"

    # -- front end ---------------------------------------------------------------------

    def _on_msg(self, widget: Any, content: Any, buffers: list[bytes]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "refresh":
            self._throttle.poke()
        elif kind == "create":
            self.create()
        elif kind in ("open", "open-url"):
            self._open_from_front_end(str(content.get("id", "")).strip())
        else:
            logger.debug("ignoring a front-end message of type %r", kind)

    def _open_from_front_end(self, text: str) -> None:
        try:
            doc_id = interpret_as_document_id(text)
        except InvalidDocumentId:
            self.table.message = f"not a document id or automerge: URL: {text[:80]!r}"
            return
        if isinstance(self._source, SyncServer) and doc_id not in self._source.list_documents():
            self.table.message = f"this server holds no document {doc_id}"
            return
        self.table.message = ""
        self.open(doc_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Reported in the table; retrieving it here keeps asyncio from
            # logging "exception never retrieved" when the front end asked.
            logger.debug("a document browser task failed: %s", task.exception())

    async def _create(self, initial: Mapping[str, Any] | None) -> DocumentId:
        self.table.busy = True
        self.table.message = "creating a document…"
        source = self._source
        try:
            if isinstance(source, SyncServer):
                doc_id = await source.create_document(dict(initial) if initial else None)
            elif isinstance(source, BlockingConnection):
                # Blocks until the server acknowledges it: not in this loop.
                doc_id = (await asyncio.to_thread(source.create, initial)).document_id
            else:
                doc_id = (await source.create(initial)).document_id
        except (AutosyncError, ValueError, OSError) as exc:
            self.table.message = f"cannot create a document: {exc}"
            raise
        finally:
            self.table.busy = False
        self.table.message = f"created {doc_id}"
        self.refresh()
        self.open(doc_id)
        return doc_id
