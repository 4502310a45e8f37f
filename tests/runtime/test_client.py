"""`fetch` and `connect` against our in-process `SyncServer` over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import automerge.core as am
import pytest
from waiting import eventually
from websockets.asyncio.server import ServerConnection, serve

from autosync_jupyter import SyncServer
from autosync_jupyter.auth.tls import (
    client_ssl_context,
    make_self_signed_certificate,
    server_ssl_context,
)
from autosync_jupyter.cli import main
from autosync_jupyter.core.protocol import (
    DocUnavailable,
    Error,
    Peer,
    Request,
    Sync,
    decode,
    encode,
)
from autosync_jupyter.crdt.document import ChangeEvent
from autosync_jupyter.errors import (
    ConnectionFailed,
    DocumentUnavailable,
    ProtocolError,
    ServerError,
    SyncTimeout,
)
from autosync_jupyter.ids import (
    PeerId,
    document_url,
    generate_document_id,
    interpret_as_document_id,
)
from autosync_jupyter.runtime.blocking import connect_blocking
from autosync_jupyter.runtime.client import fetch, fetch_blocking
from autosync_jupyter.runtime.connection import Connection, connect

CONTENT = {"title": "hello", "items": [1, 2.5, "three", {"four": [4]}], "flag": True, "none": None}
# Reconnect quickly in tests (the defaults are 0.25 s up to 15 s).
MIN_BACKOFF, MAX_BACKOFF = 0.02, 0.1


@pytest.fixture
async def server() -> AsyncIterator[SyncServer]:
    """Our server on a free port, documents in memory."""
    async with SyncServer(port=0, data_dir=None) as running:
        yield running


eventually = functools.partial(eventually, timeout=5.0)


@asynccontextmanager
async def fake_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[str]:
    """A WebSocket server that behaves as ``handler`` says; yields its URL."""
    async with serve(handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


def set_n(root: Any, n: int) -> None:
    """An edit for ``server.change_document``: set ``n``."""
    root["n"] = n


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- fetch ---------------------------------------------------------------------------


async def test_fetch_returns_a_server_document(server: SyncServer) -> None:
    """fetch returns the content of a document the server holds."""
    doc_id = await server.create_document(CONTENT)
    doc = await fetch(server.url, doc_id)
    assert doc.to_py() == CONTENT


async def test_fetch_accepts_urls_and_legacy_uuids(server: SyncServer) -> None:
    """An automerge: URL and a legacy UUID string name the same document as its id."""
    uuid_text = "a6a0b1f0-6a4c-4b6e-9a4f-0c5e2d3c1b2a"
    doc_id = await server.create_document({"n": 1}, doc_id=interpret_as_document_id(uuid_text))
    assert (await fetch(server.url, document_url(doc_id))).to_py() == {"n": 1}
    assert (await fetch(server.url, uuid_text)).to_py() == {"n": 1}


async def test_fetch_unknown_id_is_unavailable_promptly(server: SyncServer) -> None:
    """An id the server does not hold raises DocumentUnavailable well within a second."""
    started = time.monotonic()
    with pytest.raises(DocumentUnavailable, match="unavailable") as info:
        await fetch(server.url, generate_document_id())
    assert time.monotonic() - started < 1.0
    assert info.value.document_id


async def test_fetch_small_document_is_fast(server: SyncServer) -> None:
    """A small document comes back in milliseconds: completion is detected, not waited for."""
    doc_id = await server.create_document(CONTENT)
    await fetch(server.url, doc_id)  # warm up
    times = []
    for _ in range(10):
        started = time.perf_counter()
        await fetch(server.url, doc_id)
        times.append(time.perf_counter() - started)
    assert statistics.median(times) < 1.0  # generous: a quiet period would be seconds


@pytest.fixture
async def auto_creating_server() -> AsyncIterator[SyncServer]:
    """Our server in R mode: a request for an unknown id creates an empty document."""
    async with SyncServer(port=0, data_dir=None, create_on_request=True) as running:
        yield running


async def test_fetch_of_an_empty_answer_is_unavailable(auto_creating_server: SyncServer) -> None:
    """A server answering an unknown id with an empty document (R's auto-create) makes
    fetch raise DocumentUnavailable saying so, within about a second, not return {}."""
    doc_id = generate_document_id()
    started = time.monotonic()
    with pytest.raises(DocumentUnavailable, match="answered with an empty document") as info:
        await fetch(auto_creating_server.url, doc_id, timeout=5)
    assert time.monotonic() - started < 1.5
    assert info.value.document_id == doc_id
    assert "allow_empty=True" in str(info.value) and "--allow-empty" in str(info.value)


async def test_fetch_with_allow_empty_returns_the_empty_document(
    auto_creating_server: SyncServer,
) -> None:
    """allow_empty=True takes the auto-created empty document (fetch and fetch_blocking)."""
    url = auto_creating_server.url
    doc = await fetch(url, generate_document_id(), timeout=5, allow_empty=True)
    assert doc.to_py() == {} and not doc.core.get_heads()
    doc = await asyncio.to_thread(
        functools.partial(fetch_blocking, url, generate_document_id(), timeout=5, allow_empty=True)
    )
    assert doc.to_py() == {} and not doc.core.get_heads()


async def test_fetch_of_a_filled_auto_created_document_needs_no_allow_empty(
    auto_creating_server: SyncServer,
) -> None:
    """Once someone wrote to an auto-created document, it is an ordinary document."""
    doc_id = generate_document_id()
    await fetch(auto_creating_server.url, doc_id, timeout=5, allow_empty=True)
    await auto_creating_server.change_document(doc_id, functools.partial(set_n, n=1))
    assert (await fetch(auto_creating_server.url, doc_id, timeout=5)).to_py() == {"n": 1}


async def test_cli_fetch_and_watch_take_allow_empty(
    auto_creating_server: SyncServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`autosync fetch` fails on an empty answer and prints {} with --allow-empty; watch too."""
    url = auto_creating_server.url
    argv = ["fetch", url, generate_document_id(), "--timeout", "5"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "--allow-empty" in capsys.readouterr().err
    argv = ["fetch", url, generate_document_id(), "--allow-empty", "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    assert json.loads(capsys.readouterr().out) == {}
    argv = ["watch", url, generate_document_id(), "--allow-empty", "--count", "0"]
    assert await asyncio.to_thread(main, argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["doc"] == {}


async def test_cli_ls_url_lists_what_a_server_announces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`autosync ls --url` prints the documents a server offers; none from a request-only one."""
    async with SyncServer(port=0, data_dir=None, share="announce") as announcing:
        made = {await announcing.create_document({"n": i}) for i in range(3)}
        argv = ["ls", "--url", announcing.url, "--quiet-time", "0.5"]
        assert await asyncio.to_thread(main, argv) == 0
        printed = capsys.readouterr().out.split()
        assert {url.removeprefix("automerge:") for url in printed} == made
        assert await asyncio.to_thread(main, [*argv, "--json"]) == 0
        assert sorted(json.loads(capsys.readouterr().out).values(), key=str) == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
    async with SyncServer(port=0, data_dir=None) as on_request:
        await on_request.create_document({})
        argv = ["ls", "--url", on_request.url, "--quiet-time", "0.3"]
        assert await asyncio.to_thread(main, argv) == 0
        out = capsys.readouterr()
        assert out.out == "" and "shared no documents" in out.err


async def test_an_empty_answer_then_doc_unavailable_says_the_server_lacks_it() -> None:
    """JS 2.0-2.5 servers send an empty sync and then doc-unavailable: the usual message."""
    empty = am.Document().generate_sync_message(am.SyncState())
    assert empty is not None

    async def handler(ws: ServerConnection) -> None:
        join = decode(await ws.recv())
        await ws.send(encode(Peer(PeerId("srv"), join.sender_id or PeerId("?"))))
        request = decode(await ws.recv())
        assert isinstance(request, Request)
        client, doc_id = request.sender_id, request.document_id
        await ws.send(encode(Sync(PeerId("srv"), client, doc_id, empty.encode())))
        await asyncio.sleep(0.1)
        await ws.send(encode(DocUnavailable(PeerId("srv"), client, doc_id)))
        await ws.wait_closed()

    async with fake_server(handler) as url:
        with pytest.raises(DocumentUnavailable, match="does not have it"):
            await fetch(url, generate_document_id(), timeout=5)


async def test_fetch_reports_a_server_error() -> None:
    """An `error` in answer to join becomes ServerError carrying the server's message."""

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(encode(Error(PeerId("srv"), "Authentication failed")))
        await ws.close()

    async with fake_server(handler) as url:
        with pytest.raises(ServerError, match="Authentication failed") as info:
            await fetch(url, generate_document_id(), timeout=5)
    assert info.value.server_message == "Authentication failed"


async def test_fetch_reports_protocol_violations() -> None:
    """Garbage, or a message other than `peer`, in answer to join raises ProtocolError."""
    not_peer = Sync(PeerId("s"), PeerId("c"), generate_document_id(), b"B")
    replies = [b"\xff\x00garbage", encode(not_peer)]

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(replies.pop(0))
        await ws.wait_closed()

    async with fake_server(handler) as url:
        with pytest.raises(ProtocolError, match="invalid message"):
            await fetch(url, generate_document_id(), timeout=5)
        with pytest.raises(ProtocolError, match="expected a 'peer'"):
            await fetch(url, generate_document_id(), timeout=5)


async def test_fetch_timeout_says_what_it_waited_for() -> None:
    """A server that never answers join makes fetch time out, naming the awaited step."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with fake_server(handler) as url:
        started = time.monotonic()
        with pytest.raises(SyncTimeout, match="answer to join") as info:
            await fetch(url, generate_document_id(), timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 2.0


async def test_fetch_from_nowhere_is_a_connection_error() -> None:
    """A refused connection raises ConnectionFailed naming the URL."""
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed, match=f"cannot connect to {url}"):
        await fetch(url, generate_document_id(), timeout=5)


async def test_fetch_rejects_bad_arguments() -> None:
    """A non-WebSocket URL or an invalid id is a ValueError before any connection."""
    with pytest.raises(ValueError, match="ws:// or wss://"):
        await fetch("http://127.0.0.1:1", generate_document_id())
    with pytest.raises(ValueError, match="invalid document id"):
        await fetch("ws://127.0.0.1:1", "not-an-id!")


async def test_fetch_over_wss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    """wss:// works when the certificate is trusted, and fails clearly when it is not."""
    cert, key = make_self_signed_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    async with SyncServer(port=0, data_dir=None, ssl=server_ssl_context(cert, key)) as server:
        assert server.url.startswith("wss://")
        doc_id = await server.create_document({"secure": True})
        doc = await fetch(server.url, doc_id, ssl=client_ssl_context(cert))
        assert doc.to_py() == {"secure": True}
        with pytest.raises(ConnectionFailed, match="not trusted"):
            await fetch(server.url, doc_id, timeout=5)


async def test_fetch_blocking_from_a_thread(server: SyncServer) -> None:
    """fetch_blocking works from a thread that runs no event loop."""
    doc_id = await server.create_document(CONTENT)
    doc = await asyncio.to_thread(fetch_blocking, server.url, doc_id)
    assert doc.to_py() == CONTENT


async def test_fetch_blocking_refuses_a_running_loop(server: SyncServer) -> None:
    """Inside a running loop fetch_blocking says to await fetch instead."""
    with pytest.raises(RuntimeError, match=r"await fetch\(\.\.\.\)"):
        fetch_blocking(server.url, generate_document_id())


async def test_verbose_logs_steps_and_bytes_but_never_the_token(
    server: SyncServer, caplog: pytest.LogCaptureFixture
) -> None:
    """verbose=True logs the handshake and sync bytes; the bearer token never appears."""
    doc_id = await server.create_document(CONTENT)
    token = "s3cret-t0ken-value"
    await fetch(server.url, doc_id, token=token)
    assert not [r for r in caplog.records if r.name.startswith("autosync_jupyter.client")]
    await fetch(server.url, doc_id, token=token, verbose=True)
    text = caplog.text
    assert "join as py-" in text and f"request {doc_id}" in text
    assert "42 00 00 01" in text  # the request's sync bytes, in hex
    assert f"fetched {doc_id}" in text
    assert token not in text
    assert "Authorization: [redacted]" in text  # websockets' header log, filtered
    assert logging.getLogger("autosync_jupyter.client").level == logging.NOTSET  # restored


# -- connect ---------------------------------------------------------------------------


async def test_live_edits_flow_both_ways(server: SyncServer) -> None:
    """Two connections on one document see each other's edits (callback and iterator)."""
    doc_id = await server.create_document({"n": 0})
    async with connect(server.url) as alice, connect(server.url) as bob:
        a = await alice.open(doc_id)
        b = await bob.open(doc_id)
        assert a.ready and b.doc.to_py() == {"n": 0}
        seen: list[ChangeEvent] = []
        a.on_change(seen.append)
        stream = b.changes()
        with a.doc.change() as d:
            d["n"] = 1
        event = await asyncio.wait_for(anext(stream), 5)
        assert event.origin == "remote" and b.doc.to_py() == {"n": 1}
        with b.doc.change() as d:
            d["from_bob"] = True
        await eventually(lambda: a.doc.to_py() == {"n": 1, "from_bob": True})
        assert [e.origin for e in seen] == ["local", "remote"]


async def test_sync_waits_for_a_change_left_open_across_an_await(server: SyncServer) -> None:
    """Changes arriving while a change block awaits are applied once it ends; both converge."""
    doc_id = await server.create_document({})
    async with connect(server.url) as alice, connect(server.url) as bob:
        a = await alice.open(doc_id)
        b = await bob.open(doc_id)
        with a.doc.change() as d:
            d["alice"] = 1
            with b.doc.change() as e:
                e["bob"] = 2
            await asyncio.sleep(0.2)  # bob's change reaches alice meanwhile
        both = {"alice": 1, "bob": 2}
        await eventually(lambda: a.doc.to_py() == both and b.doc.to_py() == both)
        assert await server.read_document(doc_id) == both


async def test_create_announces_a_new_document(server: SyncServer) -> None:
    """create() uploads a new document with an initial change; others open it by URL."""
    async with connect(server.url) as alice, connect(server.url) as bob:
        made = await alice.create({"title": "new"})
        assert made.url.startswith("automerge:") and made.ready
        assert await server.read_document(made.document_id) == {"title": "new"}
        empty = await alice.create()
        assert empty.doc.core.get_heads()  # announced with a change, never empty
        found = await bob.open(made.url)
        assert found.doc.to_py() == {"title": "new"}


async def test_open_unknown_is_unavailable_and_late_arrival_makes_it_ready(
    server: SyncServer,
) -> None:
    """open() of an unknown id fails promptly; a waiting handle turns ready when it arrives."""
    doc_id = generate_document_id()
    async with connect(server.url) as conn:
        started = time.monotonic()
        with pytest.raises(DocumentUnavailable):
            await conn.open(doc_id)
        assert time.monotonic() - started < 1.0
        handle = await conn.open(doc_id, wait=False)
        await eventually(lambda: handle.state == "unavailable")
        await server.create_document({"late": True}, doc_id=doc_id)
        await handle.when_ready(timeout=5)
        assert handle.doc.to_py() == {"late": True}


async def test_open_of_an_empty_answer_is_unavailable_unless_allowed(
    auto_creating_server: SyncServer,
) -> None:
    """open() raises on an empty answer; with allow_empty the empty document opens ready,
    and what is written to it reaches the server."""
    server = auto_creating_server
    doc_id = generate_document_id()
    async with connect(server.url) as conn:
        started = time.monotonic()
        with pytest.raises(DocumentUnavailable, match="answered with an empty document"):
            await conn.open(doc_id, timeout=5)
        assert time.monotonic() - started < 1.5
        assert doc_id not in conn.handles
        handle = await conn.open(doc_id, timeout=5, allow_empty=True)
        assert handle.state == "ready" and handle.doc.to_py() == {}
        with handle.doc.change() as d:
            d["written"] = "in python"
        await handle.flush(timeout=5)
    assert await server.read_document(doc_id) == {"written": "in python"}
    assert (await fetch(server.url, doc_id)).to_py() == {"written": "in python"}


async def test_reopen_after_an_empty_answer_gets_what_was_written_since(
    auto_creating_server: SyncServer,
) -> None:
    """On the same connection, a second open of an id answered empty still sees
    changes the server got in between (and an empty answer again without them)."""
    server = auto_creating_server
    doc_id = generate_document_id()
    async with connect(server.url) as conn:
        for _ in range(2):
            with pytest.raises(DocumentUnavailable, match="empty document"):
                await conn.open(doc_id, timeout=5)
        empty = await conn.open(doc_id, timeout=5, allow_empty=True)
        await empty.close()
        assert (await conn.open(doc_id, timeout=5, allow_empty=True)).doc.to_py() == {}
        await conn.handles[doc_id].close()
        await server.change_document(doc_id, functools.partial(set_n, n=7))
        handle = await conn.open(doc_id, timeout=5)
        assert handle.doc.to_py() == {"n": 7}


async def test_blocking_open_takes_allow_empty(auto_creating_server: SyncServer) -> None:
    """The blocking connection passes allow_empty through."""
    server = auto_creating_server
    doc_id = generate_document_id()

    def script() -> Any:
        with connect_blocking(server.url, timeout=5) as conn:
            with pytest.raises(DocumentUnavailable):
                conn.open(generate_document_id())
            handle = conn.open(doc_id, allow_empty=True)
            with handle.change() as d:
                d["n"] = 1
            handle.flush(timeout=5)
            return handle.to_py()

    assert await asyncio.to_thread(script) == {"n": 1}
    assert await server.read_document(doc_id) == {"n": 1}


async def test_several_documents_share_one_connection(server: SyncServer) -> None:
    """One connection keeps many documents, each with its own content."""
    ids = [await server.create_document({"i": i}) for i in range(20)]
    async with connect(server.url) as conn:
        handles = await asyncio.gather(*(conn.open(doc_id) for doc_id in ids))
        assert [h.doc.to_py() for h in handles] == [{"i": i} for i in range(20)]
        assert await conn.open(ids[0]) is handles[0]


async def test_close_flushes_local_edits(server: SyncServer) -> None:
    """Edits made just before close() reach the server."""
    doc_id = await server.create_document({"n": 0})
    conn = await connect(server.url)
    handle = await conn.open(doc_id)
    for i in range(1, 30):
        with handle.doc.change() as d:
            d["n"] = i
    await conn.close()
    assert conn.closed and handle.state == "closed"
    assert await server.read_document(doc_id) == {"n": 29}


async def test_handle_close_ends_its_iterators(server: SyncServer) -> None:
    """Closing a handle flushes it and ends `changes()` iterators."""
    doc_id = await server.create_document({"n": 0})
    async with connect(server.url) as conn:
        handle = await conn.open(doc_id)
        stream = handle.changes()
        with handle.doc.change() as d:
            d["n"] = 5
        await handle.close()
        assert [e.origin async for e in stream] == ["local"]
        assert await server.read_document(doc_id) == {"n": 5}
        assert doc_id not in conn.handles


async def test_reconnect_after_restart_keeps_offline_edits(tmp_path: Path) -> None:
    """After a server restart on the same port the client reconnects; offline edits arrive."""
    data = tmp_path / "data"
    first = await SyncServer(port=0, data_dir=data).start()
    port = first.port
    doc_id = await first.create_document({"n": 0})
    conn = await connect(first.url, min_backoff=MIN_BACKOFF, max_backoff=MAX_BACKOFF)
    try:
        handle = await conn.open(doc_id)
        peer_id = conn.peer_id
        await first.close()
        await eventually(lambda: not conn.connected)
        with handle.doc.change() as d:
            d["offline"] = True
        async with SyncServer(port=port, data_dir=data) as second:
            await conn.wait_connected(timeout=5)
            await handle.flush(timeout=5)
            assert await second.read_document(doc_id) == {"n": 0, "offline": True}
            await second.change_document(doc_id, lambda d: d.update(n=1))
            await eventually(lambda: handle.doc.to_py() == {"n": 1, "offline": True})
            assert conn.reconnects == 1 and conn.peer_id == peer_id
            assert [p.peer_id for p in second.peers()] == [peer_id]
    finally:
        await conn.close(flush=False)


async def test_ephemeral_messages_reach_other_peers(server: SyncServer) -> None:
    """broadcast() reaches the other connection's on_ephemeral callback, decoded."""
    doc_id = await server.create_document({})
    async with connect(server.url) as alice, connect(server.url) as bob:
        a = await alice.open(doc_id)
        b = await bob.open(doc_id)
        got: list[tuple[str, Any]] = []
        b.on_ephemeral(lambda sender, payload: got.append((sender, payload)))
        a.broadcast({"cursor": 3})
        await eventually(lambda: got == [(alice.peer_id, {"cursor": 3})])


async def test_connect_failures_are_clear(server: SyncServer) -> None:
    """A refused first connection raises; a closed connection refuses new work."""
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        await connect(f"ws://127.0.0.1:{free_port()}")
    conn: Connection = await connect(server.url)
    await conn.close()
    with pytest.raises(ConnectionFailed, match="closed"):
        await conn.open(generate_document_id())


async def test_an_error_on_reconnect_stops_reconnecting() -> None:
    """A server that answers a reconnect with `error` (e.g. auth) ends the connection for good."""
    attempts: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        join = decode(bytes(await ws.recv(decode=False)))
        attempts.append(1)
        if len(attempts) == 1:
            await ws.send(encode(Peer(PeerId("srv"), join.sender_id or PeerId("?"))))
            await ws.close()  # drop the first connection right after the handshake
        else:
            await ws.send(encode(Error(PeerId("srv"), "Authentication failed")))
            await ws.close()

    async with fake_server(handler) as url:
        conn = await connect(url, min_backoff=MIN_BACKOFF, max_backoff=MAX_BACKOFF)
        assert conn.connected
        await eventually(lambda: len(attempts) == 2)
        await asyncio.sleep(0.3)  # several backoff periods: no further attempts
        assert len(attempts) == 2 and not conn.connected
        with pytest.raises(ServerError, match="Authentication failed"):
            await conn.open(generate_document_id())
        with pytest.raises(ServerError):
            await conn.wait_connected(timeout=5)
        await conn.close()


async def test_connect_blocking_from_a_thread(server: SyncServer) -> None:
    """The blocking connection opens, edits and flushes from a plain thread."""
    doc_id = await server.create_document({"n": 0})

    def script() -> Any:
        with connect_blocking(server.url) as conn:
            handle = conn.open(doc_id)
            with handle.change() as d:
                d["thread"] = threading.current_thread().name
            handle.flush(timeout=5)
            assert handle.wait_for(lambda content: "thread" in content, timeout=5)
            return handle.to_py()

    content = await asyncio.to_thread(script)
    assert content["n"] == 0 and content["thread"]
    assert (await server.read_document(doc_id))["thread"] == content["thread"]


async def test_connect_blocking_refuses_a_running_loop(server: SyncServer) -> None:
    """Inside a running loop connect_blocking says to await connect instead."""
    with pytest.raises(RuntimeError, match=r"await connect\(\.\.\.\)"):
        connect_blocking(server.url)


# -- command line ------------------------------------------------------------------------


async def test_cli_fetch_prints_text_and_json(
    server: SyncServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`autosync fetch` prints readable text by default and JSON with --json."""
    doc_id = await server.create_document({"title": "hi", "raw": b"\x00\x01", "items": [1]})
    assert await asyncio.to_thread(main, ["fetch", server.url, doc_id]) == 0
    text = capsys.readouterr().out
    assert "title: hi" in text and "items:\n  - 1" in text
    assert await asyncio.to_thread(main, ["fetch", server.url, doc_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"title": "hi", "raw": "AAE=", "items": [1]}
    assert await asyncio.to_thread(main, ["fetch", server.url, generate_document_id()]) == 1
    assert "unavailable" in capsys.readouterr().err


async def test_cli_watch_prints_changes(
    server: SyncServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`autosync watch --count 1` prints a snapshot line, then a change line, as JSON."""
    doc_id = await server.create_document({"n": 0})
    watcher = asyncio.ensure_future(
        asyncio.to_thread(main, ["watch", server.url, doc_id, "--count", "1"])
    )
    await eventually(lambda: bool(server.peers()))
    n = 0
    while not watcher.done():  # until the watcher saw one change after its snapshot
        n += 1
        await server.change_document(doc_id, functools.partial(set_n, n=n))
        await asyncio.wait({watcher}, timeout=0.1)
    assert watcher.result() == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "snapshot" and lines[-1]["event"] == "change"
    assert lines[-1]["origin"] == "remote" and lines[-1]["changed"] == ["/n"]
    assert lines[-1]["doc"]["n"] >= 1 and lines[-1]["heads"]


async def test_a_token_in_the_url_never_reaches_error_messages() -> None:
    """Jupyter's hub takes ``?token=``: errors and logs show the URL without it."""
    with pytest.raises(ConnectionFailed) as info:
        await fetch("ws://127.0.0.1:9/autosync/ws?token=s3cret", generate_document_id(), timeout=5)
    assert "s3cret" not in str(info.value) and "token=[redacted]" in str(info.value)
    conn = connect("ws://127.0.0.1:9/?token=s3cret", timeout=2)
    with pytest.raises(ConnectionFailed) as info:
        await conn.start()
    assert "s3cret" not in str(info.value)

    # A refused upgrade, and a server that closes before answering join.
    def refuse(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(HTTPStatus.NOT_FOUND, "no such route\n")

    async def hang_up(ws: ServerConnection) -> None:
        await ws.close(1011, "going")

    for options in ({"handler": hang_up, "process_request": refuse}, {"handler": hang_up}):
        async with serve(host="127.0.0.1", port=0, **options) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/autosync/relay?server=x&token=s3cret"
            with pytest.raises(ConnectionFailed) as info:
                await fetch(url, generate_document_id(), timeout=5)
            assert "s3cret" not in str(info.value) and "token=[redacted]" in str(info.value)
