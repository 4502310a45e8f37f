"""A durable store in a data directory, in the JS sync server's layout.

:class:`FileStore` keeps the directory layout of the JavaScript sync server's
``NodeFSStorageAdapter``, so a data directory can move between a JS server
and this one in both directions::

    <dir>/st/orage-adapter-id                       storage id (UUID text)
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/snapshot/<64 hex>
                                                    full saves, named by the
                                                    SHA-256 of their heads
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/incremental/<64 hex>
                                                    one change chunk per file
                                                    (written by JS)
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/incremental/append-000001
                                                    append-only change log
                                                    (written by this store)
    <dir>/<document id>.automerge                   a full save in the R
                                                    package's layout (read only)
    <dir>/.corrupt/<document id>/...                damaged bytes set aside
    <dir>/.lock                                     held while a store is open

Unlike the JS adapter, this store never rewrites a file in place: change
bytes are appended to a log file and fsync'd once per batch (group commit),
snapshots are written to a temporary file and renamed into place, and every
file is checked chunk by chunk when it is read, so a crash or a damaged file
costs at most the damaged bytes, never the document.

:class:`FileStore` is the event-loop side: it queues appends, groups them
into batches and hands every file operation, in order, to one I/O thread,
where :class:`~.disk.Disk` does them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..crdt.chunks import check_chunks
from ..errors import StorageError
from ..ids import DocumentId, is_valid_document_id
from .append_queue import AppendQueue
from .base import COMPACTION_FLOOR, Damage, Store, check_id
from .disk import MAX_FILES, Disk, Usage, heads_hash

__all__ = ["FileStore"]

logger = logging.getLogger("autosync_jupyter.storage")

_T = TypeVar("_T")


class FileStore(Store):
    """A durable store in a directory, compatible with the JS sync server's layout.

    Appends are queued in memory and written by :meth:`flush` in batches: one
    write and one fsync per touched document, however many changes and
    callers the batch holds. All file work runs on one worker thread, in
    the order it was asked for (a batch's fsyncs fan out to helper threads),
    so the event loop never waits for the disk. :meth:`open` locks the
    directory until :meth:`close`: one writing store per directory.

    Example::

        store = FileStore(".amrg")
        await store.open()
        store.append(doc_id, b"".join(change.bytes for change in changes))
        await store.flush()  # durable from here: now acknowledge
        if store.needs_compaction(doc_id):
            await store.compact(doc_id, doc.save(), doc.get_heads())
        doc = automerge.core.Document.load(await store.load(doc_id))
        await store.close()

    Args:
        directory: the data directory; created if missing. It may hold data
            written by the JavaScript sync server (``NodeFSStorageAdapter``)
            or the R package ``autosync`` (``<id>.automerge`` files; a
            document's R file is replaced by a snapshot in the JS layout at
            its first compaction). Run one server per directory.
        compaction_floor: incremental bytes below which
            :meth:`needs_compaction` stays False.
        read_only: only read, for inspecting a directory that a running
            server holds (``autosync ls``): no lock is taken, nothing is
            created, repaired or removed, damaged bytes are skipped, and
            :meth:`append`, :meth:`compact` and :meth:`delete` raise
            :class:`StorageError`. The storage id is the directory's, or a
            random one if it has none.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        compaction_floor: int = COMPACTION_FLOOR,
        read_only: bool = False,
    ) -> None:
        self._root = Path(directory)
        self._read_only = read_only
        self._disk = Disk(self._root, read_only=read_only)
        self._damage: dict[DocumentId, Damage] = {}
        self._floor = compaction_floor
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._storage_id: str | None = None
        # Ids known to be held: written in this process, or all of them once listed.
        self._ids: set[DocumentId] = set()
        self._listed = False
        self._listing: asyncio.Future[set[DocumentId]] | None = None
        # Deleted in this process (and not written since): a listing or the
        # disk may still show them for a moment.
        self._deleted: set[DocumentId] = set()
        self._usage: dict[DocumentId, Usage] = {}
        # Appended bytes not yet written, and those of the batch being written.
        self._queue = AppendQueue()
        self._closing = False
        self._stopped = False
        self._batches = 0

    def __repr__(self) -> str:
        return f"FileStore({str(self._root)!r})"

    @property
    def location(self) -> str:
        """The data directory."""
        return str(self._root)

    @property
    def directory(self) -> Path:
        """The data directory."""
        return self._root

    @property
    def storage_id(self) -> str:
        """The id in ``<dir>/st/orage-adapter-id``, reused across runs and from JS."""
        if self._storage_id is None:
            raise StorageError("open() the store first")
        return self._storage_id

    @property
    def durable(self) -> bool:
        """True: flushed appends survive a crash (False if opened read-only)."""
        return not self._read_only

    @property
    def batches(self) -> int:
        """How many batches :meth:`flush` has written (one fsync per document each)."""
        return self._batches

    def _run(self, func: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        # Submits at once, so jobs run in the order this is called.
        if self._io is None:
            raise StorageError("open() the store first")
        if self._stopped:
            raise StorageError(f"the store in {self._root} is closed")
        return asyncio.get_running_loop().run_in_executor(self._io, func, *args)

    def _require_open(self, *, writing: bool = False) -> None:
        if self._io is None:
            raise StorageError("open() the store first")
        if self._closing:
            raise StorageError(f"the store in {self._root} is closed")
        if writing and self._read_only:
            raise StorageError(f"the store in {self._root} was opened read-only")

    async def open(self) -> None:
        """Create the directory if needed, read or create the storage id; list nothing.

        It costs the same however many documents the directory holds: ``in``
        asks the disk about one id, and the listing is made when
        :meth:`document_ids` or :meth:`all_document_ids` first needs it.
        Temporary files left by a crash are removed (a document's when it is
        first read). The directory is locked until :meth:`close` (or the end
        of the process).

        Raises:
            StorageError: the directory cannot be created or read, or another
                open store (in this or another process) holds it.
        """
        if self._io is not None:
            raise StorageError(f"the store in {self._root} is already open (or closed)")
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="autosync-storage")
        try:
            self._storage_id = await self._run(self._disk.prepare)
        except BaseException:
            self._io.shutdown(wait=False)
            self._io = None
            raise
        logger.info("opened %s: storage id %s", self._root, self._storage_id)

    @property
    def listed(self) -> bool:
        """Whether every id is in memory (after the first :meth:`document_ids`)."""
        return self._listed

    def document_ids(self) -> set[DocumentId]:
        """Return the ids of every document on disk or appended, compacted since.

        The first call lists the directory on the calling thread (about
        50 µs a document); :meth:`all_document_ids` does it on a helper
        thread instead.
        """
        if self._io is None:
            raise StorageError("open() the store first")
        if not self._listed:
            self._take_listing(self._disk.index())
        return set(self._ids)

    async def all_document_ids(self) -> set[DocumentId]:
        """:meth:`document_ids`, the first listing made on a helper thread."""
        if self._io is None:
            raise StorageError("open() the store first")
        if not self._listed:
            if self._listing is None:
                # Read only, so it may run beside the I/O thread's jobs.
                self._listing = asyncio.ensure_future(asyncio.to_thread(self._disk.index))
            listing = self._listing
            try:
                found = await asyncio.shield(listing)
            finally:
                if self._listing is listing and listing.done():
                    self._listing = None
            if not self._listed:
                self._take_listing(found)
        return set(self._ids)

    def _take_listing(self, found: set[DocumentId]) -> None:
        # Deleted while the listing ran: gone, whatever the listing saw.
        self._ids |= found - self._deleted
        self._listed = True
        logger.info("listed %s: %d documents", self._root, len(self._ids))

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``: from memory, else a few stats of its files."""
        if not isinstance(doc_id, str):
            return False
        if doc_id in self._ids:
            return True
        if self._listed or doc_id in self._deleted or self._io is None:
            return False
        return is_valid_document_id(doc_id) and self._disk.holds(DocumentId(doc_id))

    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Read and check the document's files; see :meth:`Store.load`.

        Damaged files are repaired on disk: a torn tail is cut off, a file
        with damage inside is replaced by its sound chunks; the damaged bytes
        are kept under ``<dir>/.corrupt/<id>/``.
        """
        doc_id = check_id(doc_id)
        self._require_open()
        # Appended but maybe not yet on disk when the read runs; taken now so
        # that every append made before this call is in the result.
        unwritten = self._queue.unwritten(doc_id)
        data, usage, damage = await self._run(self._disk.read, doc_id)
        self._damage[doc_id] = damage
        self._usage[doc_id] = usage
        if damage.damaged_bytes:
            # Listed even if nothing sound is left: it says why until restored.
            self._ids.add(doc_id)
        result = data + unwritten
        return result or None

    def damage(self, doc_id: DocumentId) -> Damage:
        """What the last :meth:`load` of ``doc_id`` found damaged (nothing before a load)."""
        return self._damage.get(check_id(doc_id), Damage())

    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue change bytes; see :meth:`Store.append`."""
        if not (isinstance(doc_id, str) and doc_id in self._ids):  # validated once per id
            doc_id = check_id(doc_id)
        data = check_chunks(data, "appended data")
        self._require_open(writing=True)
        self._queue.add(doc_id, data)
        self._ids.add(doc_id)
        self._deleted.discard(doc_id)

    async def flush(self) -> None:
        """Write and fsync everything appended before this call; see :meth:`Store.flush`."""
        await self._queue.flush(self._write_batch)

    async def _write_batch(self, batch: dict[DocumentId, bytes], count: int) -> None:
        usages = await self._run(self._disk.write_batch, batch)
        self._usage.update(usages)
        self._batches += 1
        logger.debug("wrote a batch of %d appends to %d documents", count, len(batch))

    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether the change bytes outweigh the snapshot, or the files are many.

        True when the document's incremental bytes (on disk and queued) reach
        the larger of its snapshot size and ``compaction_floor``, or when it
        is spread over more than 32 files. Only what this process has loaded
        or written counts.
        """
        if not isinstance(doc_id, str):
            return False
        usage = self._usage.get(doc_id, Usage())
        unwritten = self._queue.unwritten_size(doc_id)
        incremental = usage.incremental_bytes + unwritten
        return incremental >= max(usage.snapshot_bytes, self._floor) or usage.files > MAX_FILES

    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Write ``snapshot`` safely and drop what an earlier one covers; see :meth:`Store.compact`.

        Steps, each safe to crash after: the append log is rotated (later
        appends go to a new file); the snapshot is written to a temporary
        file, fsync'd, read back, compared with what was written and given
        to ``verify``, then renamed to ``snapshot/<heads hash>`` and the
        directory fsync'd; then the generation before the current one is
        removed (the snapshot, JS change files and append logs that the
        previous compaction left). So a document keeps two generations on
        disk: the new snapshot with the logs after it, and the previous
        snapshot with the logs between the two.
        """
        doc_id = check_id(doc_id)
        snapshot = check_chunks(snapshot, "snapshot")
        self._require_open(writing=True)
        usage = await self._run(self._disk.compact, doc_id, snapshot, heads_hash(heads), verify)
        self._usage[doc_id] = usage
        self._ids.add(doc_id)
        self._deleted.discard(doc_id)

    def forget(self, doc_id: DocumentId) -> None:
        """Drop the sizes and damage report of ``doc_id`` here and its bookkeeping on disk.

        Appends not yet written stay queued. Unless every id is in memory
        anyway, the id itself is dropped too: ``in`` asks the disk again.
        """
        doc_id = check_id(doc_id)
        self._usage.pop(doc_id, None)
        self._damage.pop(doc_id, None)
        if not self._listed and not self._queue.holds(doc_id):
            self._ids.discard(doc_id)
        if self._io is not None and not self._stopped:
            self._run(self._disk.forget, doc_id)

    async def delete(self, doc_id: DocumentId) -> None:
        """Remove the document's files and forget its queued appends."""
        doc_id = check_id(doc_id)
        self._require_open(writing=True)
        self._queue.discard(doc_id)
        self._ids.discard(doc_id)
        self._deleted.add(doc_id)
        self._usage.pop(doc_id, None)
        await self._run(self._disk.delete, doc_id)

    async def close(self) -> None:
        """Flush what was appended so far, refuse further appends, stop the I/O thread."""
        if self._io is None or self._closing:
            return
        self._closing = True
        try:
            await self.flush()
            await self._run(self._disk.close)  # after every queued job
        finally:
            self._stopped = True
            self._io.shutdown(wait=False)
        logger.info("closed %s", self._root)
