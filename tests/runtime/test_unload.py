"""Idle documents leave memory and come back the same (runtime/sync_runtime.py).

No test waits for a timer: the bound on loaded documents acts when a flush
completes, and the idle sweep is called with its clock moved back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autosync_jupyter import MemoryStore, SyncRuntime, SyncServer
from autosync_jupyter.runtime.client import fetch
from autosync_jupyter.runtime.connection import connect
from autosync_jupyter.runtime.sync_runtime import DEFAULT_MAX_LOADED_DOCUMENTS


async def settle() -> None:
    """Let the group commit's flush and its callback run (a few loop turns, no clock)."""
    for _ in range(10):
        await asyncio.sleep(0)


def loaded(runtime: SyncRuntime, doc_id: str) -> bool:
    return runtime.hub.is_loaded(doc_id)  # type: ignore[arg-type]


async def test_an_unloaded_document_reloads_with_the_same_content_and_heads(
    tmp_path: Path,
) -> None:
    async with SyncRuntime(data_dir=tmp_path, max_loaded_documents=1) as runtime:
        first = await runtime.create_document({"n": 1})
        await runtime.change_document(first, lambda d: d.__setitem__("m", 2))
        heads = (await runtime.get_document(first)).heads
        second = await runtime.create_document({"n": 2})
        await settle()
        assert not loaded(runtime, first)
        assert loaded(runtime, second)
        again = await runtime.get_document(first)
        assert again.to_py() == {"n": 1, "m": 2}
        assert again.heads == heads
        assert sorted(runtime.list_documents()) == sorted([first, second])


async def test_a_peer_coming_back_after_an_unload_syncs(tmp_path: Path) -> None:
    async with SyncServer(port=0, data_dir=tmp_path, max_loaded_documents=1) as server:
        doc_id = await server.create_document({"title": "kept"})
        async with connect(server.url) as conn:
            handle = await conn.open(doc_id)
            with handle.doc.change() as d:
                d["edited"] = True
            await handle.flush()  # acknowledged by the server: durable
        await server.create_document({"other": 1})
        await settle()
        assert not loaded(server, doc_id)
        assert (await fetch(server.url, doc_id)).to_py() == {"title": "kept", "edited": True}


async def test_a_document_a_peer_syncs_is_never_unloaded(tmp_path: Path) -> None:
    async with SyncServer(port=0, data_dir=tmp_path, max_loaded_documents=0) as server:
        doc_id = await server.create_document({"n": 1})
        async with connect(server.url) as conn:
            await conn.open(doc_id)
            await server.create_document({"n": 2})  # a flush: the bound acts
            await server.change_document(doc_id, lambda d: d.__setitem__("n", 3))
            assert loaded(server, doc_id)
        await server.create_document({"n": 4})
        await settle()
        assert not loaded(server, doc_id)


class _HeldFlushes(MemoryStore):
    """A store whose flushes wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def flush(self) -> None:
        await self.gate.wait()


async def test_a_document_with_writes_not_yet_durable_is_never_unloaded() -> None:
    store = _HeldFlushes()
    store.gate.set()
    async with SyncRuntime(store=store, max_loaded_documents=0) as runtime:
        doc_id = await runtime.create_document({"n": 1})
        await settle()
        assert not loaded(runtime, doc_id)
        store.gate.clear()
        change = asyncio.ensure_future(
            runtime.change_document(doc_id, lambda d: d.__setitem__("n", 2))
        )
        for _ in range(5):
            await settle()
            runtime._bound_loaded()
        assert loaded(runtime, doc_id)  # its write waits for the flush
        store.gate.set()
        await change
        await settle()
        assert not loaded(runtime, doc_id)
        assert await runtime.read_document(doc_id) == {"n": 2}


async def test_the_bound_keeps_the_most_recently_used(tmp_path: Path) -> None:
    async with SyncRuntime(data_dir=tmp_path, max_loaded_documents=3) as runtime:
        ids = [await runtime.create_document({"i": i}) for i in range(6)]
        await runtime.get_document(ids[0])  # used again: among the most recent
        await runtime.create_document({"i": 6})
        await settle()
        held = [doc_id for doc_id in ids if loaded(runtime, doc_id)]
        assert len(held) <= 3
        assert ids[0] in held
        assert [await runtime.read_document(doc_id) for doc_id in ids] == [
            {"i": i} for i in range(6)
        ]


async def test_the_idle_sweep_unloads_documents_unused_for_the_timeout(tmp_path: Path) -> None:
    async with SyncRuntime(data_dir=tmp_path, idle_timeout=60.0) as runtime:
        old = await runtime.create_document({"n": 1})
        runtime._sweep()  # a mark: what was used so far, at "now"
        runtime._use_marks[0] = (runtime._use_marks[0][0] - 61.0, runtime._use_marks[0][1])
        recent = await runtime.create_document({"n": 2})
        runtime._sweep()
        assert not loaded(runtime, old)
        assert loaded(runtime, recent)  # used after the mark
        assert await runtime.read_document(old) == {"n": 1}


def test_the_options_have_bounds() -> None:
    assert DEFAULT_MAX_LOADED_DOCUMENTS > 0
    with pytest.raises(ValueError, match="idle_timeout"):
        SyncRuntime(data_dir=None, idle_timeout=0)
    with pytest.raises(ValueError, match="max_loaded_documents"):
        SyncRuntime(data_dir=None, max_loaded_documents=-1)
