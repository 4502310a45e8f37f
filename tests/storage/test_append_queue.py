"""The group commit every durable store shares (storage/append_queue.py), without a store."""

from __future__ import annotations

import asyncio

import pytest

from autosync_jupyter.ids import DocumentId
from autosync_jupyter.storage.append_queue import AppendQueue

A, B = DocumentId("a"), DocumentId("b")


async def test_concurrent_flushes_share_batches_and_keep_order() -> None:
    queue, batches = AppendQueue(), []
    gate = asyncio.Event()

    async def write(batch: dict[DocumentId, bytes], count: int) -> None:
        batches.append((dict(batch), count))
        await gate.wait()

    queue.add(A, b"1")
    first = asyncio.ensure_future(queue.flush(write))
    while not batches:  # the first batch is being written
        await asyncio.sleep(0)
    queue.add(A, b"2")
    queue.add(B, b"x")
    later = [asyncio.ensure_future(queue.flush(write)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *later)
    assert batches == [({A: b"1"}, 1), ({A: b"2", B: b"x"}, 2)]  # 51 flushes, 2 writes
    assert not queue.holds(A) and queue.unwritten_size(A) == 0


async def test_a_failed_batch_goes_back_to_the_front() -> None:
    queue = AppendQueue()
    fail = True

    async def write(batch: dict[DocumentId, bytes], count: int) -> None:
        if fail:
            queue.add(A, b"3")  # appended while the batch is written
            raise OSError("disk full")

    queue.add(A, b"1")
    queue.add(A, b"2")
    with pytest.raises(OSError):
        await queue.flush(write)
    assert queue.unwritten(A) == b"123"  # the failed bytes first, then the newer
    fail = False
    written: list[bytes] = []

    async def record(batch: dict[DocumentId, bytes], count: int) -> None:
        written.append(batch[A])

    await queue.flush(record)
    assert written == [b"123"] and not queue.holds(A)


async def test_a_discarded_document_is_not_written() -> None:
    queue, seen = AppendQueue(), []

    async def write(batch: dict[DocumentId, bytes], count: int) -> None:
        seen.append(sorted(batch))

    queue.add(A, b"1")
    queue.add(B, b"2")
    queue.discard(A)
    await queue.flush(write)
    assert seen == [[B]]
