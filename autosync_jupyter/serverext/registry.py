"""The kernel-hosted sync servers that announced themselves to the server extension.

A kernel running ``%autosync serve`` under this Jupyter server PUTs its URL
and its documents to ``autosync/api/servers/<id>`` (again when they change,
and every 20 s as a heartbeat) and DELETEs the entry when it stops; the
JupyterLab panel lists them next to the hub's own documents. An entry not
refreshed for :data:`EXPIRY` seconds (a kernel that died) is dropped.
Everything is validated: an entry is data from a client, shown in pages.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["EXPIRY", "KernelServer", "KernelServerRegistry", "parse_announcement"]

#: Seconds after which an entry that was not refreshed disappears.
EXPIRY: Final = 60.0
_MAX_SERVERS: Final = 100
_MAX_DOCUMENTS: Final = 10_000
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_URL = re.compile(r"wss?://[^\s\"'<>]{1,2000}")
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
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET autosync/api/servers`` lists it."""
        return {
            "id": self.server_id,
            "url": self.url,
            "name": self.name,
            "documents": self.documents,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.updated)),
        }


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
    if not isinstance(url, str) or _URL.fullmatch(url) is None:
        raise ValueError("url must be a ws:// or wss:// URL")
    if not isinstance(name, str) or len(name) > 200:
        raise ValueError("name must be a string of at most 200 characters")
    if not isinstance(documents, list) or len(documents) > _MAX_DOCUMENTS:
        raise ValueError(f"documents must be a list of at most {_MAX_DOCUMENTS} entries")
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
        clean.append(
            {
                "id": entry["id"][:100],
                "url": entry["url"][:200],
                "size": entry["size"],
                "peers": entry["peers"],
                "heads": [h[:64] for h in heads[:64]],
                "last_change": last[:64] if last else None,
            }
        )
    return KernelServer(server_id, url, name, clean)


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
        if entry.server_id not in self._servers and len(self._servers) >= _MAX_SERVERS:
            raise ValueError(f"at most {_MAX_SERVERS} kernel servers can be announced")
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
