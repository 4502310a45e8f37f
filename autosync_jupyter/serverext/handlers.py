"""The tornado handlers of the server extension, mounted under ``{base_url}autosync/``.

=====================================  =======  ==========================================
route                                  method   answer
=====================================  =======  ==========================================
``autosync/ws``                        GET      WebSocket upgrade: the automerge-repo sync
                                                protocol (binary frames only)
``autosync/relay?server=<url>``        GET      WebSocket upgrade relayed to the announced
                                                kernel server at ``<url>`` (on this
                                                machine only; see ``relay.py``)
``autosync/api/documents``             GET      ``{"documents": [{"id", "url", "size",
                                                "heads", "peers", "loaded",
                                                "last_change", "title",
                                                "error"}]}``
``autosync/api/documents``             POST     body ``{"content": {...}}`` (optional) →
                                                201 ``{"id", "url"}``
``autosync/api/documents/<id>``        GET      ``{"id", "url", "heads", "content"}``;
                                                ``<id>`` may be a percent-encoded
                                                ``automerge:`` URL, with heads
                                                (``#h1|h2``) for an old version
``autosync/api/servers``              GET      ``{"servers": [{"id", "url", "name",
                                                "documents", "updated"}]}``: servers of
                                                kernels (``%autosync serve``)
``autosync/api/servers/<id>``          PUT      a kernel announces its server (body
                                                ``{"url", "name", "documents",
                                                "document_count"}``, at most 16 KiB,
                                                with the kernels' secret header)
``autosync/api/servers/<id>``          DELETE   … and withdraws it
``autosync/oidc/callback``             GET      the OIDC redirect page (no login needed)
=====================================  =======  ==========================================

Every route but the callback page needs a signed-in Jupyter user: the login
cookie (pages of the Jupyter front end) or the server's token, as
``Authorization: token <token>`` or ``?token=<token>`` (the only channel a
WebSocket client in a browser has). Without one the answer is 403, before any
WebSocket upgrade. Authorization asks Jupyter's authorizer about the resource
``"autosync"``: ``read`` for the ``GET`` routes, ``write`` for creating a
document and for the WebSocket (a sync peer can change documents). A POST
authenticated by the cookie alone needs Jupyter's ``_xsrf`` token, as every
Jupyter API does; the WebSocket keeps Jupyter's Origin check (a page from
another origin is refused unless ``ServerApp.allow_origin`` allows it).

Errors are JSON ``{"message": ..., "reason": ...}`` and never carry a
stack trace. When these handlers refuse a request they log its URL with
``token=`` redacted (Jupyter's access log scrubs it too; only a proxy or a
server in front may still see it, so prefer the header or the cookie).

Content is JSON as :func:`autosync_jupyter.crdt.json_tree.document_tree` makes
it: bytes, dates, counters and integers beyond 2**53 are one-key marker
objects (``{"$bytes": base64}``, ``{"$date": iso}``, ``{"$counter": n}``,
``{"$int": "digits"}``); heads are hex change hashes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from typing import Any, Final

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from websockets.frames import CloseCode

from ..auth.redact import redact_url
from ..errors import DocumentUnreadable, InvalidDocumentId
from ..ids import document_url, encode_heads, interpret_as_document_id, parse_automerge_url
from ..runtime.sync_runtime import DocumentSummary, SyncRuntime
from .base import (
    AUTH_RESOURCE,
    NOT_RUNNING,
    AuthorizedWebSocketHandler,
    AutosyncAPIHandler,
    ExtensionServices,
    RedactedLogs,
)
from .peer import TornadoPeer
from .registry import MAX_ANNOUNCEMENT, SECRET_HEADER, parse_announcement

__all__ = [
    "DocumentHandler",
    "DocumentsHandler",
    "NotFoundHandler",
    "OIDCCallbackHandler",
    "ServerHandler",
    "ServersHandler",
    "SyncWebSocketHandler",
]

logger = logging.getLogger("autosync_jupyter.serverext.handlers")


def _identity(user: Any) -> dict[str, Any]:
    """What share policies see as ``peer.identity`` for a Jupyter user."""
    name = getattr(user, "name", "") or getattr(user, "display_name", "")
    return {"sub": str(getattr(user, "username", user)), "name": str(name)}


# -- the WebSocket -------------------------------------------------------------------


class SyncWebSocketHandler(AuthorizedWebSocketHandler):
    """``autosync/ws``: an automerge-repo sync connection behind Jupyter's authentication.

    Refused as :class:`AuthorizedWebSocketHandler` says, and with 503 if the
    hub could not start. A text frame closes the connection with 1003. The
    Jupyter user reaches share policies as
    ``peer.identity = {"sub": username, "name": name}``.
    """

    def initialize(self, extension: ExtensionServices) -> None:
        super().initialize(extension)
        self._server: SyncRuntime | None = None
        self._peer: TornadoPeer | None = None
        self._serving: asyncio.Task[None] | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authenticate and authorize, then upgrade to a WebSocket."""
        await self.authorize()
        try:
            self._server = await self.extension.ready()
        except Exception:
            raise web.HTTPError(503, NOT_RUNNING) from None
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Hand the new connection to the hub."""
        super().open(*args, **kwargs)  # WebSocketMixin starts its keep-alive pings
        assert self._server is not None
        peer = TornadoPeer(self, self.request.remote_ip or "unknown")
        self._peer = peer
        identity = _identity(self.current_user)
        self._serving = asyncio.ensure_future(self._serve(self._server, peer, identity))

    async def _serve(
        self, server: SyncRuntime, peer: TornadoPeer, identity: dict[str, Any]
    ) -> None:
        try:
            await server.serve_peer(peer, identity=identity)
        except Exception:
            logger.exception("autosync connection from %s failed", peer.remote_address)
        finally:
            if not peer.closed:
                # The hub is done with this peer (it closed it, or failed):
                # make sure the socket does not linger.
                self.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def on_message(self, message: str | bytes) -> None:
        # Awaited by tornado before it reads the next frame: backpressure.
        if self._peer is not None:
            await self._peer.feed(message)

    def on_close(self) -> None:
        if self._peer is not None:
            self._peer.feed_closed()

    def on_pong(self, data: bytes) -> None:
        super().on_pong(data)  # type: ignore[no-untyped-call]  # Jupyter keep-alive
        if self._peer is not None:
            self._peer.feed_pong()


# -- the REST API ----------------------------------------------------------------------


def _summary_json(summary: DocumentSummary) -> dict[str, Any]:
    last = summary.last_change
    return {
        "id": summary.document_id,
        "url": document_url(summary.document_id),
        "size": summary.size,
        "heads": list(summary.heads),
        "peers": summary.peers,
        "loaded": summary.loaded,
        "last_change": last.isoformat() if last is not None else None,
        "error": summary.error,
        "title": summary.title,
    }


class DocumentsHandler(AutosyncAPIHandler):
    """``autosync/api/documents``: list (GET) and create (POST) documents."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """List every document the hub holds, sorted by id.

        ``size``, ``heads`` (bs58check, as in ``automerge:`` URLs) and
        ``title`` (its ``title`` or ``name`` field, if a string) are known
        once a document is loaded (a peer or a read asked for it since the
        server started; ``loaded`` says which); ``last_change`` is when
        this server last saw it change (ISO 8601, UTC) or null; ``error``
        says why a document cannot be read (the others are listed all the
        same), else null.
        """
        server = await self.hub_server()
        self.reply({"documents": [_summary_json(s) for s in server.document_summaries()]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Create a document from ``{"content": {...}}`` (an empty body makes an empty one).

        Answers 201 ``{"id", "url"}`` once the document is on disk.
        """
        server = await self.hub_server()
        limit = int(self.extension.max_message_size)
        if len(self.request.body) > limit:
            raise web.HTTPError(413, f"the request body is larger than {limit} bytes")
        content = _parse_create_body(self.request.body)
        try:
            doc_id = await server.create_document(content)
        except (TypeError, ValueError) as exc:
            raise web.HTTPError(400, f"cannot store this content: {exc}") from None
        logger.info("created document %s through the REST API", doc_id)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + doc_id)
        self.reply({"id": doc_id, "url": document_url(doc_id)}, status=201)


