"""Older and newer automerge-repo releases against our server and our client (issue 12).

A small matrix: automerge-repo 1.2.1, 2.0.8, 2.5.6 (the pinned default) and
2.6.0-alpha.3, installed side by side in ``js/`` under npm aliases
(``js/versions.mjs``). For every release:

* its client creates, finds and edits documents on our server, in both
  directions, and finds documents our server and our client made (1.x and
  2.0.x refuse ids whose bytes are not a UUID: "Invalid AutomergeUrl");
* our client creates, fetches and live-edits documents on its sync server
  (1.x and 2.0.x servers drop a ``sync`` for a non-UUID id);
* a data directory its NodeFS storage wrote is served by ``autosync serve``;
* ids from :func:`generate_document_id` pass its own validators.

2.6.0-alpha.3 declares node >= 22.13; on Node 20 it runs with two builtins
added and ``--experimental-websocket`` (see ``js/versions.mjs``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from jspeer import JS_REPO_VERSIONS, JSPeer, Op, js_check_ids, require_js_release
from servers import js_sync_server, py_sync_server
from waiting import eventually

from autosync_jupyter import SyncServer
from autosync_jupyter.errors import DocumentUnavailable
from autosync_jupyter.ids import generate_document_id, parse_document_id
from autosync_jupyter.runtime.client import fetch
from autosync_jupyter.runtime.connection import connect

# Documents our side makes per test: with ids of plain random bytes (~8% of
# which are UUIDs) all of them would pass a 1.x/2.0.x check ~4e-6 of the time.
OURS = 5


@pytest.fixture(params=JS_REPO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    """The automerge-repo release under test (skipped here, failed in CI, if not installed)."""
    param: str = request.param
    require_js_release(param)
    return param


@pytest.fixture
async def our_server(tmp_path: Path) -> AsyncIterator[SyncServer]:
    """Our server in-process, storing in a temp directory."""
    async with SyncServer(port=0, data_dir=tmp_path / "ours") as server:
        yield server


async def test_generated_ids_pass_the_releases_own_validators(version: str) -> None:
    """200 generated ids are valid URLs and ids to the release, and its ids are valid to us."""
    ids = [generate_document_id() for _ in range(200)]
    report = await js_check_ids(ids, version=version, generate=20)
    assert report["version"] == version
    assert tuple(report["releases"]) == JS_REPO_VERSIONS  # js/versions.mjs agrees
    refused = [
        r for r in report["results"] if not (r["url"] and r["documentId"] and r["interpret"])
    ]
    assert not refused, f"{len(refused)} of {len(ids)} ids refused by {version}: {refused[:3]}"
    for doc_id in report["generated"]:
        assert len(parse_document_id(doc_id)) == 16


async def test_official_client_on_our_server(version: str, our_server: SyncServer) -> None:
    """The release's client creates, finds and edits documents on our server, both ways,
    and finds the documents our server and our client made."""
    url = our_server.url
    async with (
        JSPeer.start(url, version=version) as alice,
        JSPeer.start(url, version=version) as bob,
        connect(url) as conn,
    ):
        assert alice.version == bob.version == version
        created = await alice.create({"title": "from js", "items": [1]})
        doc_id = created["documentId"]
        await alice.wait_synced(doc_id)  # else bob's find can overtake it: unavailable
        found = await bob.find(doc_id)
        assert found["state"] == "ready", found
        assert found["doc"] == {"title": "from js", "items": [1]}
        await bob.change(doc_id, [Op.set("by", "bob"), Op.push("items", 2)])
        await alice.wait_for(doc_id, path="by", equals="bob")
        await alice.change(doc_id, [Op.set("by", "alice")])
        await bob.wait_for(doc_id, path="by", equals="alice")
        handle = await conn.open(doc_id)
        assert handle.doc.to_py() == {"title": "from js", "items": [1, 2], "by": "alice"}

        # Ids made by our server and our client: what 1.x/2.0.x refused.
        made = [await our_server.create_document({"n": i}) for i in range(OURS)]
        made += [(await conn.create({"n": OURS + i})).document_id for i in range(OURS)]
        for n, made_id in enumerate(made):
            found = await bob.find(made_id)
            assert found["state"] == "ready" and found["doc"] == {"n": n}, found
        await bob.change(made[-1], [Op.set("edited_in", version)])
        made_handle = conn.handles[made[-1]]
        await asyncio.wait_for(_until(lambda: "edited_in" in made_handle.doc.to_py()), 10)
        with made_handle.doc.change() as d:
            d["answered"] = True
        await bob.wait_for(made[-1], path="answered", equals=True)


async def test_our_client_on_the_releases_sync_server(version: str, tmp_path: Path) -> None:
    """Our client creates, fetches and live-edits documents on the release's sync server."""
    async with (
        js_sync_server(tmp_path / "js", version=version) as server,
        JSPeer.start(server.url, version=version) as js,
        connect(server.url, timeout=10) as conn,
    ):
        handles = [await conn.create({"n": i}) for i in range(OURS)]
        for i, handle in enumerate(handles):
            assert (await fetch(server.url, handle.document_id, timeout=10)).to_py() == {"n": i}
        doc_id = handles[0].document_id
        found = await js.find(doc_id)
        assert found["state"] == "ready" and found["doc"] == {"n": 0}, found
        stream = handles[0].changes()
        await js.change(doc_id, [Op.set("from_js", version)])
        event = await asyncio.wait_for(anext(stream), 10)
        assert event.origin == "remote" and handles[0].doc.to_py() == {"n": 0, "from_js": version}
        with handles[0].doc.change() as d:
            d["from_python"] = True
        await js.wait_for(doc_id, path="from_python", equals=True)

        js_id = (await js.create({"made_in": "js"}))["documentId"]
        await js.wait_synced(js_id)
        assert (await fetch(server.url, js_id)).to_py() == {"made_in": "js"}
        with pytest.raises(DocumentUnavailable):
            await fetch(server.url, generate_document_id(), timeout=10)


