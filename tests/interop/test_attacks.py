"""Attacks on a running ``autosync serve``: memory stays bounded, the canary stays readable.

Each test starts our server as its own process, has the official JS client
create a canary document, attacks over raw WebSockets, measures the
server's resident memory (psutil) where memory is the point, and ends with a
JS client reading the canary (after a restart where it matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import automerge.core as am
import cbor2
import psutil
import pytest
from hostile import cbor_map_of_empty_maps, deflate_bomb, sync_message
from jspeer import JSPeer, Op, js_value
from servers import ServerProcess, py_sync_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from autosync_jupyter import fetch
from autosync_jupyter.core.protocol import (
    Ephemeral,
    Error,
    Join,
    PeerMetadata,
    Request,
    Sync,
    decode,
    encode,
)
from autosync_jupyter.ids import generate_document_id

MiB = 1 << 20
CANARY = {"title": "canary", "items": [1, 2, 3]}


def rss(server: ServerProcess) -> int:
    """The server's resident memory, in bytes."""
    return int(psutil.Process(server.process.pid).memory_info().rss)


@contextlib.asynccontextmanager
async def peak_rss(server: ServerProcess) -> AsyncIterator[list[int]]:
    """Sample the server's memory every 10 ms; yields [baseline, peak] (peak filled on exit)."""
    result = [rss(server), rss(server)]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                result[1] = max(result[1], rss(server))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sample())
    try:
        yield result
    finally:
        stop.set()
        await task


class RawPeer:
    """A bare WebSocket peer, no automerge client behind it, that reads what it is sent.

    Reading matters: a peer that does not read stops seeing pongs and close
    frames once its receive buffer is full.
    """

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.server_id = ""
        self.errors: list[str] = []
        self.stalled = False
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    msg = decode(frame)
                    if isinstance(msg, Error):
                        self.errors.append(msg.message)

    def request(self, doc_id: str, data: bytes) -> bytes:
        """A ``request`` for ``doc_id`` from this peer to the server."""
        return encode(Request(self.name, self.server_id, doc_id, data))

    def sync(self, doc_id: str, data: bytes) -> bytes:
        """A ``sync`` for ``doc_id`` from this peer to the server."""
        return encode(Sync(self.name, self.server_id, doc_id, data))

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame)

    async def settled(self) -> None:
        """Return once the server has read everything sent so far (a ping's pong)."""
        await asyncio.wait_for(await self.ws.ping(), 30)

    def stall(self) -> None:
        """Stop reading, as a peer on a dead or hostile link does."""
        self.stalled = True
        self.ws.transport.pause_reading()

    async def refusal(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the server to close; return the close code and its last `error` text."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        assert self.ws.close_code is not None, "the server did not close the connection"
        return self.ws.close_code, self.errors[-1] if self.errors else ""


@contextlib.asynccontextmanager
async def raw_peer(url: str, name: str = "mallory", *, join: bool = True) -> AsyncIterator[RawPeer]:
    """A :class:`RawPeer` that has joined (unless ``join`` is False)."""
    async with connect(url, max_size=None, compression=None) as ws:
        peer = RawPeer(ws, name)
        if join:
            await ws.send(encode(Join(name, peer_metadata=PeerMetadata(is_ephemeral=True))))
            answer = decode(await asyncio.wait_for(ws.recv(), 5))
            peer.server_id = answer.sender_id or ""
        peer._reader = asyncio.create_task(peer._read())
        try:
            yield peer
        finally:
            if peer.stalled:
                ws.transport.abort()  # it would never read the server's close
            await ws.close()
            await peer._reader


async def canary_reads(url: str, doc_id: str) -> None:
    """The official JS client opens the canary and sees its content."""
    async with JSPeer.start(url) as reader:
        found = await reader.find(doc_id)
        assert found["state"] == "ready" and found["doc"] == CANARY


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, str]]:
    """Our server with a canary document a JS client created and the server stored."""
    async with py_sync_server(tmp_path / "data", "--max-message-size", "64MiB") as srv:
        async with JSPeer.start(srv.url) as writer:
            doc_id = (await writer.create(CANARY))["documentId"]
            await writer.wait_synced(doc_id)
        yield srv, doc_id


