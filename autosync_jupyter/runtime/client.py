"""Shared client transport, and fetching one document over a throwaway connection.

The pieces every client of an automerge-repo sync server needs: URL and token
checks, opening the WebSocket, the ``join``/``peer`` handshake and verbose
logging (with the bearer token redacted). The rules of the conversation
about documents are the sans-I/O :class:`~autosync_jupyter.core.peer.ClientPeer`;
:func:`fetch` here and the live
:class:`~autosync_jupyter.runtime.connection.Connection` drive it, and
:mod:`autosync_jupyter.runtime.blocking` is the blocking twin of the latter.

:func:`fetch` opens a throwaway connection, asks for one document and returns
it as soon as the sync is complete: the server advertised heads this client
now holds, and there is nothing left to send. It never waits for a quiet
period, so a small document on loopback comes back in milliseconds.
:func:`fetch_blocking` is its blocking twin for scripts; inside a running
event loop (a notebook cell), ``await`` :func:`fetch` instead.

Protocol notes (docs/protocol.md): the client joins as an ephemeral peer
(``peerMetadata {isEphemeral: true}``), waits for ``peer`` before sending
anything else (§2.7), asks for documents it lacks with ``request`` and
announces documents it has with ``sync`` (§3.2, §3.3), treats a document as
unavailable after ``doc-unavailable`` with no data (§3.9), and starts every
connection from fresh sync states (§4.2).

A server that holds nothing for an id does not always say
``doc-unavailable``: R's server (and ours with ``create_on_request``)
auto-creates an empty document, and a JS 2.6 server with other peers
connected answers with an empty document and nothing more. So an answer that
advertises no heads, while nothing has arrived here, also makes the document
unavailable (:class:`~autosync_jupyter.errors.DocumentUnavailable`, "the
server answered with an empty document") once a short grace period passed
without data or ``doc-unavailable``; ``allow_empty=True`` takes the empty
document instead, for servers that create documents on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import sys
import threading
import time
from typing import TypeAlias

import automerge.core as am
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from ..auth.redact import redact_url, websocket_logger
from ..core.peer import ClientPeer
from ..core.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    Message,
    Peer,
    PeerMetadata,
    Request,
    Sync,
    decode,
    encode,
)
from ..crdt.document import Document
from ..crdt.sync_message import SyncMessageRejected, read_sync_message
from ..errors import (
    ConnectionFailed,
    DocumentUnavailable,
    ProtocolError,
    ServerError,
    SyncTimeout,
)
from ..ids import (
    DocumentId,
    PeerId,
    generate_peer_id,
    interpret_as_document_id,
)
from ..nesting import run_blocking
from ..version import __version__

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "SSLOption",
    "fetch",
    "fetch_blocking",
]

logger = logging.getLogger("autosync_jupyter.client")

# An R server (or ours with create_on_request), and a JS 2.6 server with other
# peers connected, answer an unknown id with an empty-heads sync and never say
# doc-unavailable; JS 2.0-2.5 servers send the same empty sync *and*
# doc-unavailable within milliseconds. Only in that corner do fetch() and
# open() wait, this long after the empty answer, for data or doc-unavailable
# before they conclude the server holds nothing.
EMPTY_DOCUMENT_GRACE = 0.5
HANDSHAKE_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0
_HEX_PREVIEW = 32

#: An ``ssl.SSLContext`` to use for ``wss://``; None or True: the system's trust store.
SSLOption: TypeAlias = "ssl_module.SSLContext | bool | None"


# -- logging ----------------------------------------------------------------------


# websockets logs every request header at DEBUG, the Authorization header
# included; its records for our connections go through this filtered logger.
_ws_logger = websocket_logger("autosync_jupyter.client.websocket")

_verbose_lock = threading.Lock()
_verbose_users = 0
_verbose_handler: logging.Handler | None = None
_verbose_saved_level = logging.NOTSET


def verbose_on() -> None:
    """Make the client logger emit DEBUG records, to stderr unless logging is set up."""
    global _verbose_users, _verbose_handler, _verbose_saved_level
    with _verbose_lock:
        _verbose_users += 1
        if _verbose_users > 1:
            return
        _verbose_saved_level = logger.level
        logger.setLevel(logging.DEBUG)
        if not logger.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s autosync: %(message)s"))
            logger.addHandler(handler)
            _verbose_handler = handler


def verbose_off() -> None:
    global _verbose_users, _verbose_handler
    with _verbose_lock:
        _verbose_users -= 1
        if _verbose_users > 0:
            return
        logger.setLevel(_verbose_saved_level)
        if _verbose_handler is not None:
            logger.removeHandler(_verbose_handler)
            _verbose_handler = None


def _preview(data: bytes) -> str:
    head = data[:_HEX_PREVIEW].hex(" ")
    return head + (" ..." if len(data) > _HEX_PREVIEW else "")


def _describe_message(msg: Message, size: int) -> str:
    """One log line about a protocol message (never its secrets: it has none)."""
    if isinstance(msg, (Request, Sync)):
        try:
            parsed = read_sync_message(msg.data)
        except SyncMessageRejected:
            what = "unparsable sync data"
        else:
            changes = "with" if parsed.has_changes else "no"
            what = f"{len(parsed.heads)} head(s), {changes} changes"
        return (
            f"{msg.type} {msg.document_id}: {size} bytes, {what}; "
            f"data {len(msg.data)} bytes: {_preview(msg.data)}"
        )
    if isinstance(msg, Join):
        return f"join as {msg.sender_id} ({size} bytes)"
    if isinstance(msg, Peer):
        meta = msg.peer_metadata
        storage = meta.storage_id if meta else None
        return (
            f"peer {msg.sender_id} (protocol {msg.selected_protocol_version}, "
            f"storage id {storage}, {size} bytes)"
        )
    if isinstance(msg, DocUnavailable):
        return f"doc-unavailable {msg.document_id} ({size} bytes)"
    if isinstance(msg, Ephemeral):
        return f"ephemeral {msg.document_id} from {msg.sender_id} #{msg.count} ({size} bytes)"
    if isinstance(msg, Error):
        return f"error {msg.message!r} ({size} bytes)"
    return f"{msg.type} ({size} bytes)"


# -- the socket -------------------------------------------------------------------


def check_url(url: str, ssl: SSLOption) -> None:
    shown = redact_url(url)  # a Jupyter token may ride in the query
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ValueError(f"the server URL must start with ws:// or wss://, got {shown!r}")
    if url.startswith("ws://") and ssl not in (None, False):
        raise ValueError(f"ssl was given for a plain ws:// URL ({shown}); use wss://")


def check_token(token: str | None) -> None:
    if token is not None and (
        not isinstance(token, str) or not token or "\r" in token or "\n" in token
    ):
        raise ValueError("token must be a non-empty string without line breaks")


async def open_socket(
    url: str,
    *,
    token: str | None,
    ssl: SSLOption,
    max_message_size: int | None,
    open_timeout: float | None,
    ping_interval: float | None,
    ping_timeout: float | None,
) -> ClientConnection:
    """Open the WebSocket; every failure becomes ConnectionFailed or SyncTimeout."""
    shown = redact_url(url)  # a Jupyter token may ride in the query
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    logger.debug(
        "connecting to %s%s", shown, " (with an Authorization: Bearer header)" if token else ""
    )
    started = time.perf_counter()
    try:
        ws = await ws_connect(
            url,
            additional_headers=headers,
            # True: websockets' default context (the system's trust store).
            ssl=(ssl if isinstance(ssl, ssl_module.SSLContext) else True)
            if url.startswith("wss://")
            else None,
            max_size=max_message_size,
            compression=None,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=_CLOSE_TIMEOUT,
            user_agent_header=f"autosync-jupyter/{__version__}",
            logger=_ws_logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = ""
        if status in (401, 403):
            hint = " (authentication: check the token)" if token else " (it may need a token)"
        raise ConnectionFailed(
            f"{shown} refused the WebSocket upgrade with HTTP {status} "
            f"{exc.response.reason_phrase}{hint}"
        ) from None
    except InvalidURI as exc:
        raise ValueError(f"invalid server URL {shown!r}: {exc}") from None
    except InvalidHandshake as exc:
        raise ConnectionFailed(f"WebSocket handshake with {shown} failed: {exc}") from None
    except ssl_module.SSLCertVerificationError as exc:
        raise ConnectionFailed(
            f"TLS certificate of {shown} is not trusted ({exc.verify_message}); for a "
            "self-signed certificate pass ssl=client_ssl_context(cafile=...)"
        ) from None
    except ssl_module.SSLError as exc:
        raise ConnectionFailed(f"TLS handshake with {shown} failed: {exc.reason or exc}") from None
    except asyncio.TimeoutError:
        raise SyncTimeout(f"timed out after {open_timeout} s connecting to {shown}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionFailed(f"cannot connect to {shown}: {reason}") from None
    logger.debug("connected to %s in %.1f ms", shown, (time.perf_counter() - started) * 1000)
    return ws


def decode_message(data: bytes | str, url: str) -> Message:
    if isinstance(data, str):
        raise ProtocolError(
            f"{redact_url(url)} sent a text frame; the protocol uses binary frames only"
        )
    try:
        msg = decode(data)
    except ProtocolError as exc:
        raise ProtocolError(f"{redact_url(url)} sent an invalid message: {exc}") from None
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("<- %s", _describe_message(msg, len(data)))
    return msg


def encode_message(msg: Message) -> bytes:
    data = encode(msg)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("-> %s", _describe_message(msg, len(data)))
    return data


async def handshake(ws: ClientConnection, peer_id: PeerId, url: str) -> Peer:
    """Send ``join``, return the server's ``peer`` (protocol §2.7)."""
    shown = redact_url(url)  # a Jupyter token may ride in the query
    try:
        await ws.send(encode_message(Join(peer_id, peer_metadata=PeerMetadata(is_ephemeral=True))))
        data = await ws.recv()
    except ConnectionClosed as exc:
        # A server that refuses the peer outright (failed authentication)
        # may close before our join is even sent; its close reason is the
        # same text as its in-band error.
        if exc.rcvd is not None and exc.rcvd.code == CloseCode.POLICY_VIOLATION and exc.rcvd.reason:
            raise ServerError(exc.rcvd.reason, shown) from None
        raise ConnectionFailed(
            f"{shown} closed the connection before answering join ({describe_close(exc)})"
        ) from None
    msg = decode_message(data, url)
    if isinstance(msg, Error):
        raise ServerError(msg.message, shown)
    if not isinstance(msg, Peer):
        raise ProtocolError(f"{shown} answered join with {msg.type!r}; expected a 'peer' message")
    if msg.selected_protocol_version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{shown} selected protocol version {msg.selected_protocol_version!r}; "
            "this client speaks version '1'"
        )
    return msg


