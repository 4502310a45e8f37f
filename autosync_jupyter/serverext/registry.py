"""The kernel-hosted sync servers that announced themselves to the server extension.

A kernel running ``%autosync serve`` under this Jupyter server PUTs its URL
and its documents to ``autosync/api/servers/<id>`` (again when they change,
and every 20 s as a heartbeat) and DELETEs the entry when it stops; the
JupyterLab panel lists them next to the hub's own documents. An entry not
refreshed for :data:`EXPIRY` seconds (a kernel that died) is dropped.

Only kernels of this Jupyter server may announce: the extension puts a
secret in its own environment at start-up (:data:`SECRET_VARIABLE`), which
the kernels it starts inherit and send with every announcement (a signed-in
browser user, who may not run code, does not have it). The URL must be what
a kernel's server listens on, ``ws://127.0.0.1:PORT`` or
``ws://[::1]:PORT`` with at most a plain path: the relay connects to it, so
anything else would let an announcement aim the relay at other services.
Everything is validated and bounded: an entry is data from a client, shown
in pages; the list holds at most :data:`MAX_SERVERS` entries of at most
:data:`MAX_ANNOUNCEMENT` bytes each.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

from ..jupyter.discovery import MAX_ANNOUNCEMENT, MAX_DOCUMENTS, SECRET_HEADER, SECRET_VARIABLE

__all__ = [
    "EXPIRY",
    "MAX_ANNOUNCEMENT",
    "MAX_DOCUMENTS",
    "MAX_SERVERS",
    "SECRET_HEADER",
    "SECRET_VARIABLE",
    "KernelServer",
    "KernelServerRegistry",
    "kernel_server_url",
    "parse_announcement",
]

#: Seconds after which an entry that was not refreshed disappears.
EXPIRY: Final = 60.0
#: Most announced servers listed at once.
MAX_SERVERS: Final = 100
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KERNEL_URL = re.compile(r"ws://(127\.0\.0\.1|\[::1\]):([0-9]{1,5})(/[A-Za-z0-9._~/-]{0,200})?")
_DOC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "url": str,
    "size": (int, type(None)),
    "peers": int,
}


@dataclass
class KernelServer:
    """One announced server."""

    server_id: str
    url: str
    name: str
    documents: list[dict[str, Any]]
    document_count: int = 0
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET autosync/api/servers`` lists it."""
        return {
            "id": self.server_id,
            "url": self.url,
            "name": self.name,
            "documents": self.documents,
            "document_count": max(self.document_count, len(self.documents)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.updated)),
        }


def kernel_server_url(url: object) -> str | None:
    """``url`` if it is where a kernel's server listens, else None.

    >>> kernel_server_url("ws://127.0.0.1:8765"), kernel_server_url("ws://[::1]:1/sync")
    ('ws://127.0.0.1:8765', 'ws://[::1]:1/sync')
    >>> kernel_server_url("ws://127.0.0.1:22/x?y=1"), kernel_server_url("ws://10.0.0.5:8765")
    (None, None)
    """
    if not isinstance(url, str):
        return None
    match = _KERNEL_URL.fullmatch(url)
    if match is None or not 0 < int(match.group(2)) < 65536:
        return None
    if {".", ".."} & set((match.group(3) or "").split("/")):
        return None  # a path that a proxy on the way might normalise elsewhere
    return url


def valid_server_id(text: str) -> bool:
    """Whether ``text`` may name an entry (letters, digits, ``-`` and ``_``)."""
    return _SERVER_ID.fullmatch(text) is not None


def parse_announcement(server_id: str, body: Any) -> KernelServer:
    """Check a PUT body ``{"url", "name", "documents": [...]}``; ValueError says what is wrong."""
    if not valid_server_id(server_id):
        raise ValueError("the server id must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    url, name, documents = body.get("url"), body.get("name", ""), body.get("documents", [])
    count = body.get("document_count", len(documents) if isinstance(documents, list) else 0)
    if kernel_server_url(url) is None:
        raise ValueError(
            "url must be where a kernel's server listens: ws://127.0.0.1:PORT or "
            "ws://[::1]:PORT, with at most a plain path (no query)"
        )
    assert isinstance(url, str)
    if not isinstance(name, str) or len(name) > 200:
        raise ValueError("name must be a string of at most 200 characters")
    if not isinstance(documents, list) or len(documents) > MAX_DOCUMENTS:
        raise ValueError(f"documents must be a list of at most {MAX_DOCUMENTS} entries")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("document_count must be a non-negative integer")
    clean = []
    for entry in documents:
        if not isinstance(entry, dict):
            raise ValueError("each document must be an object")
        for key, kind in _DOC_FIELDS.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise ValueError(f"document field {key!r} is missing or has the wrong type")
        heads = entry.get("heads", [])
        last = entry.get("last_change")
        if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
            raise ValueError("document field 'heads' must be a list of strings")
        if last is not None and not isinstance(last, str):
            raise ValueError("document field 'last_change' must be a string or null")
        title = entry.get("title")
        if title is not None and not isinstance(title, str):
            raise ValueError("document field 'title' must be a string or null")
        clean.append(
            {
                "id": entry["id"][:100],
                "url": entry["url"][:200],
                "size": entry["size"],
                "peers": entry["peers"],
                "heads": [h[:64] for h in heads[:64]],
                "last_change": last[:64] if last else None,
                "title": title[:200] if title else None,
            }
        )
    return KernelServer(server_id, url, name, clean, count)


class KernelServerRegistry:
    """The announced servers, newest first, without the expired ones."""

    def __init__(self) -> None:
        self._servers: dict[str, KernelServer] = {}

    def put(self, entry: KernelServer) -> None:
        """Add or refresh an entry.

        Raises:
            ValueError: too many servers are announced already.
        """
        self._expire()
        if entry.server_id not in self._servers and len(self._servers) >= MAX_SERVERS:
            raise ValueError(f"at most {MAX_SERVERS} kernel servers can be announced")
        self._servers[entry.server_id] = entry

    def remove(self, server_id: str) -> bool:
        """Forget an entry; whether it was there."""
        return self._servers.pop(server_id, None) is not None

    def entries(self) -> list[KernelServer]:
        """The live entries, most recently refreshed first."""
        self._expire()
        return sorted(self._servers.values(), key=lambda e: e.updated, reverse=True)

    def _expire(self) -> None:
        horizon = time.time() - EXPIRY
        for server_id in [k for k, e in self._servers.items() if e.updated < horizon]:
            del self._servers[server_id]
