"""The official JavaScript automerge-repo client against our server (protocol.md §10)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from jspeer import JSPeer, Op
from servers import ServerProcess, js_sync_server, make_tls_files, py_sync_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from autosync_jupyter import SyncServer
from autosync_jupyter.ids import generate_document_id


def server_storage_ids(peers: dict[str, Any]) -> set[str | None]:
    """The storage ids a JS peer's connected peers (the server) advertised."""
    return {meta.get("storageId") for meta in peers["metadata"].values()}


@pytest.fixture
async def py_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """Our server (`python -m autosync_jupyter serve`) with a data directory."""
    async with py_sync_server(tmp_path / "py-data") as server:
        yield server


async def test_document_created_by_one_js_repo_is_found_by_another(
    py_server: ServerProcess,
) -> None:
    """A JS repo creates a document; a second JS repo finds it with its content."""
    async with JSPeer.start(py_server.url) as alice, JSPeer.start(py_server.url) as bob:
        created = await alice.create({"title": "hello", "items": [1, 2], "nested": {"a": True}})
        found = await bob.find(created["documentId"], timeout=10)
        assert found["state"] == "ready", found
        assert found["doc"] == {"title": "hello", "items": [1, 2], "nested": {"a": True}}


async def test_three_js_repos_editing_concurrently_converge(py_server: ServerProcess) -> None:
    """Three JS repos edit one document concurrently (text, counter, lists) and converge."""
    async with (
        JSPeer.start(py_server.url) as a,
        JSPeer.start(py_server.url) as b,
        JSPeer.start(py_server.url) as c,
    ):
        created = await a.create({"text": "", "items": []})
        doc_id = created["documentId"]
        await a.change(doc_id, [Op.counter("hits", 0)])
        for peer in (b, c):
            assert (await peer.find(doc_id))["state"] == "ready"

        async def edits(peer: JSPeer, name: str) -> None:
            for i in range(15):
                await peer.change(
                    doc_id,
                    [
                        Op.splice("text", 0, 0, name),
                        Op.push("items", f"{name}{i}"),
                        Op.increment("hits", 1),
                        Op.set(name, i),
                    ],
                )

        await asyncio.gather(edits(a, "a"), edits(b, "b"), edits(c, "c"))
        heads = await a.heads(doc_id)
        for _ in range(3):  # each peer may still be receiving the others' last changes
            for peer in (a, b, c):
                heads = sorted(set(heads) | set(await peer.heads(doc_id)))
        final = [await p.wait_for(doc_id, path="hits", equals=45, timeout=15) for p in (a, b, c)]
        docs = [f["doc"] for f in final]
        assert docs[0] == docs[1] == docs[2]
        assert len(docs[0]["items"]) == 45 and len(docs[0]["text"]) == 45
        assert {docs[0]["a"], docs[0]["b"], docs[0]["c"]} == {14}


async def test_ephemeral_reaches_each_other_peer_exactly_once(py_server: ServerProcess) -> None:
    """A JS broadcast reaches both other JS peers of the document once, and not the author."""
    async with (
        JSPeer.start(py_server.url) as a,
        JSPeer.start(py_server.url) as b,
        JSPeer.start(py_server.url) as c,
    ):
        doc_id = (await a.create({"x": 1}))["documentId"]
        await a.wait_synced(doc_id)  # else a find can overtake it
        for peer in (b, c):
            assert (await peer.find(doc_id))["state"] == "ready"
        await a.broadcast(doc_id, {"cursor": 7})
        for peer in (b, c):
            await peer.wait_event("ephemeral", timeout=5)
        await asyncio.sleep(0.3)  # time for any duplicate to arrive
        for peer in (b, c):
            got = await peer.events()
            assert [(e["senderId"], e["message"]) for e in got] == [(a.peer_id, {"cursor": 7})]
            # A JS repo echoes what it receives to its other peers (the
            # server): that echo is dropped, the peer stays connected.
            assert (await peer.peers())["peers"] != []
        assert await a.events() == []


async def test_find_unknown_is_unavailable_promptly_then_pushed(py_server: ServerProcess) -> None:
    """find() of an unknown id is unavailable within a second; when it arrives it is pushed."""
    async with JSPeer.start(py_server.url) as alice, JSPeer.start(py_server.url) as bob:
        doc_id = generate_document_id()
        result = await bob.find(doc_id, timeout=10)
        assert result["state"] == "unavailable", result
        assert result["elapsed_ms"] < 1000, result
        source = await alice.create({"late": True})
        await alice.import_doc(await alice.export(source["documentId"]), doc_id)
        ready = await bob.wait_for(doc_id, state="ready", timeout=10)
        assert ready["doc"] == {"late": True}


