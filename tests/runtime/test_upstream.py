"""A server that is also a client of upstream servers (runtime/upstream.py, hub's upstream peers).

Two of our servers on real sockets: ``local`` has ``upstream`` as its
upstream. Documents flow both ways, documents a peer of ``local`` asks for
come from ``upstream``, and what changes while the upstream is away reaches
it when it is back. The same against the JS sync server is in
tests/interop/test_upstream_interop.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from autosync_jupyter import DocumentUnavailable, SyncServer
from autosync_jupyter.runtime.client import fetch
from autosync_jupyter.runtime.connection import connect
from autosync_jupyter.runtime.upstream import Upstream


async def eventually_async(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[SyncServer]:
    async with SyncServer(port=0, data_dir=tmp_path / "upstream") as server:
        yield server


@pytest.fixture
async def local(tmp_path: Path, upstream: SyncServer) -> AsyncIterator[SyncServer]:
    async with SyncServer(port=0, data_dir=tmp_path / "local", upstreams=[upstream.url]) as server:
        yield server


async def test_start_waits_for_the_upstream_join(local: SyncServer, upstream: SyncServer) -> None:
    assert local.upstreams[0].joined.is_set()
    # The upstream sees the local server as a peer with storage.
    (peer,) = upstream.peers()
    assert peer.peer_id == local.peer_id
    assert peer.storage_id is not None and not peer.is_ephemeral
    (up,) = [p for p in local.peers() if p.upstream]
    assert up.peer_id == upstream.peer_id


async def test_a_peer_gets_a_document_only_the_upstream_has(
    local: SyncServer, upstream: SyncServer
) -> None:
    doc_id = await upstream.create_document({"title": "central", "n": 1})
    assert doc_id not in local.list_documents()
    doc = await fetch(local.url, doc_id, timeout=10)
    assert doc.to_py() == {"title": "central", "n": 1}
    # The local server keeps what it relayed: it serves it without the upstream.
    await eventually(lambda: doc_id in local.list_documents())


async def test_documents_made_on_the_local_server_reach_the_upstream(
    local: SyncServer, upstream: SyncServer
) -> None:
    async with connect(local.url) as conn:
        handle = await conn.create({"made": "locally"})
        await handle.flush()
    by_api = await local.create_document({"made": "by the API"})

    async def on_upstream() -> bool:
        # Listed as soon as its first change is stored: wait for the content.
        if not {handle.document_id, by_api} <= set(upstream.list_documents()):
            return False
        return (await upstream.read_document(handle.document_id)) == {"made": "locally"} and (
            await upstream.read_document(by_api)
        ) == {"made": "by the API"}

    await eventually_async(on_upstream)


async def test_live_edits_flow_both_ways(local: SyncServer, upstream: SyncServer) -> None:
    doc_id = await upstream.create_document({"count": 0})
    async with connect(local.url) as near, connect(upstream.url) as far:
        here = await near.open(doc_id)
        there = await far.open(doc_id)
        with here.doc.change() as d:
            d["from_local"] = "hello"
        await there.wait_for(lambda v: v.get("from_local") == "hello", timeout=10)
        with there.doc.change() as d:
            d["from_upstream"] = "hi"
        await here.wait_for(lambda v: v.get("from_upstream") == "hi", timeout=10)
        # Concurrent edits through both servers converge.
        with here.doc.change() as d:
            d["a"] = 1
        with there.doc.change() as d:
            d["b"] = 2
        both = {"count": 0, "from_local": "hello", "from_upstream": "hi", "a": 1, "b": 2}
        await here.wait_for(lambda v: v == both, timeout=10)
        await there.wait_for(lambda v: v == both, timeout=10)


async def test_a_document_nobody_has_is_unavailable_without_waiting_for_the_timeout(
    local: SyncServer,
) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(DocumentUnavailable):
        await fetch(local.url, "4NMNnkMhL8jXrdJ9jamS58PAVdXu", timeout=20)
    # The upstream said doc-unavailable: no wait for the 10 s answer timeout.
    assert asyncio.get_running_loop().time() - started < 8


async def test_a_silent_upstream_times_out_into_unavailable(tmp_path: Path) -> None:
    # A WebSocket server that accepts the join but never answers anything.
    from websockets.asyncio.server import ServerConnection, serve

    from autosync_jupyter.core.protocol import Join, Peer, decode, encode

    async def mute(ws: ServerConnection) -> None:
        async for data in ws:
            msg = decode(data if isinstance(data, bytes) else data.encode())
            if isinstance(msg, Join):
                await ws.send(encode(Peer("mute-server", msg.sender_id)))

    async with serve(mute, "127.0.0.1", 0) as silent:
        port = next(iter(silent.sockets)).getsockname()[1]
        async with SyncServer(
            port=0, data_dir=None, upstreams=[f"ws://127.0.0.1:{port}"], upstream_timeout=0.5
        ) as server:
            assert server.upstreams[0].joined.is_set()
            with pytest.raises(DocumentUnavailable):
                await fetch(server.url, "4NMNnkMhL8jXrdJ9jamS58PAVdXu", timeout=10)


async def test_changes_made_while_the_upstream_is_away_reach_it_when_it_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    up = Upstream(url, min_backoff=0.05, max_backoff=0.2)
    async with SyncServer(
        port=0,
        data_dir=tmp_path / "local",
        upstreams=[up],
        upstream_timeout=1,
        max_loaded_documents=0,  # every idle document leaves memory at once
    ) as local:
        assert not up.joined.is_set() and up.last_error is not None
        async with connect(local.url) as conn:
            handle = await conn.create({"written": "offline"})
            await handle.flush()
        doc_id = handle.document_id
        await eventually(lambda: not local.hub.is_loaded(doc_id))  # type: ignore[arg-type]
        async with SyncServer(port=port, data_dir=tmp_path / "upstream") as central:
            await asyncio.wait_for(up.joined.wait(), 10)

            async def arrived() -> bool:
                if doc_id not in central.list_documents():
                    return False
                return await central.read_document(doc_id) == {"written": "offline"}

            await eventually_async(arrived)


async def test_a_document_in_sync_with_the_upstream_can_leave_memory(
    tmp_path: Path, upstream: SyncServer
) -> None:
    async with SyncServer(
        port=0, data_dir=tmp_path / "local", upstreams=[upstream.url], idle_timeout=0.2
    ) as local:
        doc_id = await local.create_document({"x": 1})

        async def pushed() -> bool:
            return doc_id in upstream.list_documents()

        await eventually_async(pushed)
        # Only the upstream is engaged, and it has everything: the document goes idle.
        await eventually(lambda: not local.hub.is_loaded(doc_id))  # type: ignore[arg-type]
        assert (await fetch(local.url, doc_id)).to_py() == {"x": 1}


def test_upstreams_must_be_a_list_of_urls() -> None:
    with pytest.raises(TypeError):
        SyncServer(data_dir=None, upstreams="ws://127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SyncServer(data_dir=None, upstreams=["http://example.org"])
    with pytest.raises(ValueError):
        SyncServer(data_dir=None, upstreams=["ws://127.0.0.1:1", "ws://127.0.0.1:1"])
