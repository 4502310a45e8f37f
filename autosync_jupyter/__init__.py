"""autosync-jupyter: an automerge-repo sync hub and client for Python and Jupyter.

Run a sync server that JavaScript, Rust, R and Python Automerge peers connect
to::

    import asyncio
    from autosync_jupyter import SyncServer

    async def main():
        async with SyncServer(port=3030, data_dir=".automerge") as server:
            print("serving", server.url)
            await server.serve_forever()

    asyncio.run(main())

or, from a shell, ``autosync serve``.

Fetch a document from any automerge-repo server (ours, the JS sync server,
``wss://sync.automerge.org``), or keep documents in sync live::

    from autosync_jupyter import connect, fetch

    doc = await fetch("ws://127.0.0.1:3030", "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu")
    print(doc.to_py())

    async with connect("ws://127.0.0.1:3030") as conn:
        handle = await conn.open(doc_id)        # or: await conn.create({"title": "new"})
        with handle.doc.change() as d:          # sent to the server at once
            d["title"] = "hello"
        async for event in handle.changes():    # local and remote changes as they happen
            print(event.origin, handle.doc.to_py())

A document keeps its history: ``doc.history()`` lists its changes
(:class:`ChangeRecord`: author, time, message), ``doc.at(heads)`` is the
document at a past version and ``doc.diff(heads)`` what changed since
(:class:`Patch` es); ``doc.change(message="...")`` gives a change its
message. With pandas installed, ``doc.to_pandas("rows")`` turns a list of
maps into a ``DataFrame`` and ``d.update_from_pandas("rows", df, key="id")``
writes one back as the fewest edits.

``fetch_blocking`` and ``connect_blocking`` do the same in scripts without an
event loop (and in notebook cells, even against the kernel's own server);
from a shell: ``autosync fetch URL DOC`` and ``autosync watch URL DOC``.

``handle.presence`` (a :class:`Presence`) says who else is in a document now
and announces you there (``handle.presence.announce(name="Ada")``), in
automerge-repo's presence messages; nothing of it is stored.

In Jupyter, ``%load_ext autosync_jupyter`` adds the ``%autosync`` magic
(``%autosync serve``, ``create``, ``fetch``, ``open``, ``docs``, ``login``;
``%autosync --help``), and the widgets :class:`DocumentBrowser`,
:class:`LiveView` and :class:`LoginWidget` show servers, documents and
sign-in in the notebook.
"""

from __future__ import annotations

# First, before any module imports automerge.core: with another automerge
# release installed, importing the package fails with what to install.
from .crdt import binding as _binding  # noqa: F401

# isort: split
from .auth.login import (
    get_token,
    get_token_blocking,
    get_token_device,
    get_token_device_blocking,
    get_token_with_redirect,
)
from .auth.oidc import AuthConfig
from .auth.tls import client_ssl_context, make_self_signed_certificate, server_ssl_context
from .core.hub import Hub, PeerInfo, SharePolicy
from .crdt.document import (
    ChangeEvent,
    Counter,
    Document,
    ListView,
    MapView,
    MutableCounter,
    MutableList,
    MutableMap,
    MutableText,
)
from .crdt.history import ChangeRecord, History, Patch
from .crdt.values import to_py
from .errors import (
    AuthError,
    AutosyncError,
    ConnectionFailed,
    CounterNotSupported,
    DocumentError,
    DocumentUnavailable,
    DocumentUnreadable,
    InvalidDocumentId,
    ProtocolError,
    ServerError,
    StorageError,
    SyncTimeout,
    UnreadableValue,
)
from .ids import (
    DocumentId,
    PeerId,
    document_url,
    generate_document_id,
    interpret_as_document_id,
    is_valid_document_id,
    parse_automerge_url,
    validate_document_id,
)
from .jupyter import load_ipython_extension, unload_ipython_extension
from .runtime.blocking import BlockingConnection, BlockingDocHandle, connect_blocking
from .runtime.client import fetch, fetch_blocking
from .runtime.connection import ChangeStream, Connection, DocHandle, connect
from .runtime.presence import PeerPresence, Presence
from .runtime.server import BackgroundSyncServer, SyncServer
from .runtime.sync_runtime import DocumentSummary, SyncRuntime
from .storage import FileStore, MemoryStore, Store
from .version import __version__

__all__ = [
    "AuthConfig",
    "AuthError",
    "AutosyncError",
    "BackgroundSyncServer",
    "BlockingConnection",
    "BlockingDocHandle",
    "ChangeEvent",
    "ChangeRecord",
    "ChangeStream",
    "Connection",
    "ConnectionFailed",
    "Counter",
    "CounterNotSupported",
    "DocHandle",
    "Document",
    "DocumentBrowser",
    "DocumentError",
    "DocumentId",
    "DocumentSummary",
    "DocumentUnavailable",
    "DocumentUnreadable",
    "FileStore",
    "History",
    "Hub",
    "InvalidDocumentId",
    "ListView",
    "LiveView",
    "LoginWidget",
    "MapView",
    "MemoryStore",
    "MutableCounter",
    "MutableList",
    "MutableMap",
    "MutableText",
    "Patch",
    "PeerId",
    "PeerInfo",
    "PeerPresence",
    "Presence",
    "ProtocolError",
    "ServerError",
    "SharePolicy",
    "StorageError",
    "Store",
    "SyncRuntime",
    "SyncServer",
    "SyncTimeout",
    "UnreadableValue",
    "__version__",
    "client_ssl_context",
    "connect",
    "connect_blocking",
    "document_url",
    "fetch",
    "fetch_blocking",
    "generate_document_id",
    "get_token",
    "get_token_blocking",
    "get_token_device",
    "get_token_device_blocking",
    "get_token_with_redirect",
    "interpret_as_document_id",
    "is_valid_document_id",
    "load_ipython_extension",
    "make_self_signed_certificate",
    "parse_automerge_url",
    "server_ssl_context",
    "share",
    "to_py",
    "unload_ipython_extension",
    "validate_document_id",
]


# The Jupyter parts import ipywidgets, anywidget or jupyter_server: only when
# first used, so that scripts and the command line start fast.
_LAZY = {
    "DocumentBrowser": "browser",
    "LiveView": "live_view",
    "LoginWidget": "login_widget",
    "share": "share",
}


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Tell jupyter_server where the server extension lives (loaded only by the server)."""
    from .serverext import AutosyncExtension

    return [{"module": "autosync_jupyter.serverext", "app": AutosyncExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Tell ``jupyter labextension develop`` where the built front end is."""
    return [{"src": "labextension", "dest": "autosync-jupyter"}]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autosync_jupyter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".jupyter.{module}", __name__), name)
