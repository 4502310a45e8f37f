"""A store that keeps everything in memory: for tests and ephemeral servers.

>>> store = MemoryStore()
>>> store.durable
False
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from ..crdt.chunks import check_chunks
from ..errors import StorageError
from ..ids import DocumentId
from .base import COMPACTION_FLOOR, Store, check_id

__all__ = ["MemoryStore"]


@dataclasses.dataclass
class _MemoryDocument:
    snapshot: bytes = b""
    changes: list[bytes] = dataclasses.field(default_factory=list)
    change_bytes: int = 0


class MemoryStore(Store):
    """A store that keeps everything in memory: for tests and ephemeral servers.

    It behaves like :class:`~.files.FileStore` in every respect except that nothing
    survives the process; its storage id is new for every instance.
    """

    def __init__(self, *, compaction_floor: int = COMPACTION_FLOOR) -> None:
        self._storage_id = str(uuid.uuid4())
        self._documents: dict[DocumentId, _MemoryDocument] = {}
        self._floor = compaction_floor
        self._state = "new"

    def _require_open(self) -> None:
        # The same rules as FileStore, so that code tested against a
        # MemoryStore does not break on a FileStore.
        if self._state == "new":
            raise StorageError("open() the store first")
        if self._state == "closed":
            raise StorageError("the memory store is closed")

    @property
    def storage_id(self) -> str:
        """A random UUID, new for every instance."""
        if self._state == "new":
            raise StorageError("open() the store first")
        return self._storage_id

    @property
    def durable(self) -> bool:
        """Always False: the contents die with the process."""
        return False

    async def open(self) -> None:
        """Make the store usable; there is nothing to read."""
        if self._state != "new":
            raise StorageError("the memory store is already open or closed")
        self._state = "open"

    def document_ids(self) -> set[DocumentId]:
        """Return the ids of every document appended or compacted and not deleted."""
        if self._state == "new":
            raise StorageError("open() the store first")
        return set(self._documents)

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``."""
        return isinstance(doc_id, str) and doc_id in self._documents

    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Return the snapshot followed by the changes appended since, or None."""
        doc_id = check_id(doc_id)
        self._require_open()
        document = self._documents.get(doc_id)
        if document is None:
            return None
        return document.snapshot + b"".join(document.changes)

    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Keep the change bytes; see :meth:`Store.append`."""
        doc_id = check_id(doc_id)
        data = check_chunks(data, "appended data")
        self._require_open()
        document = self._documents.setdefault(doc_id, _MemoryDocument())
        document.changes.append(data)
        document.change_bytes += len(data)

    async def flush(self) -> None:
        """Return at once: memory is as durable as this store gets."""

    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether the changes outweigh the snapshot (and the floor) or are many."""
        document = self._documents.get(doc_id) if isinstance(doc_id, str) else None
        if document is None:
            return False
        return document.change_bytes >= max(len(document.snapshot), self._floor)

    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Replace the document by ``snapshot``; see :meth:`Store.compact`."""
        doc_id = check_id(doc_id)
        snapshot = check_chunks(snapshot, "snapshot")
        self._require_open()
        if verify is not None and not verify(snapshot):
            raise StorageError(f"the snapshot of document {doc_id} does not verify; kept the old")
        self._documents[doc_id] = _MemoryDocument(snapshot=snapshot)

    async def delete(self, doc_id: DocumentId) -> None:
        """Forget the document."""
        doc_id = check_id(doc_id)
        self._require_open()
        self._documents.pop(doc_id, None)

    async def close(self) -> None:
        """Stop accepting calls; the contents are dropped."""
        if self._state == "open":
            self._documents.clear()
        self._state = "closed"
