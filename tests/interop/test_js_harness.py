"""Prove the interop harness against the official JS sync server.

These tests run only JavaScript (official server, official clients); they pin
down the behaviour our Python server must reproduce and show the harness works
before it is pointed at our server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jspeer import JSPeer, Op
from servers import ServerProcess, js_sync_server, make_tls_files

from autosync_jupyter.ids import generate_document_id

pytestmark = pytest.mark.interop


async def test_document_created_by_one_peer_is_found_by_another(js_server: ServerProcess) -> None:
    """A doc created by one JS peer is found, with its content, by a second one via the server."""
    async with JSPeer.start(js_server.url) as alice, JSPeer.start(js_server.url) as bob:
        created = await alice.create({"title": "hello", "items": [1, 2], "n": 3})
        doc_id = created["documentId"]

        found = await bob.find(doc_id, timeout=10)
        assert found["state"] == "ready", found
        assert found["doc"] == {"title": "hello", "items": [1, 2], "n": 3}

        # Both directions keep syncing: text splice, counters and list pushes.
        await bob.change(
            doc_id,
            [Op.splice("title", 5, 0, " world"), Op.counter("hits", 1), Op.push("items", 3)],
        )
        await bob.change(doc_id, [Op.increment("hits", 41)])
        await alice.wait_for(doc_id, path="hits", equals=42)
        snapshot = await alice.wait_for(doc_id, heads=await bob.heads(doc_id))
        assert snapshot["doc"] == {"title": "hello world", "items": [1, 2, 3], "n": 3, "hits": 42}
        # Failures the library swallows (console.log) or throws from callbacks.
        for peer in (alice, bob):
            assert not peer.events_of("library-log") + peer.events_of("error"), peer.stderr_tail()


async def test_find_unknown_document_is_unavailable_promptly(js_server: ServerProcess) -> None:
    """find() of an unknown id settles as unavailable: request -> sync + doc-unavailable."""
    async with JSPeer.start(js_server.url, trace=True) as peer:
        doc_id = generate_document_id()
        result = await peer.find(doc_id, timeout=10)
        assert result["state"] == "unavailable", result
        # Measured ~15 ms on loopback; anything near the 1 s adapter timeout or
        # the 60 s handle timeout would mean the server never answered.
        assert result["elapsed_ms"] < 1000, result

        wire = [e["msg"] for e in peer.events_of("wire") if e["msg"].get("documentId") == doc_id]
        sent = [(m["type"]) for m in wire if m["senderId"] == peer.peer_id]
        received = [m["type"] for m in wire if m["senderId"] != peer.peer_id]
        assert sent[0] == "request", wire
        assert "doc-unavailable" in received, wire


async def test_late_arrival_turns_unavailable_into_ready(js_server: ServerProcess) -> None:
    """A doc imported with a chosen id after a failed find is pushed to the earlier requester."""
    async with JSPeer.start(js_server.url) as alice, JSPeer.start(js_server.url) as bob:
        source = await alice.create({"late": True})
        binary = await alice.export(source["documentId"])

        doc_id = generate_document_id()
        assert (await bob.find(doc_id, timeout=10))["state"] == "unavailable"

        imported = await alice.import_doc(binary, doc_id)
        assert imported["documentId"] == doc_id
        assert imported["doc"] == {"late": True}

        ready = await bob.wait_for(doc_id, state="ready", timeout=10)
        assert ready["doc"] == {"late": True}


async def test_ephemeral_broadcast_reaches_the_other_peer(js_server: ServerProcess) -> None:
    """handle.broadcast() reaches the other peer of the doc, with the author's senderId."""
    async with JSPeer.start(js_server.url) as alice, JSPeer.start(js_server.url) as bob:
        doc_id = (await alice.create({"x": 0}))["documentId"]
        await alice.wait_synced(doc_id)  # else a find can overtake it
        assert (await bob.find(doc_id))["state"] == "ready"

        await alice.broadcast(doc_id, {"cursor": 7, "blob": b"\x00\x01"})
        event = await bob.wait_event("ephemeral", lambda e: e["documentId"] == doc_id)
        assert event["senderId"] == alice.peer_id
        assert event["message"] == {"cursor": 7, "blob": {"$bytes": "AAE="}}
        assert [e["message"] for e in await bob.events()] == [event["message"]]
        assert await alice.events() == []


async def test_documents_survive_a_server_restart(tmp_path: Path) -> None:
    """The JS server stops cleanly on SIGTERM with its documents flushed to its data dir."""
    data_dir = tmp_path / "data"
    async with js_sync_server(data_dir) as server, JSPeer.start(server.url) as alice:
        doc_id = (await alice.create({"kept": "yes"}))["documentId"]
        heads = await alice.heads(doc_id)
        # The server confirms it holds these heads before we stop it.
        await alice.wait_synced(doc_id)
        info = await alice.sync_info(doc_id)
        assert info["lastHeads"] == heads, info

    async with js_sync_server(data_dir) as server, JSPeer.start(server.url) as bob:
        found = await bob.find(doc_id)
        assert found["state"] == "ready", found
        assert found["doc"] == {"kept": "yes"}
        assert found["heads"] == heads


async def test_wss_server_and_client(tmp_path: Path) -> None:
    """The JS server serves wss:// with a test CA that the JS client is told to trust."""
    tls = make_tls_files(tmp_path / "tls")
    async with js_sync_server(tmp_path / "data", tls=tls) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        async with (
            JSPeer.start(server.url, ca_file=tls.ca) as alice,
            JSPeer.start(server.url, ca_file=tls.ca) as bob,
        ):
            doc_id = (await alice.create({"secure": True}))["documentId"]
            await alice.wait_synced(doc_id)  # else a find can overtake it
            found = await bob.find(doc_id)
            assert found["state"] == "ready"
            assert found["doc"] == {"secure": True}


async def test_reconnect_catches_up_on_missed_changes(js_server: ServerProcess) -> None:
    """A peer that disconnects, misses changes and reconnects (same peer id) catches up."""
    async with JSPeer.start(js_server.url) as alice, JSPeer.start(js_server.url) as bob:
        doc_id = (await alice.create({"n": 0}))["documentId"]
        await alice.wait_synced(doc_id)  # else a find can overtake it
        assert (await bob.find(doc_id))["state"] == "ready"

        await bob.disconnect()
        await bob.wait_event("peer-disconnected")
        heads = await alice.change(doc_id, [Op.set("n", 1)])
        await alice.wait_synced(doc_id)

        mark = bob.event_count
        await bob.reconnect()
        assert (await bob.peers())["peers"], "bob is not connected after reconnect"
        assert bob.events_of("peer", since=mark)
        await bob.wait_for(doc_id, heads=heads)
        assert await bob.doc(doc_id) == {"n": 1}