def describe_close(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "no close frame: the connection dropped"
    return f"code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


async def close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


# -- fetch -----------------------------------------------------------------------------


class _Fetch:
    """One fetch: the steps in order, and which one is being waited for."""

    def __init__(
        self,
        url: str,
        doc_id: DocumentId,
        *,
        token: str | None,
        ssl: SSLOption,
        max_message_size: int | None,
        allow_empty: bool,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)  # for messages: a Jupyter token may ride in the query
        self.doc_id = doc_id
        self.allow_empty = allow_empty
        self.token = token
        self.ssl = ssl
        self.max_message_size = max_message_size
        self.waiting_for = f"a connection to {self.shown}"
        self.peer_id = generate_peer_id()

    async def run(self) -> Document:
        started = time.perf_counter()
        ws = await open_socket(
            self.url,
            token=self.token,
            ssl=self.ssl,
            max_message_size=self.max_message_size,
            open_timeout=None,  # the whole fetch is bounded by its timeout
            ping_interval=20.0,
            ping_timeout=20.0,
        )
        try:
            document = await self._sync(ws)
        except BaseException:
            # On failure do not wait for a close handshake with a server
            # that may be the problem.
            ws.transport.abort()
            raise
        await close_quietly(ws)
        logger.debug(
            "fetched %s in %.1f ms (%d head(s))",
            self.doc_id,
            (time.perf_counter() - started) * 1000,
            len(document.core.get_heads()),
        )
        return document

    async def _sync(self, ws: ClientConnection) -> Document:
        self.waiting_for = f"the server's answer to join from {self.shown}"
        peer = await handshake(ws, self.peer_id, self.url)
        core = am.Document()
        engine = ClientPeer(self.peer_id)
        engine.open(self.doc_id, core)
        for opening in engine.connected(peer.sender_id).send:
            await ws.send(encode_message(opening))
        self.waiting_for = f"the server's reply to the request for {self.doc_id}"
        loop = asyncio.get_running_loop()
        empty_since: float | None = None  # when the server answered with nothing
        while True:
            try:
                if empty_since is None:
                    data = await ws.recv()
                else:
                    left = empty_since + EMPTY_DOCUMENT_GRACE - loop.time()
                    if left <= 0:
                        raise asyncio.TimeoutError
                    data = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                return self._answered_empty(core)
            except ConnectionClosed as exc:
                raise ConnectionFailed(
                    f"{self.shown} closed the connection while fetching {self.doc_id} "
                    f"({describe_close(exc)})"
                ) from None
            fx = engine.receive(decode_message(data, self.url))
            if fx.server_errors:
                raise ServerError(fx.server_errors[0], self.shown)
            if engine.state(self.doc_id) == "unavailable":
                raise DocumentUnavailable(self.doc_id, unavailable_message(self.doc_id, self.shown))
            if fx.rejected:
                raise ProtocolError(fx.rejected[0])
            for reply in fx.send:
                await ws.send(encode_message(reply))
            if self.doc_id not in fx.applied:
                continue  # ephemeral, gossip, other documents: not ours to handle
            if engine.in_sync(self.doc_id):
                # The server advertised heads we all hold, and we have no
                # changes it lacks (we made none): the sync is complete.
                return Document(core=core)
            if engine.answered_empty(self.doc_id):
                if empty_since is None:
                    empty_since = loop.time()
                    self.waiting_for = (
                        f"more than the empty answer for {self.doc_id} from {self.shown}"
                    )
            else:
                empty_since = None
                have = len(core.get_heads())
                self.waiting_for = (
                    f"the rest of document {self.doc_id} "
                    f"(the server advertised {len(engine.server_heads(self.doc_id) or [])} "
                    f"head(s); {have} head(s) here)"
                )

    def _answered_empty(self, core: am.Document) -> Document:
        """The server answered with an empty document and nothing followed."""
        if not self.allow_empty:
            raise DocumentUnavailable(self.doc_id, empty_answer_message(self.doc_id, self.shown))
        logger.debug(
            "%s answered %s with an empty document: returning it (allow_empty)",
            self.shown,
            self.doc_id,
        )
        return Document(core=core)


def unavailable_message(doc_id: DocumentId, shown_url: str) -> str:
    """The DocumentUnavailable text for a server that said doc-unavailable."""
    return (
        f"document {doc_id} is unavailable on {shown_url}: the server does not have it "
        "(or may not share it)"
    )


def empty_answer_message(doc_id: DocumentId, shown_url: str) -> str:
    """The DocumentUnavailable text for a server that answered with an empty document."""
    return (
        f"document {doc_id} is unavailable on {shown_url}: the server answered with an "
        "empty document (it holds no changes for this id); allow_empty=True (--allow-empty "
        "on the command line) accepts it, e.g. from a server that creates documents on request"
    )


async def fetch(
    url: str,
    doc_id: str,
    *,
    token: str | None = None,
    ssl: SSLOption = None,
    timeout: float = 30.0,
    verbose: bool = False,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    allow_empty: bool = False,
) -> Document:
    """Fetch one document from a sync server over a throwaway connection.

    Returns as soon as the sync is complete (the server advertised heads this
    client holds, and nothing is left to send), not after a quiet period.

    Args:
        url: ``ws://`` or ``wss://`` URL of the server (any path is sent as is).
        doc_id: a document id, an ``automerge:`` URL or a legacy UUID string.
        token: sent as ``Authorization: Bearer <token>`` on the upgrade; never logged.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (e.g.
            ``client_ssl_context(cafile=...)`` to trust a self-signed
            certificate); None or True use the system's trust store.
        timeout: seconds for the whole fetch (connect, handshake, sync).
        verbose: log every step and the bytes exchanged through the
            ``autosync_jupyter.client`` logger (to stderr if logging is not
            configured).
        max_message_size: largest incoming message in bytes (None: no limit).
        allow_empty: return an empty document when the server answers with
            one (it holds no changes for the id) instead of raising
            DocumentUnavailable. For servers that create documents on
            request (R's ``autosync``, ``autosync serve --create-on-request``),
            where an empty document is a document.

    Returns:
        The document (an :class:`~autosync_jupyter.Document`).

    Raises:
        DocumentUnavailable: the server answered that it does not have it, or
            answered with an empty document (unless ``allow_empty``).
        ServerError: the server sent an ``error`` (e.g. authentication failed).
        ConnectionFailed: the server cannot be reached, refused the upgrade,
            failed TLS, or dropped the connection.
        ProtocolError: the server sent something that breaks the protocol.
        SyncTimeout: the fetch took longer than ``timeout`` (says what it waited for).
        InvalidDocumentId: ``doc_id`` is not a document id or URL.
    """
    document_id = interpret_as_document_id(doc_id)
    check_url(url, ssl)
    check_token(token)
    job = _Fetch(
        url,
        document_id,
        token=token,
        ssl=ssl,
        max_message_size=max_message_size,
        allow_empty=allow_empty,
    )
    if verbose:
        verbose_on()
    try:
        return await asyncio.wait_for(job.run(), timeout)
    except SyncTimeout:
        raise
    except asyncio.TimeoutError:
        raise SyncTimeout(
            f"fetch of {document_id} timed out after {timeout} s waiting for {job.waiting_for}"
        ) from None
    finally:
        if verbose:
            verbose_off()


def fetch_blocking(
    url: str,
    doc_id: str,
    *,
    token: str | None = None,
    ssl: SSLOption = None,
    timeout: float = 30.0,
    verbose: bool = False,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    allow_empty: bool = False,
) -> Document:
    """Blocking :func:`fetch` for scripts: same arguments, same result and errors.

    In a notebook cell it keeps the kernel's loop running while it waits
    (see :mod:`autosync_jupyter.nesting`), so it may fetch from a server
    running in this very kernel.

    Raises:
        RuntimeError: called from async code outside a notebook cell:
            ``await fetch(...)`` there instead.
    """
    return run_blocking(
        fetch(
            url,
            doc_id,
            token=token,
            ssl=ssl,
            timeout=timeout,
            verbose=verbose,
            max_message_size=max_message_size,
            allow_empty=allow_empty,
        ),
        name="fetch_blocking",
        alternative="await fetch(...)",
    )
