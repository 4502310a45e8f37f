"""Appended change bytes on their way to durable storage, written in shared batches.

Every durable store keeps the same promise (:meth:`Store.flush
<autosync_jupyter.storage.base.Store.flush>`): bytes appended before a flush
are durable when it returns, and flushes that arrive while a batch is being
written share the next batch (group commit). :class:`AppendQueue` keeps that
promise once; a store only says how to write one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..ids import DocumentId

__all__ = ["AppendQueue", "BatchWriter"]

#: Writes one batch (document → its appended bytes, joined) durably; the
#: second argument is how many appends the batch holds, for logs.
BatchWriter = Callable[[dict[DocumentId, bytes], int], Awaitable[None]]


class AppendQueue:
    """Bytes appended per document, waiting for (or in) the batch that makes them durable."""

    def __init__(self) -> None:
        self._pending: dict[DocumentId, list[bytes]] = {}
        self._inflight: dict[DocumentId, list[bytes]] = {}
        self._appended = 0  # appends so far
        self._durable_upto = 0  # the first this many appends are durable
        self._writer: asyncio.Task[None] | None = None

    def add(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue ``data`` for ``doc_id``; durable after the next :meth:`flush`."""
        self._pending.setdefault(doc_id, []).append(data)
        self._appended += 1

    def holds(self, doc_id: DocumentId) -> bool:
        """Whether bytes of ``doc_id`` are queued or being written."""
        return doc_id in self._pending or doc_id in self._inflight

    def being_written(self, doc_id: DocumentId) -> bool:
        """Whether the batch being written holds bytes of ``doc_id`` (not discarded since)."""
        return doc_id in self._inflight

    def unwritten(self, doc_id: DocumentId) -> bytes:
        """The bytes of ``doc_id`` not yet durable, oldest first."""
        return b"".join(self._inflight.get(doc_id, []) + self._pending.get(doc_id, []))

    def unwritten_size(self, doc_id: DocumentId) -> int:
        """How many bytes of ``doc_id`` are not yet durable."""
        chunks = self._inflight.get(doc_id, []) + self._pending.get(doc_id, [])
        return sum(map(len, chunks))

    def discard(self, doc_id: DocumentId) -> None:
        """Drop what is queued for ``doc_id`` (it is being deleted)."""
        self._pending.pop(doc_id, None)
        self._inflight.pop(doc_id, None)

    async def flush(self, write: BatchWriter) -> None:
        """Return once everything added before this call was written by ``write``.

        Raises what ``write`` raised; the bytes then stay queued (at the front)
        and the next flush tries again.
        """
        target = self._appended
        while self._durable_upto < target:
            if self._writer is None:
                self._writer = asyncio.ensure_future(self._write_batch(write))
                self._writer.add_done_callback(_consume_exception)
            # Shielded: a caller that is cancelled must not cancel the batch
            # other callers wait for.
            await asyncio.shield(self._writer)

    async def _write_batch(self, write: BatchWriter) -> None:
        upto = self._appended
        self._inflight, self._pending = self._pending, {}
        try:
            if self._inflight:
                batch = {doc_id: b"".join(chunks) for doc_id, chunks in self._inflight.items()}
                await write(batch, upto - self._durable_upto)
            self._durable_upto = upto
        except BaseException:
            # Back to the front of the queue (minus discarded documents): the
            # next flush retries. Bytes that were written after all are
            # written twice, which automerge loads happily.
            for doc_id, chunks in self._inflight.items():
                self._pending[doc_id] = chunks + self._pending.get(doc_id, [])
            raise
        finally:
            self._inflight = {}
            self._writer = None


def _consume_exception(task: asyncio.Task[None]) -> None:
    # The batch's error reaches every waiting flush(); marking it retrieved
    # keeps asyncio from also logging it when no caller is left waiting.
    if not task.cancelled():
        task.exception()
