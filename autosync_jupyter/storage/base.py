"""The contract every store keeps, and the types and checks that stores share.

A :class:`Store` keeps, per document, the bytes that
:meth:`automerge.core.Document.load` accepts: full saves ("snapshots")
followed by change chunks. The hub appends the change bytes it receives,
awaits :meth:`Store.flush` before it acknowledges them, and now and then
replaces everything with one fresh snapshot (:meth:`Store.compact`).
:mod:`.memory` and :mod:`.files` implement it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ..errors import StorageError
from ..ids import DocumentId, validate_document_id

__all__ = ["COMPACTION_FLOOR", "Damage", "Store", "StoreLocked", "check_id"]

#: Incremental bytes below which :meth:`Store.needs_compaction` never fires.
#: Below it a snapshot would be rewritten too often for too little gain.
COMPACTION_FLOOR: Final = 64 * 1024


class StoreLocked(StorageError):
    """Another process (a running server) holds the data directory."""


@dataclasses.dataclass
class Damage:
    """What the last read of a document found damaged on disk.

    Attributes:
        damaged_bytes: bytes that are not part of a sound chunk.
        files: how many files held them.
        set_aside: where copies of the damaged files went (empty when the
            store is read-only: nothing is moved then).
    """

    damaged_bytes: int = 0
    files: int = 0
    set_aside: list[Path] = dataclasses.field(default_factory=list)


class Store(abc.ABC):
    """Where documents live between runs.

    A store holds, per document, bytes that
    :meth:`automerge.core.Document.load` accepts. Its life is
    ``await open()``, then any number of :meth:`append`, :meth:`flush`,
    :meth:`load`, :meth:`compact`, :meth:`delete` and :meth:`forget`, then
    ``await close()``. All methods are called from one event loop; none of
    them blocks it, except the first :meth:`document_ids` of a store that
    lists its documents lazily (see there).

    Scale contract: :meth:`open` and ``in`` cost about the same however many
    documents the store holds (a server must listen at once, and answer a
    request for one id without reading the others); only
    :meth:`document_ids` and :meth:`all_document_ids` see every document.

    Durability contract: bytes passed to :meth:`append` are durable once a
    :meth:`flush` that started after the append has returned. Acknowledge a
    change to a peer only then.
    """

    @property
    @abc.abstractmethod
    def storage_id(self) -> str:
        """The store's persistent identity (UUID text), announced to peers; valid after open()."""

    @property
    def location(self) -> str | None:
        """Where the documents are, for people (a directory, a URL without its
        password); None for a store that keeps them in memory."""
        return None

    @property
    @abc.abstractmethod
    def durable(self) -> bool:
        """Whether the contents survive the process (False for :class:`MemoryStore`)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Make the store ready: create what is missing, without reading every document.

        It must take about the same time for ten documents as for a
        million: nothing is listed here (see :meth:`document_ids`).
        """

    @abc.abstractmethod
    def document_ids(self) -> set[DocumentId]:
        """Return (a copy of) the ids of every document the store holds.

        Always complete. A store that does not keep its ids in memory lists
        them at the first call, synchronously (seconds for 100,000 documents
        on disk): code in an event loop calls :meth:`all_document_ids` first,
        after which this answers from memory.
        """

    async def all_document_ids(self) -> set[DocumentId]:
        """:meth:`document_ids`, listing the store off the event loop if it must."""
        return self.document_ids()

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``; False for anything that is not an id.

        Cheap and exact at any time, listed or not (the hub asks it for every
        id a peer requests that is not in memory): a store must answer it
        without listing every document. This default lists; override it.
        """
        return isinstance(doc_id, str) and doc_id in self.document_ids()

    @abc.abstractmethod
    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Return everything stored for ``doc_id``, ready for ``Document.load()``.

        The result is the document's snapshot(s) followed by its change
        chunks (duplicates are harmless to automerge), or None if the store
        holds nothing for it. Damaged pieces are set aside with a warning and
        the rest is returned.

        Raises:
            InvalidDocumentId: ``doc_id`` is not a valid document id.
            StorageError: the store could not be read.
        """

    def damage(self, doc_id: DocumentId) -> Damage:
        """What the last :meth:`load` of ``doc_id`` found damaged and set aside.

        A store that cannot be damaged (memory) reports nothing.
        """
        check_id(doc_id)
        return Damage()

    @abc.abstractmethod
    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue change bytes for ``doc_id``; they are durable after the next :meth:`flush`.

        Args:
            doc_id: the document the changes belong to.
            data: one or more concatenated automerge chunks, as in
                ``b"".join(change.bytes for change in changes)``.

        Raises:
            InvalidDocumentId: ``doc_id`` is not a valid document id.
            ValueError: ``data`` is not a sequence of sound automerge chunks.
            StorageError: the store is not open.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything appended before this call is durable.

        Callers that arrive while a batch is being written share the next
        batch, so many concurrent flushes cost one write and one fsync per
        touched document, not one per caller.

        Raises:
            StorageError: the batch could not be written; the bytes stay
                queued and the next flush tries again.
        """

    @abc.abstractmethod
    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether ``doc_id`` has gathered enough change bytes or files to compact."""

    @abc.abstractmethod
    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Replace what is stored for ``doc_id`` by one snapshot.

        Args:
            doc_id: the document.
            snapshot: ``doc.save()``, taken at the moment of the call, so it
                covers everything appended so far. Bytes appended after the
                call are kept.
            heads: ``doc.get_heads()`` at the same moment (names the file).
            verify: called with the snapshot as read back from the store;
                unless it returns True nothing is replaced.

        Raises:
            ValueError: ``snapshot`` is not a sequence of sound automerge chunks.
            StorageError: the snapshot could not be written or did not read
                back as written and verified; what was stored before is
                still there.
        """

    def forget(self, doc_id: DocumentId) -> None:
        """The caller no longer holds ``doc_id`` in memory: drop what the store caches for it.

        A hint, never a loss: what was appended stays queued and stored, and
        the next :meth:`load` rebuilds the bookkeeping (sizes for
        :meth:`needs_compaction`, :meth:`damage`). A server calls it when it
        unloads an idle document, so the store's memory follows the
        documents in use. The default keeps nothing per document to drop.
        """
        check_id(doc_id)

    def watch(self, callback: Callable[[DocumentId], None]) -> None:
        """Ask to be told when another process may have stored changes to a document.

        A store that several server processes share (a PostgreSQL store
        opened with ``shared=True``) calls ``callback(doc_id)`` from the
        event loop; :meth:`load_new` then reads what was added. The default,
        for stores only one process writes, never calls it.
        """
        del callback  # nobody else writes here

    async def load_new(self, doc_id: DocumentId) -> bytes | None:
        """The bytes of ``doc_id`` that other processes stored since this store last read it.

        None when there are none, or when the document was not loaded (a
        later :meth:`load` reads everything). The default: None.
        """
        check_id(doc_id)
        return None

    @abc.abstractmethod
    async def delete(self, doc_id: DocumentId) -> None:
        """Forget ``doc_id``, including bytes appended but not yet flushed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything appended so far, then stop accepting appends."""


def check_id(doc_id: object) -> DocumentId:
    """Return ``doc_id`` if it is a valid document id; raise :class:`InvalidDocumentId` if not."""
    return validate_document_id(doc_id)
