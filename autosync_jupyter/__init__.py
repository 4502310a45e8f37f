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
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    AutosyncError,
    DocumentUnavailable,
    InvalidDocumentId,
    ProtocolError,
    StorageError,
)
from .hub import Hub, PeerInfo, SharePolicy
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
from .server import BackgroundSyncServer, SyncServer
from .storage import FileStore, MemoryStore, Store
from .tls import client_ssl_context, make_self_signed_certificate, server_ssl_context
from .values import to_py

__all__ = [
    "AutosyncError",
    "BackgroundSyncServer",
    "DocumentId",
    "DocumentUnavailable",
    "FileStore",
    "Hub",
    "InvalidDocumentId",
    "MemoryStore",
    "PeerId",
    "PeerInfo",
    "ProtocolError",
    "SharePolicy",
    "StorageError",
    "Store",
    "SyncServer",
    "__version__",
    "client_ssl_context",
    "document_url",
    "generate_document_id",
    "interpret_as_document_id",
    "is_valid_document_id",
    "make_self_signed_certificate",
    "parse_automerge_url",
    "server_ssl_context",
    "to_py",
    "validate_document_id",
]
