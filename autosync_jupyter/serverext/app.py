"""The Jupyter server extension: one sync hub on the Jupyter server's own port.

Installing the package enables it (``jupyter server extension list`` shows
``autosync_jupyter``). Settings are traitlets of :class:`AutosyncExtension`,
set in a ``jupyter_server_config.py``::

    c.AutosyncExtension.data_dir = "/srv/automerge"
    c.AutosyncExtension.share = "announce"

or on the command line (``jupyter lab --AutosyncExtension.share=announce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Callable, Enum, Float, Int, List, Unicode, Union

from ..core.protocol import DEFAULT_MAX_MESSAGE_SIZE
from ..runtime.sync_runtime import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_LOADED_DOCUMENTS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_SEND_QUEUE,
    SyncRuntime,
)
from ..storage import PostgresStore
from ..storage.postgres import is_postgres_url
from .base import ExtensionServices
from .handlers import (
    DocumentHandler,
    DocumentsHandler,
    NotFoundHandler,
    OIDCCallbackHandler,
    ServerHandler,
    ServersHandler,
    SyncWebSocketHandler,
)
from .registry import SECRET_VARIABLE, KernelServerRegistry
from .relay import KernelServerRelayHandler

__all__ = ["AutosyncExtension", "route_table"]

logger = logging.getLogger("autosync_jupyter.serverext.app")


def _log_through_server(serverapp: Any) -> None:
    """Show the ``autosync_jupyter`` loggers in the Jupyter server's log.

    Only when nothing else configured logging: otherwise the records go
    wherever the application sends them, and adding a handler would print
    them twice.
    """
    package = logging.getLogger("autosync_jupyter")
    server_log = getattr(serverapp, "log", None)
    if package.handlers or logging.getLogger().handlers or server_log is None:
        return
    for handler in server_log.handlers:
        package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(max(server_log.getEffectiveLevel(), logging.INFO))


def route_table(extension: ExtensionServices) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The extension's routes, relative to the server's base_url."""
    options = {"extension": extension}
    return [
        (r"autosync/ws", SyncWebSocketHandler, options),
        (r"autosync/relay", KernelServerRelayHandler, options),
        (r"autosync/api/documents", DocumentsHandler, options),
        (r"autosync/api/documents/([^/]+)", DocumentHandler, options),
        (r"autosync/api/servers", ServersHandler, options),
        (r"autosync/api/servers/([^/]+)", ServerHandler, options),
        (r"autosync/oidc/callback", OIDCCallbackHandler, {}),
        # Anything else under autosync/ is a JSON 404 (after authentication,
        # so probing without a token learns nothing).
        (r"autosync(?:/.*)?", NotFoundHandler, {}),
    ]


