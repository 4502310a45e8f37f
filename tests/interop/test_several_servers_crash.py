"""Two `autosync serve --store-shared` on one database, JS clients on each, `kill -9` of one.

Writers on server A and on server B edit one document at once; A is killed
mid-write. Every change A acknowledged (heads its sync messages carried, as
the JS client records them) must be in the database and reach the client
on B; and what the two wrote converges there.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import automerge.core as am
from jspeer import JSPeer, Op
from servers import py_sync_server

from autosync_jupyter.ids import decode_heads

RUN_SECONDS = 2.0
WAIT = 60.0  # a bound on a hang, not a timing


async def writes(
    peer: JSPeer, doc_id: str, name: str, stop: asyncio.Event, acked: list[str]
) -> int:
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


async def hashes_of(peer: JSPeer, doc_id: str) -> set[bytes]:
    return {c.hash for c in am.Document.load(await peer.export(doc_id)).get_changes([])}


async def test_kill_9_of_one_shared_server_loses_nothing_it_acknowledged(
    tmp_path: Path, postgres_url: str
) -> None:
    shared = ("--store", postgres_url, "--store-shared")
    loop = asyncio.get_running_loop()
    async with py_sync_server(tmp_path / "b", *shared) as b, JSPeer.start(b.url) as on_b:
        async with (
            py_sync_server(tmp_path / "a", *shared, require_clean_exit=False) as a,
            JSPeer.start(a.url, retry_interval_ms=200) as on_a,
        ):
            doc_id = (await on_a.create({"log": []}))["documentId"]
            await on_a.wait_synced(doc_id)
            deadline = loop.time() + WAIT
            while (await on_b.find(doc_id))["state"] != "ready":  # B hears of it at the commit
                assert loop.time() < deadline, "B never served the document made through A"
            acked_a: list[str] = []
            acked_b: list[str] = []
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(writes(on_a, doc_id, "a", stop, acked_a)),
                asyncio.create_task(writes(on_b, doc_id, "b", stop, acked_b)),
            ]
            await asyncio.sleep(RUN_SECONDS)
            os.kill(a.pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            stop.set()
            counts = await asyncio.gather(*tasks)
        assert all(c > 10 for c in counts), counts
        assert acked_a, "no acknowledgement from A observed before the kill"
        wanted = set(decode_heads(acked_a))
        # Everything A acknowledged reaches the client on B (through the database).
        deadline = loop.time() + WAIT
        while not wanted <= (have := await hashes_of(on_b, doc_id)):
            assert loop.time() < deadline, f"acknowledged by A, lost: {wanted - have}"
            await asyncio.sleep(0.05)
        # A fresh client on B gets the same document as the writer on B.
        async with JSPeer.start(b.url) as reader:
            found = await reader.find(doc_id)
            assert found["state"] == "ready"
            mine = await on_b.heads(doc_id)
            deadline = loop.time() + WAIT
            while sorted(await reader.heads(doc_id)) != sorted(mine):
                assert loop.time() < deadline, "the reader on B never converged"
                await asyncio.sleep(0.05)
