"""Share a notebook document with the JupyterLab front end (``autosync.share(doc)``).

The Jupyter server extension runs a sync hub at ``{base_url}autosync/ws`` on
the Jupyter server's own port; the "Automerge" panel of JupyterLab lists its
documents and opens them live in the browser. :func:`share` uploads a
kernel document to that hub and keeps it in sync: edits made in the browser
show up in the kernel's variable, edits made in the kernel show up in the
browser.

The kernel finds its Jupyter server through the server's runtime file
(``jpserver-<pid>.json``): the server that started the kernel is its parent
process. ``$AUTOSYNC_JUPYTER_URL`` (the server's ``http(s)://host:port/base/``
URL) and ``$AUTOSYNC_JUPYTER_TOKEN`` name another one, as do the
``url``/``token`` arguments of :func:`share`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..crdt.document import Document
from ..errors import AutosyncError
from ..runtime.connection import DocHandle
from .discovery import jupyter_server
from .session import current_session

__all__ = ["jupyter_server", "jupyter_sync_url", "share"]

_ENDPOINT = "autosync/ws"


def jupyter_sync_url() -> tuple[str, str | None]:
    """The ``ws://`` URL of this kernel's Jupyter server's sync hub, and its token.

    Raises:
        AutosyncError: no Jupyter server started this kernel (a kernel run by
            nbclient or a console) and ``$AUTOSYNC_JUPYTER_URL`` is unset.
    """
    found = jupyter_server()
    if found is None:
        raise AutosyncError(
            "this kernel was not started by a Jupyter server (no jpserver runtime file "
            "names its parent process): pass url=... (ws://host:port/base/autosync/ws) "
            "and token=..., or set $AUTOSYNC_JUPYTER_URL"
        )
    return _sync_url(found[0]), found[1]


def _sync_url(server_url: str) -> str:
    if server_url.startswith(("ws://", "wss://")):
        return server_url
    if not server_url.startswith(("http://", "https://")):
        raise AutosyncError(f"not a Jupyter server URL: {server_url!r}")
    base = "ws" + server_url[len("http") :]
    return base if base.rstrip("/").endswith(_ENDPOINT) else base.rstrip("/") + "/" + _ENDPOINT


def share(
    doc: Document | DocHandle | Mapping[str, Any],
    *,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> DocHandle:
    """Publish a notebook document to JupyterLab and keep both sides in sync.

    ``doc`` may be a :class:`~autosync_jupyter.Document` (it becomes
    live: the same object receives the browser's edits), a live
    :class:`~autosync_jupyter.DocHandle` from another server (its
    document is relayed, under the same id, between that server and the
    browser), or a mapping (a new document with that content). Returns the
    live handle on the Jupyter server's hub; its ``url`` (``automerge:...``)
    is what the Automerge panel lists. Call it in a notebook cell; it waits
    until the hub holds the document.

    Args:
        url: the hub's ``ws://.../autosync/ws`` URL (default: this kernel's
            Jupyter server, see :func:`jupyter_sync_url`).
        token: the Jupyter server's token (default: found with the URL).
        timeout: seconds to wait for the hub.

    Raises:
        AutosyncError: not in a kernel's main thread, or no Jupyter server.
        TypeError: ``doc`` is of another type (a blocking handle lives in
            another thread: share its ``doc`` from async code instead).
    """
    session = current_session()
    assert session is not None
    session.require_kernel("share()")
    if url is None:
        url, found_token = jupyter_sync_url()
        token = token if token is not None else found_token
    else:
        url = _sync_url(url)
    if isinstance(doc, DocHandle):
        document, doc_id = doc.doc, doc.document_id
    elif isinstance(doc, Document):
        document, doc_id = doc, None
    elif isinstance(doc, Mapping):
        document, doc_id = Document(dict(doc)), None
    else:
        raise TypeError(
            f"share() takes a Document, a DocHandle or a mapping, not {type(doc).__name__}"
        )
    hub_url = url

    async def publish() -> DocHandle:
        conn = await session.connection(hub_url, token=token)
        for handle in conn.handles.values():
            if handle.doc is document:  # shared already: the same live handle
                return handle
        return await conn.create(document, doc_id=doc_id, timeout=timeout)

    return session.run(publish(), "share()")