class AutosyncExtension(ExtensionApp):
    """An automerge-repo sync hub mounted on the Jupyter server, under ``{base_url}autosync/``.

    Routes (all but the OIDC callback need Jupyter's login cookie or token):

    - ``autosync/ws``: the automerge-repo WebSocket endpoint; any
      automerge-repo client connects to ``ws(s)://<host>{base_url}autosync/ws``
      (with ``?token=<jupyter token>`` when it has no login cookie).
    - ``autosync/api/documents``: ``GET`` lists the documents, ``POST``
      ``{"content": {...}}`` creates one.
    - ``autosync/api/documents/<id>``: ``GET`` reads a document as JSON.
    - ``autosync/oidc/callback``: the redirect page of OIDC sign-ins started
      in the browser (see :mod:`autosync_jupyter.serverext.handlers`).

    The hub starts with the server and stops with it, flushing every
    document to disk and closing connections with 1001 ("going away").
    """

    name = "autosync_jupyter"
    description = "An automerge-repo sync hub on the Jupyter server's port"

    data_dir = Unicode(
        ".autosync",
        help="""Directory of the document store. A relative path is taken from
        the server's root_dir (ServerApp.root_dir); the default keeps a hidden
        .autosync directory there, apart from the .automerge directory that
        `autosync serve` and `%autosync serve` use by default, so a kernel's
        server and this one never fight over one store. The layout is the one
        of `autosync serve --data-dir` (and of the JS sync server): a
        directory can be served by either, one process at a time.""",
    ).tag(config=True)

    store = Unicode(
        "",
        help="""The document store as a URL, instead of data_dir: a
        postgresql://user@host/database URL keeps the documents in that
        database (tables autosync_*, created when missing; needs
        `pip install 'autosync-jupyter[postgres]'`); any other value is a
        directory, as data_dir. Empty (the default): data_dir.""",
    ).tag(config=True)

    store_shared = Bool(
        False,
        help="""With a postgresql:// store: share the database with other
        servers (other Jupyter servers, `autosync serve --store-shared`),
        each seeing the others' changes; all of them must say so.""",
    ).tag(config=True)

    ephemeral = Bool(
        False,
        help="""Keep documents in memory only (lost when the server stops) and
        announce no storage id to peers; data_dir is then unused.""",
    ).tag(config=True)

    share = Union(
        [Enum(["request", "announce", "deny"]), Callable()],
        default_value="request",
        help="""Which documents a connected peer may see. "request" (as the
        public JS sync server): a peer gets a document by asking for its id;
        "announce": every document is pushed to every peer; "deny": nothing is
        shared. In a Python config file it may also be a function
        policy(peer, doc_id) returning True (announce), None (on request) or
        False (deny); peer.identity is {"sub": <Jupyter username>, "name":
        <display name>} for the signed-in Jupyter user.""",
    ).tag(config=True)

    max_message_size = Int(
        DEFAULT_MAX_MESSAGE_SIZE,
        help="""Largest WebSocket message accepted, in bytes (a larger one
        closes the connection with 1009). Whole documents travel in one
        message, so keep it large; the default matches the JS sync server.
        It also bounds the body of a POST to autosync/api/documents.""",
    ).tag(config=True)

    sync_interval = Float(
        0.1,
        help="""Shortest time in seconds between two rounds of sync messages
        for a document several peers share: the first change after a quiet
        spell goes out at once, faster ones are gathered (as the JS server's
        100 ms throttle does). 0 sends at every event loop turn.""",
    ).tag(config=True)

    max_send_queue = Int(
        DEFAULT_MAX_SEND_QUEUE,
        help="""Bytes of unsent messages after which a peer that does not read
        is disconnected.""",
    ).tag(config=True)

    max_queued_bytes = Int(
        DEFAULT_MAX_QUEUED_BYTES,
        help="""Unsent bytes of all peers together; beyond, the peer with the
        most waiting is disconnected, so memory for outgoing data stays within
        this.""",
    ).tag(config=True)

    max_connections = Int(
        DEFAULT_MAX_CONNECTIONS,
        help="""Sync connections served at once; more are closed with 1013
        (try again later).""",
    ).tag(config=True)

    idle_timeout = Float(
        DEFAULT_IDLE_TIMEOUT,
        help="""Seconds after which a document no peer syncs, everything of it
        stored, leaves memory; it is loaded again when next asked for. 0: never.""",
    ).tag(config=True)

    max_loaded_documents = Int(
        DEFAULT_MAX_LOADED_DOCUMENTS,
        help="""Documents kept in memory at most; beyond, the least recently
        used idle ones leave it (documents in use always stay). 0: no bound.""",
    ).tag(config=True)

    upstreams = List(
        Unicode(),
        default_value=[],
        help="""Other automerge-repo servers (ws:// or wss:// URLs) this one
        is also a client of: every document with changes here is synced with
        them both ways, and a document a peer asks for that is not here is
        asked of them first. The connections are kept up in the background.""",
    ).tag(config=True)

    upstream_token = Unicode(
        "",
        help="""Bearer token sent to the upstream servers (empty: none;
        default: $AUTOSYNC_UPSTREAM_TOKEN).""",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sync_runtime: SyncRuntime | None = None
        self._starting: asyncio.Future[SyncRuntime] | None = None
        #: Servers of kernels (``%autosync serve``) that announced themselves.
        self.kernel_servers = KernelServerRegistry()
        # Kernels this server starts inherit its environment, and with it the
        # secret they announce with (see registry.py).
        self.kernel_secret = secrets.token_urlsafe(32)
        os.environ[SECRET_VARIABLE] = self.kernel_secret

    # -- ExtensionApp hooks --------------------------------------------------------

    def initialize_settings(self) -> None:
        """Create (not yet start: the server's loop is not running) the sync hub."""
        _log_through_server(self.serverapp)
        store = None
        if self.store and not self.ephemeral and is_postgres_url(self.store):
            store = PostgresStore(self.store, shared=self.store_shared)
        self.sync_runtime = SyncRuntime(
            data_dir=None if self.ephemeral or store else self.resolved_data_dir(),
            store=store,
            ephemeral=self.ephemeral,
            share=self.share,
            max_message_size=self.max_message_size,
            sync_interval=self.sync_interval,
            max_send_queue=self.max_send_queue,
            max_queued_bytes=self.max_queued_bytes,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout or None,
            max_loaded_documents=self.max_loaded_documents or None,
            upstreams=list(self.upstreams),
            upstream_token=(self.upstream_token or os.environ.get("AUTOSYNC_UPSTREAM_TOKEN"))
            if self.upstreams
            else None,
        )

    def initialize_handlers(self) -> None:
        """Add the ``autosync/`` routes (the server prefixes its base_url)."""
        self.handlers.extend(route_table(self))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Called once the server's loop runs: open the store now rather than
        # at the first request, so a broken data_dir shows up in the log at
        # startup. Requests that arrive earlier wait in ready().
        with contextlib.suppress(Exception):  # logged by _start_hub; requests get 503
            await self.ready()

    async def stop_extension(self) -> None:
        """Flush every document and close every connection (1001) as the server stops."""
        if self._starting is None or self.sync_runtime is None:
            return
        try:
            await self._starting
        except Exception:
            return
        await self.sync_runtime.close()
        logger.info("autosync hub stopped")

    # -- for the handlers ------------------------------------------------------------

    def resolved_data_dir(self) -> str:
        """``store`` (a directory) or ``data_dir`` as an absolute path (relative to root_dir)."""
        path = os.path.expanduser(self.store or self.data_dir)
        if not os.path.isabs(path):
            root = getattr(self.serverapp, "root_dir", None) or os.getcwd()
            path = os.path.join(root, path)
        return os.path.abspath(path)

    async def ready(self) -> SyncRuntime:
        """The running hub, started at the first call (later calls share that start).

        Raises whatever opening the store raised (it is logged once); the
        handlers turn it into HTTP 503.
        """
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_hub())
        return await asyncio.shield(self._starting)

    async def _start_hub(self) -> SyncRuntime:
        runtime = self.sync_runtime
        if runtime is None:
            raise RuntimeError("the autosync extension was not initialized")
        try:
            await runtime.start()
        except Exception:
            logger.exception(
                "the autosync hub could not start (data: %s); its routes answer 503",
                runtime.data_location,
            )
            raise
        return runtime