async def test_reconnecting_peer_resumes(py_server: ServerProcess) -> None:
    """A JS peer that drops and reconnects (same peer id) keeps syncing both ways."""
    async with JSPeer.start(py_server.url) as alice, JSPeer.start(py_server.url) as bob:
        doc_id = (await alice.create({"n": 0}))["documentId"]
        await alice.wait_synced(doc_id)  # else a find can overtake it
        assert (await bob.find(doc_id))["state"] == "ready"
        await bob.disconnect()
        await alice.change(doc_id, [Op.set("n", 1)])
        await bob.reconnect()
        await bob.wait_for(doc_id, path="n", equals=1)
        await bob.change(doc_id, [Op.set("m", 2)])
        await alice.wait_for(doc_id, path="m", equals=2)


async def test_restart_keeps_documents_and_storage_id(tmp_path: Path) -> None:
    """After a restart the server has the same storage id and serves earlier documents."""
    data = tmp_path / "py-data"
    async with py_sync_server(data) as server, JSPeer.start(server.url) as alice:
        doc_id = (await alice.create({"kept": [1, 2, 3]}))["documentId"]
        await alice.wait_synced(doc_id)
        first = await alice.peers()
    async with py_sync_server(data) as server, JSPeer.start(server.url) as bob:
        found = await bob.find(doc_id)
        assert found["state"] == "ready" and found["doc"] == {"kept": [1, 2, 3]}
        second = await bob.peers()
    storage_ids = [server_storage_ids(info) for info in (first, second)]
    assert storage_ids[0] == storage_ids[1] and None not in storage_ids[0]


async def test_share_request_withholds_documents(tmp_path: Path) -> None:
    """Default policy: a new JS peer is sent no document it did not ask for."""
    async with py_sync_server(tmp_path / "d") as server, JSPeer.start(server.url) as alice:
        doc_id = (await alice.create({"secret": 1}))["documentId"]
        await alice.wait_synced(doc_id)
        async with JSPeer.start(server.url, trace=True) as bob:
            await asyncio.sleep(0.5)
            received = [
                e["msg"] for e in bob.events_of("wire") if e["msg"]["senderId"] != bob.peer_id
            ]
            assert [m["type"] for m in received] == ["peer"]


async def test_share_announce_pushes_documents(tmp_path: Path) -> None:
    """announce: a JS peer receives stored documents after joining, without asking."""
    async with (
        py_sync_server(tmp_path / "d", "--share", "announce") as server,
        JSPeer.start(server.url) as alice,
    ):
        doc_id = (await alice.create({"shared": 1}))["documentId"]
        await alice.wait_synced(doc_id)
        async with JSPeer.start(server.url, trace=True) as bob:
            event = await bob.wait_event(
                "wire", lambda e: e["msg"].get("documentId") == doc_id, timeout=5
            )
            assert event["msg"]["type"] == "sync"


async def test_share_deny_refuses_everything(tmp_path: Path) -> None:
    """deny: find() is unavailable and a new document is not stored."""
    data = tmp_path / "d"
    async with (
        py_sync_server(data, "--share", "deny") as server,
        JSPeer.start(server.url) as alice,
        JSPeer.start(server.url) as bob,
    ):
        doc_id = (await alice.create({"x": 1}))["documentId"]
        await asyncio.sleep(0.3)
        assert (await bob.find(doc_id, timeout=5))["state"] == "unavailable"
    assert not (data / doc_id[:2]).exists()


async def test_wss_with_self_signed_certificate(tmp_path: Path) -> None:
    """JS peers sync through `wss://` with a certificate they were told to trust."""
    tls = make_tls_files(tmp_path / "tls")
    async with py_sync_server(
        tmp_path / "d", "--cert", str(tls.cert), "--key", str(tls.key)
    ) as server:
        assert server.url.startswith("wss://")
        async with (
            JSPeer.start(server.url, ca_file=tls.ca) as alice,
            JSPeer.start(server.url, ca_file=tls.ca) as bob,
        ):
            doc_id = (await alice.create({"tls": True}))["documentId"]
            await alice.wait_synced(doc_id)  # else a find can overtake it
            assert (await bob.find(doc_id))["doc"] == {"tls": True}