async def test_a_deflate_bomb_costs_the_server_no_memory(
    server: tuple[ServerProcess, str],
) -> None:
    """256 MiB behind a 255 KiB chunk: refused (1009) with no growth (it was +1 GB)."""
    srv, doc_id = server
    bomb = sync_message([deflate_bomb(256 * MiB)], heads=[b"\1" * 32])
    assert len(bomb) < 300_000
    async with peak_rss(srv) as mem, raw_peer(srv.url) as mallory:
        await mallory.send(mallory.sync(doc_id, bomb))
        code, text = await mallory.refusal()
    assert code == 1009 and "inflates to more than" in text
    assert mem[1] - mem[0] < 20 * MiB, f"grew {(mem[1] - mem[0]) / MiB:.0f} MiB"
    await canary_reads(srv.url, doc_id)


async def test_a_cbor_decode_bomb_costs_no_more_than_its_frame(
    server: tuple[ServerProcess, str],
) -> None:
    """14 MiB of empty maps (15 M Python dicts, ~1 GB, before): refused, memory ~ the frame."""
    srv, doc_id = server
    frame = cbor_map_of_empty_maps(14 * MiB)
    async with peak_rss(srv) as mem, raw_peer(srv.url, join=False) as mallory:
        await mallory.send(frame)
        code, text = await mallory.refusal()
    assert code == 1002 and "CBOR items" in text
    assert mem[1] - mem[0] < 4 * len(frame), f"grew {(mem[1] - mem[0]) / MiB:.0f} MiB"
    await canary_reads(srv.url, doc_id)


async def test_a_mime_tag_is_refused_before_any_parsing(server: tuple[ServerProcess, str]) -> None:
    """CBOR tag 36 (MIME) made cbor2 run the email parser on the loop; now it is refused."""
    srv, doc_id = server
    mime = cbor2.dumps({"type": "join", "senderId": "x", "m": cbor2.CBORTag(36, "x" * MiB)})
    async with raw_peer(srv.url, join=False) as mallory:
        await mallory.send(mime)
        code, text = await mallory.refusal()
    assert code == 1002 and "tags" in text
    await canary_reads(srv.url, doc_id)


async def test_an_idle_connection_holds_no_frame(server: tuple[ServerProcess, str]) -> None:
    """After two 40 MiB messages, an idle connection keeps no copy of them (+80 MB before)."""
    srv, doc_id = server
    other = generate_document_id()
    async with raw_peer(srv.url) as mallory:
        baseline = rss(srv)
        for count in (1, 2):
            big = Ephemeral("mallory", mallory.server_id, other, "s", count, b"\0" * (40 * MiB))
            await mallory.send(encode(big))
        await mallory.settled()
        await asyncio.sleep(0.5)
        held = rss(srv) - baseline
    assert held < 30 * MiB, f"an idle connection holds {held / MiB:.0f} MiB"
    await canary_reads(srv.url, doc_id)


async def test_made_up_heads_leave_no_memory_behind(server: tuple[ServerProcess, str]) -> None:
    """20,000 messages claiming heads that never come, over 5 connections: nothing stays."""
    srv, doc_id = server
    before = rss(srv)
    for round_ in range(5):
        async with raw_peer(srv.url, f"mallory-{round_}") as mallory:
            for _ in range(4000):
                other = generate_document_id()
                await mallory.send(mallory.sync(other, sync_message(heads=[os.urandom(32)])))
            await mallory.settled()
    await asyncio.sleep(0.5)
    grown = rss(srv) - before
    assert grown < 20 * MiB, f"grew {grown / MiB:.0f} MiB (48 MB before the fix)"
    await canary_reads(srv.url, doc_id)


async def test_orphan_changes_go_with_their_sender(server: tuple[ServerProcess, str]) -> None:
    """4 rounds of 5 MiB of changes whose dependency never comes: each round's go with it.

    Freed memory is reused, not returned to the system, so the proof is that
    four rounds cost about what one does (before: +10 MB per round, kept).
    """
    srv, doc_id = server
    async with JSPeer.start(srv.url) as js:
        await js.find(doc_id)
        base = am.Document.load(await js.export(doc_id))
    before = rss(srv)
    for round_ in range(4):
        async with raw_peer(srv.url, f"mallory-{round_}") as mallory:
            first = am.Document().generate_sync_message(am.SyncState()).encode()
            await mallory.send(mallory.request(doc_id, first))
            fork = base.fork()
            heads = base.get_heads()
            with fork.transaction() as tx:
                tx.put(am.ROOT, "never-sent", am.ScalarType.Int, 0)
            for _ in range(50):
                with fork.transaction() as tx:
                    tx.put(am.ROOT, "blob", am.ScalarType.Bytes, os.urandom(100_000))
            changes = fork.get_changes(heads)[1:]  # the first, their dependency, never comes
            for change in changes:
                data = sync_message([bytes(change.raw_bytes)], heads=[change.hash])
                await mallory.send(mallory.sync(doc_id, data))
            await mallory.settled()
        await asyncio.sleep(0.5)
    grown = rss(srv) - before
    assert grown < 16 * MiB, f"{grown / MiB:.0f} MiB stayed after 20 MiB of orphans"
    await canary_reads(srv.url, doc_id)