def _parse_create_body(body: bytes) -> dict[str, Any] | None:
    """The ``content`` of a create request, or HTTP 400 saying what is wrong."""
    if not body.strip():
        return None
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise web.HTTPError(
            400,
            f'the request body must be a JSON object like {{"content": {{...}}}}, '
            f"not {type(request).__name__}",
        )
    unknown = sorted(set(request) - {"content"})
    if unknown:
        raise web.HTTPError(400, f"unknown fields {unknown}: only 'content' is accepted")
    content = request.get("content")
    if content is not None and not isinstance(content, dict):
        raise web.HTTPError(
            400,
            f"'content' must be a JSON object (a document's root is a map), "
            f"not {type(content).__name__}",
        )
    return content


class DocumentHandler(AutosyncAPIHandler):
    """``autosync/api/documents/<id>``: read one document as JSON."""

    @web.authenticated
    @authorized
    async def get(self, raw_id: str) -> None:
        """Answer ``{"id", "url", "heads", "content"}``; 400 for a bad id, 404 if unknown.

        503 with the reason for a document this server holds but cannot read
        (its stored files are damaged or unreadable).

        An ``automerge:`` URL pinned at heads (``automerge:<id>#<head>|<head>``,
        percent-encoded) reads the document as it was at that version; heads
        it does not have are a 404.
        """
        from ..crdt.json_tree import document_tree

        try:
            if raw_id.startswith("automerge:"):
                doc_id, heads = parse_automerge_url(raw_id)
            else:
                doc_id, heads = interpret_as_document_id(raw_id), None
        except InvalidDocumentId as exc:
            raise web.HTTPError(400, str(exc)) from None
        server = await self.hub_server()
        try:
            doc = await server.get_document(doc_id)
        except DocumentUnreadable as exc:
            raise web.HTTPError(503, str(exc)) from None
        except KeyError:
            raise web.HTTPError(404, f"no document {doc_id} on this server") from None
        if heads:
            try:
                doc = doc.fork(heads)
            except KeyError as exc:
                raise web.HTTPError(404, f"document {doc_id}: {exc.args[0]}") from None
        self.reply(
            {
                "id": doc_id,
                "url": document_url(doc_id, heads or None),
                "heads": sorted(encode_heads(doc.heads)),
                "content": document_tree(doc),
            }
        )


