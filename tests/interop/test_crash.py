"""Crash safety: `kill -9` the server while JS clients write; nothing acknowledged is lost.

A change counts as acknowledged when the server's sync messages advertised
heads that include it: the JS client records those heads as the server's
`getSyncInfo(storageId).lastHeads`. Our server sends nothing that carries a
change's heads before the change is fsynced, so after a restart every
acknowledged head must be in the stored document's history.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import automerge.core as am
import pytest
from jspeer import JSPeer, Op
from servers import py_sync_server

from autosync_jupyter.ids import decode_heads
from autosync_jupyter.storage import FileStore, PostgresStore, Store

WRITERS = 3
RUN_SECONDS = 2.0


async def write_until_killed(
    peer: JSPeer, doc_id: str, name: str, stop: asyncio.Event, acked: list[str]
) -> int:
    """Make changes as fast as the peer allows; keep the server's latest acknowledged heads."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await peer.change(doc_id, [Op.set(name, i), Op.push("log", f"{name}{i}")])
            if i % 5 == 0:
                info = await peer.sync_info(doc_id)
                if info["lastHeads"]:
                    acked[:] = info["lastHeads"]
        except Exception:
            if stop.is_set():
                break
            raise
    return i


async def stored_hashes(data_dir: Path, store_url: str | None, doc_id: str) -> set[bytes]:
    store: Store = FileStore(data_dir) if store_url is None else PostgresStore(store_url)
    await store.open()
    try:
        raw = await store.load(doc_id)  # type: ignore[arg-type]
    finally:
        await store.close()
    assert raw is not None, "the document is gone after the crash"
    return {change.hash for change in am.Document.load(raw).get_changes([])}


@pytest.mark.parametrize("storage", ["files", "postgres"])
async def test_kill_9_loses_no_acknowledged_change(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    """After SIGKILL mid-write and a restart, every acknowledged change is stored.

    For PostgreSQL "stored" means committed: the server's session dies with
    it, and the database keeps what it had committed.
    """
    data = tmp_path / "data"
    store_url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    store_args = ("--store", store_url) if store_url else ()
    acked: dict[str, list[str]] = {}
    async with (
        py_sync_server(data, *store_args, require_clean_exit=False) as server,
        JSPeer.start(server.url, retry_interval_ms=200) as w0,
        JSPeer.start(server.url, retry_interval_ms=200) as w1,
        JSPeer.start(server.url, retry_interval_ms=200) as w2,
    ):
        writers = [w0, w1, w2]
        docs = [(await w.create({"log": []}))["documentId"] for w in writers]
        for w, doc_id in zip(writers, docs, strict=True):
            await w.wait_synced(doc_id)
        stop = asyncio.Event()
        tasks = []
        for n, (w, doc_id) in enumerate(zip(writers, docs, strict=True)):
            acked[doc_id] = []
            tasks.append(
                asyncio.create_task(write_until_killed(w, doc_id, f"w{n}", stop, acked[doc_id]))
            )
        await asyncio.sleep(RUN_SECONDS)
        os.kill(server.pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        stop.set()
        counts = await asyncio.gather(*tasks)
    assert all(c > 20 for c in counts), counts
    assert (store_url is None) == data.exists()  # the database, not a directory, held them
    assert all(acked[d] for d in docs), "no acknowledgement observed before the kill"
    for doc_id in docs:
        have = await stored_hashes(data, store_url, doc_id)
        missing = [h for h in decode_heads(acked[doc_id]) if h not in have]
        assert not missing, f"{doc_id}: acknowledged heads lost: {missing}"
    # And the restarted server serves them.
    async with py_sync_server(data, *store_args) as server, JSPeer.start(server.url) as reader:
        for doc_id in docs:
            found = await reader.find(doc_id)
            assert found["state"] == "ready"
            assert len(found["doc"]["log"]) >= 1