async def test_readers_that_stall_cannot_grow_the_server(tmp_path: Path) -> None:
    """Ephemeral fan-out to peers that never read: the server-wide budget cuts them off."""
    async with py_sync_server(tmp_path / "data", "--max-queued-bytes", "16MiB") as srv:
        async with JSPeer.start(srv.url) as writer:
            doc_id = (await writer.create(CANARY))["documentId"]
            await writer.wait_synced(doc_id)
        first = am.Document().generate_sync_message(am.SyncState()).encode()
        async with contextlib.AsyncExitStack() as stack:
            stalled = []
            for i in range(4):
                slow = await stack.enter_async_context(raw_peer(srv.url, f"slow-{i}"))
                await slow.send(slow.request(doc_id, first))
                await slow.settled()
                stalled.append(slow)
            for slow in stalled:
                slow.stall()
            loud = await stack.enter_async_context(raw_peer(srv.url, "loud"))
            await loud.send(loud.request(doc_id, first))
            async with peak_rss(srv) as mem:
                for count in range(1, 60):
                    blob = b"\0" * MiB
                    relay = Ephemeral("loud", loud.server_id, doc_id, "s", count, blob)
                    await loud.send(encode(relay))
                await loud.settled()
            grown = mem[1] - mem[0]
            assert grown < 80 * MiB, f"grew {grown / MiB:.0f} MiB for 236 MiB of fan-out"
        assert any(line for line in srv.logs().splitlines() if "max_queued_bytes" in line)
        await canary_reads(srv.url, doc_id)


async def test_connections_beyond_the_limit_are_refused_with_503(tmp_path: Path) -> None:
    """--max-connections 2: a third connection gets HTTP 503 before the upgrade."""
    async with py_sync_server(tmp_path / "data", "--max-connections", "2") as srv:
        async with raw_peer(srv.url, "a"), raw_peer(srv.url, "b"):
            with pytest.raises(InvalidStatus) as refused:
                async with raw_peer(srv.url, "c"):
                    pass
            assert refused.value.response.status_code == 503
        async with raw_peer(srv.url, "d"):
            pass  # room again once they left


async def test_the_canary_survives_every_attack_and_a_restart(tmp_path: Path) -> None:
    """All the attacks above in a row, then a restart: the JS client still reads the canary."""
    data = tmp_path / "data"
    async with py_sync_server(data) as srv:
        async with JSPeer.start(srv.url) as writer:
            doc_id = (await writer.create(CANARY))["documentId"]
            await writer.wait_synced(doc_id)
        bloom = b"\x01\x0a\x80\x80\x80\x80\x0f\0\0"  # 2**32 - 1 probes
        attacks: list[Callable[[RawPeer], bytes]] = [
            lambda p: p.sync(doc_id, sync_message([deflate_bomb(64 * MiB)], heads=[b"\1" * 32])),
            lambda p: cbor_map_of_empty_maps(1 * MiB),
            lambda p: p.sync(doc_id, sync_message(bloom=bloom)),
            lambda p: p.sync(doc_id, b"\x42\x05garbage"),
            lambda p: encode(Request("someone-else", p.server_id, doc_id, b"\x42\0\0\0\0")),
        ]
        for attack in attacks:
            async with raw_peer(srv.url) as mallory:
                await mallory.send(attack(mallory))
                code, _ = await mallory.refusal()
                assert code in (1002, 1008, 1009)
        await canary_reads(srv.url, doc_id)
    async with py_sync_server(data) as srv:
        await canary_reads(srv.url, doc_id)


