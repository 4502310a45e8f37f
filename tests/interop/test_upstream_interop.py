"""Our server as a client of an upstream server: the official JS sync server, and ours.

``autosync serve --upstream URL`` relays as a JS ``Repo`` with both a server
and a client adapter does: documents its peers ask for come from the
upstream, documents made on it go there, and live edits cross in both
directions. Every peer here is an official JS automerge-repo client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jspeer import JSPeer, Op
from servers import ServerProcess, py_sync_server

from autosync_jupyter import SyncServer
from autosync_jupyter.ids import generate_document_id


@pytest.fixture
async def hub_of_js(tmp_path: Path, js_server: ServerProcess) -> AsyncIterator[SyncServer]:
    """Our server with the JS sync server as its upstream."""
    async with SyncServer(
        port=0, data_dir=tmp_path / "local", upstreams=[js_server.url], upstream_timeout=5
    ) as server:
        assert server.upstreams[0].joined.is_set()
        yield server


async def test_a_js_client_of_ours_finds_what_a_js_client_made_on_the_js_server(
    hub_of_js: SyncServer, js_server: ServerProcess
) -> None:
    async with JSPeer.start(js_server.url) as author, JSPeer.start(hub_of_js.url) as reader:
        made = await author.create({"title": "central", "items": [1, 2]})
        doc_id = made["documentId"]
        await author.wait_synced(doc_id)
        found = await reader.find(doc_id, timeout=10)
        assert found["state"] == "ready", found
        assert found["doc"] == {"title": "central", "items": [1, 2]}


async def test_what_a_js_client_makes_on_ours_reaches_the_js_server(
    hub_of_js: SyncServer, js_server: ServerProcess
) -> None:
    async with JSPeer.start(hub_of_js.url) as author:
        doc_id = (await author.create({"made": "at the edge"}))["documentId"]
        await author.wait_synced(doc_id)
        async with JSPeer.start(js_server.url) as reader:
            found = await reader.find(doc_id, timeout=10)
            assert found["state"] == "ready", found
            assert found["doc"] == {"made": "at the edge"}


async def test_live_edits_cross_both_ways_through_the_js_server(
    hub_of_js: SyncServer, js_server: ServerProcess
) -> None:
    async with JSPeer.start(js_server.url) as far, JSPeer.start(hub_of_js.url) as near:
        doc_id = (await far.create({"n": 0}))["documentId"]
        await far.wait_synced(doc_id)
        assert (await near.find(doc_id))["state"] == "ready"
        await near.change(doc_id, [Op.set("near", "hello")])
        await far.wait_for(doc_id, path="near", equals="hello", timeout=10)
        await far.change(doc_id, [Op.set("far", "hi")])
        await near.wait_for(doc_id, path="far", equals="hi", timeout=10)
        for i in range(5):  # concurrent edits through both servers converge
            await near.change(doc_id, [Op.set(f"near{i}", i)])
            await far.change(doc_id, [Op.set(f"far{i}", i)])
        await near.wait_for(doc_id, path="far4", equals=4, timeout=10)
        await far.wait_for(doc_id, path="near4", equals=4, timeout=10)
        assert await near.doc(doc_id) == await far.doc(doc_id)


async def test_an_id_neither_server_has_is_unavailable_before_the_answer_timeout(
    hub_of_js: SyncServer,
) -> None:
    async with JSPeer.start(hub_of_js.url) as reader:
        result = await reader.find(generate_document_id(), timeout=15)
        assert result["state"] == "unavailable", result
        # The JS server answered doc-unavailable: no wait for our 5 s timeout.
        assert result["elapsed_ms"] < 4000, result


async def test_autosync_serve_upstream_relays_to_our_own_server(tmp_path: Path) -> None:
    """The command line: `autosync serve --upstream ws://...` in front of another of ours."""
    async with (
        py_sync_server(tmp_path / "central") as central,
        py_sync_server(tmp_path / "edge", "--upstream", central.url) as edge,
        JSPeer.start(central.url) as far,
        JSPeer.start(edge.url) as near,
    ):
        doc_id = (await far.create({"from": "central"}))["documentId"]
        await far.wait_synced(doc_id)
        found = await near.find(doc_id, timeout=10)
        assert found["state"] == "ready", found
        assert found["doc"] == {"from": "central"}
        await near.change(doc_id, [Op.set("edge", True)])
        await far.wait_for(doc_id, path="edge", equals=True, timeout=10)