async def test_data_directory_of_the_release_is_served_by_autosync_serve(
    version: str, tmp_path: Path
) -> None:
    """What the release's sync server stored (NodeFS storage) is served by `autosync serve`."""
    data = tmp_path / "amrg"
    async with (
        js_sync_server(data, version=version) as js_server,
        JSPeer.start(js_server.url, version=version) as alice,
        connect(js_server.url, timeout=10) as conn,
    ):
        doc_id = (await alice.create({"from": "js"}))["documentId"]
        await alice.change(doc_id, [Op.set("more", [1, 2]), Op.splice("from", 2, 0, "-text")])
        await alice.wait_synced(doc_id)
        ours = await conn.create({"from": "python"})
        # The release's server saves on a timer, after it answered: wait until
        # it has stored both documents (what this test reads) before stopping it.
        for stored in (doc_id, str(ours.document_id)):
            folder = data / stored[:2] / stored[2:]
            await eventually(lambda f=folder: f.is_dir() and any(p.is_file() for p in f.rglob("*")))
    async with py_sync_server(data) as server, JSPeer.start(server.url, version=version) as bob:
        found = await bob.find(doc_id)
        assert found["state"] == "ready" and found["doc"] == {"from": "js-text", "more": [1, 2]}
        assert (await fetch(server.url, ours.document_id)).to_py() == {"from": "python"}


async def test_fetch_of_an_unknown_id_from_a_26_server_is_unavailable(tmp_path: Path) -> None:
    """A 2.6 sync server with another client connected answers an unknown id with an
    empty document and never doc-unavailable: fetch and open still raise DocumentUnavailable,
    and allow_empty=True gives the empty document."""
    version = "2.6.0-alpha.3"
    require_js_release(version)
    async with (
        js_sync_server(tmp_path / "js", version=version) as server,
        JSPeer.start(server.url, version=version),
        connect(server.url, timeout=10) as conn,
    ):
        with pytest.raises(DocumentUnavailable, match="answered with an empty document"):
            await fetch(server.url, generate_document_id(), timeout=10)
        doc = await fetch(server.url, generate_document_id(), timeout=10, allow_empty=True)
        assert doc.to_py() == {} and not doc.core.get_heads()
        unknown = generate_document_id()
        with pytest.raises(DocumentUnavailable, match="answered with an empty document"):
            await conn.open(unknown)
        assert unknown not in conn.handles
        handle = await conn.open(generate_document_id(), allow_empty=True)
        assert handle.state == "ready" and handle.doc.to_py() == {}


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.02)


async def test_the_releases_sync_server_as_our_upstream(version: str, tmp_path: Path) -> None:
    """Our server relays to the release's sync server: found through us, made on us, live edits."""
    async with (
        js_sync_server(tmp_path / "js", version=version) as central,
        SyncServer(
            port=0, data_dir=tmp_path / "edge", upstreams=[central.url], upstream_timeout=5
        ) as edge,
        JSPeer.start(central.url, version=version) as far,
        JSPeer.start(edge.url, version=version) as near,
    ):
        assert edge.upstreams[0].joined.is_set()
        doc_id = (await far.create({"from": "central"}))["documentId"]
        await far.wait_synced(doc_id)
        found = await near.find(doc_id, timeout=10)
        assert found["state"] == "ready" and found["doc"] == {"from": "central"}, found
        await near.change(doc_id, [Op.set("edge", version)])
        await far.wait_for(doc_id, path="edge", equals=version)
        made = (await near.create({"from": "edge"}))["documentId"]
        await near.wait_synced(made)
        assert (await far.find(made, timeout=10))["doc"] == {"from": "edge"}
