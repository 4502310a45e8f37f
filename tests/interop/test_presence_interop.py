"""Presence between our client and automerge-repo's own ``Presence`` class (JS 2.5.6).

Runs against the JavaScript sync server and ours (subprocesses): both relay
ephemeral messages, and the presence messages must mean the same to a JS
app and to ``DocHandle.presence``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from jspeer import JSPeer
from servers import ServerProcess, js_sync_server, py_sync_server
from waiting import eventually

from autosync_jupyter.runtime.connection import connect


@pytest.fixture(params=["js", "py"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    start = js_sync_server if request.param == "js" else py_sync_server
    async with start(tmp_path / "data") as running:
        yield running


async def js_sees(
    js: JSPeer, doc_id: str, peer: str, check: Callable[[dict[str, Any] | None], bool]
) -> dict[str, Any] | None:
    """What the JS Presence holds for ``peer`` once ``check`` accepts it (polled)."""
    deadline = time.monotonic() + 10.0
    while True:
        state = (await js.presence_states(doc_id)).get(peer)
        value = None if state is None else state["value"]
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the JS peer holds {value!r} for {peer}")
        await asyncio.sleep(0.05)


async def test_python_and_a_js_presence_see_each_other(server: ServerProcess) -> None:
    async with JSPeer.start(server.url) as js, connect(server.url) as conn:
        doc_id = (await js.create({"rows": [1, 2, 3]}))["documentId"]
        await js.wait_synced(doc_id)
        handle = await conn.open(doc_id)
        await js.presence_start(doc_id, {"name": "Grace", "color": "#3cb44b", "viewing": []})

        # Our snapshot reaches the JS peer: it records us, and answers a
        # stranger with its own state (500 ms later, as the class does).
        handle.presence.announce(name="Ada", color="#4363d8", viewing=["rows", 1])
        await eventually(lambda: js.peer_id in handle.presence.peers)
        grace = handle.presence.peers[js.peer_id]
        assert (grace.name, grace.color, grace.viewing) == ("Grace", "#3cb44b", [])

        ada = {"name": "Ada", "color": "#4363d8", "viewing": ["rows", 1]}
        await js_sees(js, doc_id, conn.peer_id, lambda value: value == ada)

        # A JS channel update changes one key; ours too.
        await js.presence_broadcast(doc_id, "viewing", ["rows", 2])
        await eventually(lambda: handle.presence.peers[js.peer_id].viewing == ["rows", 2])
        assert handle.presence.peers[js.peer_id].name == "Grace"
        handle.presence.announce(viewing=["rows"])
        ada["viewing"] = ["rows"]
        await js_sees(js, doc_id, conn.peer_id, lambda value: value == ada)

        # Goodbyes: the JS peer's stop() removes it here at once, and ours there.
        await js.presence_stop(doc_id)
        await eventually(lambda: js.peer_id not in handle.presence.peers)
        await js.presence_start(doc_id, {"name": "Grace again"})
        await eventually(lambda: js.peer_id in handle.presence.peers)
        await js_sees(js, doc_id, conn.peer_id, lambda value: value is not None)
        handle.presence.leave()
        await js_sees(js, doc_id, conn.peer_id, lambda value: value is None)


async def test_a_silent_js_peer_is_forgotten_after_the_ttl(server: ServerProcess) -> None:
    """Heartbeats keep a JS peer; when they stop (killed, no goodbye), it expires."""
    async with connect(server.url) as conn:
        async with JSPeer.start(server.url) as js:
            doc_id = (await js.create({}))["documentId"]
            await js.wait_synced(doc_id)
            handle = await conn.open(doc_id)
            handle.presence._table.ttl = 1.0
            handle.presence.heartbeat = 0.1  # expiry checks
            handle.presence.announce(name="Ada")
            await js.presence_start(doc_id, {"name": "Grace"}, heartbeat_ms=100)
            await eventually(lambda: js.peer_id in handle.presence.peers)
            await asyncio.sleep(1.5)  # longer than the ttl: heartbeats kept it
            assert js.peer_id in handle.presence.peers
            # Leaving the block closes the peer without presence.stop(): no goodbye.
        await eventually(lambda: js.peer_id not in handle.presence.peers)
