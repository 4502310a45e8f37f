"""The blocking façade of :mod:`autosync_jupyter.runtime.connection`, for scripts.

:func:`connect_blocking` returns a :class:`BlockingConnection` whose
connection runs in an event loop of its own daemon thread
(:class:`~.loop_thread.LoopThread`); its methods, and those of the
:class:`BlockingDocHandle` objects it hands out, block until done. Inside a
running event loop (a notebook cell), ``await connect(...)`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from collections.abc import Mapping as MappingABC
from typing import Any

from ..crdt.document import Document
from ..errors import SyncTimeout
from ..ids import DocumentId
from ..nesting import kernel_loop
from .connection import ChangeCallback, Connection, DocHandle, HandleState
from .loop_thread import LoopThread
from .presence import Presence

__all__ = [
    "BlockingConnection",
    "BlockingDocHandle",
    "connect_blocking",
]


class BlockingDocHandle:
    """A :class:`DocHandle` for scripts: its methods block.

    Read with :meth:`to_py` and edit with ``with handle.change() as d:``;
    both hold the handle's lock, so the connection's thread never applies a
    remote change halfway through your edit.
    """

    def __init__(self, handle: DocHandle, runner: LoopThread) -> None:
        self._handle = handle
        self._runner = runner

    @property
    def handle(self) -> DocHandle:
        """The :class:`~autosync_jupyter.DocHandle` this wraps (for ``await`` code in its loop)."""
        return self._handle

    @property
    def document_id(self) -> DocumentId:
        """The document's id."""
        return self._handle.document_id

    @property
    def url(self) -> str:
        """The document's ``automerge:`` URL."""
        return self._handle.url

    @property
    def state(self) -> HandleState:
        """See :attr:`DocHandle.state`."""
        return self._handle.state

    @property
    def doc(self) -> Document:
        """The live document (prefer :meth:`to_py` and :meth:`change` from this thread)."""
        return self._handle.doc

    def to_py(self) -> Any:
        """The document's content as plain Python values."""
        with self._handle.locked():
            return self._handle.doc.to_py()

    @contextlib.contextmanager
    def change(self) -> Iterator[Any]:
        """Edit the document; the change is sent when the block ends."""
        with self._handle.locked(), self._handle.doc.change() as d:
            yield d

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """See :meth:`DocHandle.on_change`; the callback runs in the connection's thread."""
        return self._handle.on_change(callback)

    @property
    def presence(self) -> Presence:
        """See :attr:`DocHandle.presence` (its methods may be called from this thread)."""
        return self._handle.presence

    def broadcast(self, payload: Any) -> None:
        """See :meth:`DocHandle.broadcast`."""
        self._runner.call(lambda: self._handle.broadcast(payload))

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """Block until ``predicate(content)`` is true for the document's content; return it.

        Raises:
            SyncTimeout: the condition did not hold within ``timeout`` seconds.
        """
        return self._runner.run(self._handle.wait_for(predicate, timeout))

    def flush(self, timeout: float | None = None) -> None:
        """See :meth:`DocHandle.flush`."""
        self._runner.run(self._handle.flush(timeout))

    def close(self, *, flush: bool = True, timeout: float | None = None) -> None:
        """See :meth:`DocHandle.close`."""
        self._runner.run(self._handle.close(flush=flush, timeout=timeout))

    def __repr__(self) -> str:
        return repr(self._handle)


class BlockingConnection:
    """A :class:`Connection` whose methods block, for scripts without an event loop.

    The connection runs in its own thread. Use :func:`connect_blocking`.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self._conn = Connection(url, **options)
        self._runner = LoopThread("autosync-client")
        try:
            self._runner.run(self._conn.start())
        except BaseException:
            self._runner.stop()
            raise

    @property
    def connection(self) -> Connection:
        """The underlying async :class:`Connection` (lives in the connection's thread)."""
        return self._conn

    @property
    def connected(self) -> bool:
        """See :attr:`Connection.connected`."""
        return self._conn.connected

    def open(
        self,
        doc_id: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        allow_empty: bool = False,
    ) -> BlockingDocHandle:
        """See :meth:`Connection.open`."""
        handle = self._runner.run(
            self._conn.open(doc_id, wait=wait, timeout=timeout, allow_empty=allow_empty)
        )
        return BlockingDocHandle(handle, self._runner)

    def create(
        self,
        initial: MappingABC[str, Any] | Document | None = None,
        *,
        doc_id: str | None = None,
        timeout: float | None = None,
    ) -> BlockingDocHandle:
        """See :meth:`Connection.create`."""
        handle = self._runner.run(self._conn.create(initial, doc_id=doc_id, timeout=timeout))
        return BlockingDocHandle(handle, self._runner)

    def close(self, *, flush: bool = True, timeout: float | None = None) -> None:
        """See :meth:`Connection.close`; also stops the connection's thread."""
        try:
            if not self._runner.loop.is_closed():
                self._runner.run(self._conn.close(flush=flush, timeout=timeout))
        finally:
            self._runner.stop()

    def __enter__(self) -> BlockingConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except SyncTimeout:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return repr(self._conn)


def connect_blocking(url: str, **options: Any) -> BlockingConnection:
    """Blocking :func:`connect` for scripts; same arguments.

    >>> with connect_blocking(url) as conn:  # doctest: +SKIP
    ...     handle = conn.open(doc_id)
    ...     with handle.change() as d:
    ...         d["done"] = True

    Usable in a notebook cell: waiting keeps the kernel's loop running (see
    :mod:`autosync_jupyter.nesting`), so the server may be this kernel's own.

    Raises:
        RuntimeError: called from async code outside a notebook cell:
            ``await connect(...)`` there instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if kernel_loop() is None:
            raise RuntimeError(
                "connect_blocking() blocks, and this thread runs an event loop that is not "
                "a notebook kernel's: use `await connect(...)` instead"
            )
    return BlockingConnection(url, **options)