async def test_server_side_document_is_announced(tmp_path: Path) -> None:
    """announce: a document made with `autosync create` is pushed to a JS peer on join."""
    data = tmp_path / "d"
    proc = await asyncio.create_subprocess_exec(
        "python3",
        "-m",
        "autosync_jupyter",
        "create",
        "--data-dir",
        str(data),
        '{"made": "cli"}',
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    doc_id = out.decode().strip().removeprefix("automerge:")
    async with (
        py_sync_server(data, "--share", "announce") as server,
        JSPeer.start(server.url, trace=True) as bob,
    ):
        await bob.wait_event("wire", lambda e: e["msg"].get("documentId") == doc_id, timeout=5)
        ready = await bob.wait_for(doc_id, state="ready", timeout=5)
        assert ready["doc"] == {"made": "cli"}


async def test_js_sync_server_data_directory_is_served(tmp_path: Path) -> None:
    """A data directory written by the official JS sync server is served by ours."""
    data = tmp_path / "amrg"
    async with js_sync_server(data) as js, JSPeer.start(js.url) as alice:
        doc_id = (await alice.create({"from": "js"}))["documentId"]
        await alice.change(doc_id, [Op.set("more", [1, 2])])
        await alice.wait_synced(doc_id)
        js_storage_ids = server_storage_ids(await alice.peers())
    async with py_sync_server(data) as ours, JSPeer.start(ours.url) as bob:
        found = await bob.find(doc_id)
        assert found["state"] == "ready" and found["doc"] == {"from": "js", "more": [1, 2]}
        assert server_storage_ids(await bob.peers()) == js_storage_ids


HOSTILE_FRAMES = {
    "malformed CBOR": bytes.fromhex("9b0000000100000000"),
    "not a map": b"\x05",
    "wrong types": cbor2.dumps({"type": "join", "senderId": 42}),
    "missing fields": cbor2.dumps({"type": "request", "senderId": "evil"}),
    "unsupported version": cbor2.dumps(
        {"type": "join", "senderId": "evil", "supportedProtocolVersions": ["2"]}
    ),
}


async def hostile_connection(url: str, frames: list[bytes | str]) -> int | None:
    """Send frames on a fresh connection; return the close code the server chose."""
    async with connect(url, max_size=None, close_timeout=1) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def test_hostile_input_does_not_disturb_js_peers(tmp_path: Path) -> None:
    """Each hostile connection is closed alone while two JS peers keep syncing."""
    data = tmp_path / "d"
    async with (
        py_sync_server(data, "--max-message-size", str(64 * 1024)) as server,
        JSPeer.start(server.url) as alice,
        JSPeer.start(server.url) as bob,
    ):
        doc_id = (await alice.create({"n": 0}))["documentId"]
        await alice.wait_synced(doc_id)  # else a find can overtake it
        assert (await bob.find(doc_id))["state"] == "ready"
        join = cbor2.dumps({"type": "join", "senderId": "evil"})
        cases: dict[str, list[bytes | str]] = {k: [v] for k, v in HOSTILE_FRAMES.items()}
        cases["before join"] = [
            cbor2.dumps(
                {
                    "type": "request",
                    "senderId": "evil",
                    "targetId": "x",
                    "documentId": doc_id,
                    "data": b"B\x00",
                }
            )
        ]
        # The last character changed breaks the checksum (unchanged it is the real id).
        bad_checksum = doc_id[:-1] + ("y" if doc_id.endswith("z") else "z")
        for bad_id in ("../../etc", "!!!invalid!!!", "", "1" * 500, bad_checksum):
            cases[f"id {bad_id[:12]!r}"] = [
                join,
                cbor2.dumps(
                    {
                        "type": "request",
                        "senderId": "evil",
                        "targetId": "x",
                        "documentId": bad_id,
                        "data": b"B\x00",
                    }
                ),
            ]
        cases["text frame"] = [join, "hello"]
        # Just over the limit: the whole frame fits in the socket buffers, so
        # the client always finishes sending and then reads the close frame.
        cases["oversized frame"] = [join, b"\x00" * (64 * 1024 + 100)]
        codes = {}
        for name, frames in cases.items():
            codes[name] = await hostile_connection(server.url, frames)
            await alice.change(doc_id, [Op.set("n", len(codes))])
            await bob.wait_for(doc_id, path="n", equals=len(codes))
        assert codes["text frame"] == 1003 and codes["oversized frame"] == 1009
        assert all(code in (1002, 1003, 1009) for code in codes.values()), codes

        # A reconnect storm with one peer id leaves the server serving everyone.
        async def storm(i: int) -> None:
            async with connect(server.url, close_timeout=1) as ws:
                await ws.send(cbor2.dumps({"type": "join", "senderId": "stormy"}))
                with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 5)

        await asyncio.gather(*(storm(i) for i in range(50)))
        await alice.change(doc_id, [Op.set("after", "storm")])
        await bob.wait_for(doc_id, path="after", equals="storm")
    # Nothing hostile reached the file system.
    names = {p.name for p in data.iterdir()}
    assert names <= {doc_id[:2], "st", ".lock", ".corrupt"}, names


async def test_document_created_in_process_is_announced_live(tmp_path: Path) -> None:
    """announce: `SyncServer.create_document` reaches an already connected JS peer."""
    async with (
        SyncServer(port=0, data_dir=tmp_path / "d", share="announce") as server,
        JSPeer.start(server.url, trace=True) as bob,
    ):
        doc_id = await server.create_document({"made": "in-process", "list": [1]})
        await bob.wait_event("wire", lambda e: e["msg"].get("documentId") == doc_id, timeout=5)
        ready = await bob.wait_for(doc_id, state="ready", timeout=5)
        assert ready["doc"] == {"made": "in-process", "list": [1]}
        await bob.change(doc_id, [Op.push("list", 2)])
        for _ in range(50):
            if (await server.read_document(doc_id))["list"] == [1, 2]:
                break
            await asyncio.sleep(0.05)
        assert (await server.read_document(doc_id))["list"] == [1, 2]