class ServersHandler(AutosyncAPIHandler):
    """``autosync/api/servers``: the kernel-hosted servers that announced themselves."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Answer ``{"servers": [{"id", "url", "name", "documents", "updated"}]}``."""
        entries = self.extension.kernel_servers.entries()
        self.reply({"servers": [entry.to_json() for entry in entries]})


class ServerHandler(AutosyncAPIHandler):
    """``autosync/api/servers/<id>``: a kernel announces (PUT) or withdraws (DELETE) its server."""

    @web.authenticated
    @authorized
    async def put(self, server_id: str) -> None:
        """Store ``{"url", "name", "documents": [...]}``; 400 with the reason if invalid.

        403 unless the request carries the secret this server's kernels have.
        """
        self._check_kernel()
        if len(self.request.body) > MAX_ANNOUNCEMENT:
            raise web.HTTPError(413, f"an announcement is at most {MAX_ANNOUNCEMENT} bytes")
        try:
            entry = parse_announcement(server_id, json.loads(self.request.body or b"null"))
            self.extension.kernel_servers.put(entry)
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.reply({"id": server_id})

    @web.authenticated
    @authorized
    async def delete(self, server_id: str) -> None:
        """Forget the entry (204), or 404 if there is none; 403 as for PUT."""
        self._check_kernel()
        if not self.extension.kernel_servers.remove(server_id):
            raise web.HTTPError(404, f"no kernel server {server_id!r} is announced")
        self.set_status(204)
        self.finish()

    def _check_kernel(self) -> None:
        sent = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.extension.kernel_secret.encode()):
            logger.warning(
                "refused an announcement without the kernels' secret: %s",
                redact_url(self.request.uri),
            )
            raise web.HTTPError(403, "only kernels of this Jupyter server announce servers")


class NotFoundHandler(RedactedLogs, APIHandler):
    """Any other path under ``autosync/``: a JSON 404 for signed-in users."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    def get(self, *args: Any) -> None:
        raise web.HTTPError(404, "no such autosync route")

    post = put = patch = delete = get


# -- the OIDC callback page ------------------------------------------------------------

# The page knows nothing a visitor could not: it forwards its own query string
# to the window that opened it and closes. Static, so its script has a fixed hash.
_CALLBACK_SCRIPT: Final = """
(function () {
  var params = new URLSearchParams(window.location.search);
  var message = {
    type: "autosync-oidc",
    code: params.get("code"),
    state: params.get("state"),
    error: params.get("error")
  };
  // The code must not stay in the address bar or the history.
  window.history.replaceState(null, "", window.location.pathname);
  if (window.opener && !window.opener.closed) {
    window.opener.postMessage(message, window.location.origin);
    window.close();
  }
  document.getElementById("status").textContent = message.error
    ? "Sign-in did not complete; you can close this window."
    : "Sign-in finished; you can close this window.";
})();
"""

_CALLBACK_SCRIPT_HASH: Final = base64.b64encode(
    hashlib.sha256(_CALLBACK_SCRIPT.encode("utf-8")).digest()
).decode("ascii")

_CALLBACK_PAGE: Final = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>Sign-in</title>
</head>
<body>
<p id="status">Finishing sign-in&hellip;</p>
<script>{_CALLBACK_SCRIPT}</script>
</body>
</html>
"""

#: Only the page's own script runs; nothing loads, nothing frames it.
CALLBACK_CSP: Final = "; ".join(
    [
        "default-src 'none'",
        f"script-src 'sha256-{_CALLBACK_SCRIPT_HASH}'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


class OIDCCallbackHandler(JupyterHandler):
    """``autosync/oidc/callback``: where an OIDC provider sends the sign-in popup back.

    For sign-ins where the browser is not on the kernel's machine (JupyterHub,
    remote servers), register ``<jupyter url>{base_url}autosync/oidc/callback``
    as the redirect URI. The provider's redirect carries no Jupyter token, so
    the page loads without one; it is static and shows nothing it was given:
    its script posts ``{type: "autosync-oidc", code, state, error}`` to the
    window that opened it (same origin only), removes the query from the
    address bar and closes. Opened without an opener it only says that
    sign-in finished. The answer is never cached, sends no Referer, and a
    strict Content-Security-Policy allows only its own script.
    """

    @property
    def content_security_policy(self) -> str:
        return CALLBACK_CSP

    def compute_etag(self) -> str | None:
        return None  # never cached, so nothing to revalidate

    @allow_unauthenticated
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.finish(_CALLBACK_PAGE)