class DroppingProxy:
    """A TCP relay whose client side can be dropped while the server side stays open.

    That is what a lost network link looks like to the server: its socket is
    still open, nothing comes back, not even a pong.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for client, upstream, _ in self._links:
            client.close()
            upstream.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        alive = [True]
        self._links.append((writer, up_writer, alive))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if not alive[0]:
                        return  # dropped: swallow everything, answer nothing
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def drop_client_sides(self) -> None:
        """Cut every client connection; keep the server-side sockets open and silent."""
        for client, _, alive in self._links:
            alive[0] = False
            client.transport.abort()


async def test_a_js_client_back_after_a_dropped_socket_takes_its_peer_id_back(
    server: tuple[ServerProcess, str],
) -> None:
    """The old socket looks alive but does not answer the ping: the reconnect replaces it."""
    srv, doc_id = server
    port = int(srv.url.rsplit(":", 1)[1])
    async with DroppingProxy(port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}"
        async with (
            JSPeer.start(url, retry_interval_ms=200) as roamer,
            JSPeer.start(srv.url) as home,
        ):
            await roamer.find(doc_id)
            await home.find(doc_id)
            proxy.drop_client_sides()
            await roamer.wait_event("peer-disconnected", timeout=10)
            await roamer.wait_event("peer", timeout=15)  # after the server's 2 s probe
            await roamer.change(doc_id, [Op.set("title", "after the drop")])
            seen = await home.wait_for(doc_id, path="title", equals="after the drop", timeout=10)
            assert seen["doc"]["title"] == "after the drop"
    log = srv.logs().splitlines()
    assert any("reconnected: closing its old connection" in line for line in log)


async def test_a_live_js_clients_peer_id_cannot_be_stolen(
    server: tuple[ServerProcess, str],
) -> None:
    """A second join with a connected JS client's peer id is refused; the client carries on."""
    srv, doc_id = server
    async with JSPeer.start(srv.url) as victim, JSPeer.start(srv.url) as friend:
        await victim.find(doc_id)
        await friend.find(doc_id)
        async with raw_peer(srv.url, join=False) as thief:
            await thief.send(encode(Join(victim.peer_id, peer_metadata=PeerMetadata())))
            code, text = await thief.refusal()
        assert code == 1008 and text == "peer id in use"
        await victim.change(doc_id, [Op.set("title", "still mine")])
        seen = await friend.wait_for(doc_id, path="title", equals="still mine", timeout=10)
        assert seen["doc"]["title"] == "still mine"


async def test_every_kind_of_js_edit_passes_the_checks(server: tuple[ServerProcess, str]) -> None:
    """What the official client writes (text, marks, counters, lists, nesting, every scalar,
    concurrent authors) is never refused: the checks only stop what JS would not write."""
    srv, _ = server
    when = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)
    async with JSPeer.start(srv.url) as a, JSPeer.start(srv.url) as b:
        start = {"text": "hello wörld 🙂", "list": [1, 2, 3], "map": {"x": {"y": [True]}}}
        doc_id = (await a.create(start))["documentId"]
        await a.wait_synced(doc_id)
        await b.find(doc_id)
        rounds = [
            [Op.splice("text", 6, 5, "world"), Op.mark("text", 0, 5, "bold", True)],
            [Op.counter("hits", 10), Op.push("list", 4, "five", None, 6.5, False)],
            [Op.increment("hits", 5), Op.increment("hits", -2), Op.delete(["list", 0])],
            [Op.set("bytes", b"\0\1\2"), Op.set("when", when), Op.set("big", 2**53 - 1)],
            [Op.set(["map", "x", "y", 0], False), Op.set(["map", "z"], {"deep": [[1]]})],
            [Op.mark("text", 2, 8, "link", "https://example.org"), Op.unmark("text", 0, 3, "bold")],
            [Op.splice("text", 0, 0, "€" * 50), Op.delete("big"), Op.set("list", [9])],
        ]
        for i, ops in enumerate(rounds):
            # b's edit is concurrent with a's: the server merges both authors.
            await asyncio.gather(
                a.change(doc_id, ops), b.change(doc_id, [Op.set(f"concurrent{i}", i)])
            )
        for peer in (a, b):
            await peer.wait_synced(doc_id)
        fetched = await fetch(srv.url, doc_id)
        assert js_value(fetched.to_py()) == await a.doc(doc_id)
        am.Document.load(fetched.core.save())
    refused = [line for line in srv.logs().splitlines() if "refused changes" in line]
    assert not refused, refused
