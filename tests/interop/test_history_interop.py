"""History across languages: times and messages of Python changes as JavaScript reads them.

The binding's ``transaction()`` writes time 0 and no message; our changes
are stamped (autosync_jupyter/crdt/stamp.py). These tests prove the official
JavaScript packages (automerge 3 under automerge-repo 2.5.6) read the time
and message of a Python change, that Python reads a JavaScript change's, and
that stamped changes keep their hashes through JavaScript's save and load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jspeer import JSPeer, Op
from servers import ServerProcess, js_sync_server, py_sync_server

from autosync_jupyter import Document
from autosync_jupyter.runtime.connection import connect

UTC = dt.timezone.utc


@pytest.fixture(params=["js", "py"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """The JS sync server or ours, on a free port."""
    start = js_sync_server if request.param == "js" else py_sync_server
    async with start(tmp_path / f"{request.param}-data") as running:
        yield running


async def test_js_and_python_read_each_others_change_times_and_messages(
    server: ServerProcess,
) -> None:
    """A JS peer sees a Python change's message, time and actor; Python sees the JS change's."""
    async with contextlib.AsyncExitStack() as stack:
        js = await stack.enter_async_context(JSPeer.start(server.url))
        doc_id = (await js.create({"title": "notes", "n": 0}))["documentId"]
        await js.change(doc_id, [Op.set("n", 1)], message="js sets n")
        await js.wait_synced(doc_id)

        conn = await stack.enter_async_context(connect(server.url))
        handle = await conn.open(doc_id)
        started = int(time.time())
        with handle.doc.change(message="python sets n to 2") as d:
            d["n"] = 2
        ours = handle.doc.history()[-1]
        assert ours.message == "python sets n to 2" and ours.time is not None
        await js.wait_for(doc_id, path="n", equals=2)
        theirs = {change["hash"]: change for change in await js.history(doc_id)}

        seen = theirs[ours.hash]
        assert seen["message"] == "python sets n to 2"
        assert started <= seen["time"] <= time.time() + 1  # seconds, as JS writes them
        assert seen["actor"] == ours.actor and seen["seq"] == ours.seq
        assert seen["time"] == int(ours.time.timestamp())

        records = {record.hash: record for record in handle.doc.history()}
        assert set(records) == set(theirs)
        js_change = next(c for c in theirs.values() if c["message"] == "js sets n")
        record = records[js_change["hash"]]
        assert record.message == "js sets n"
        assert record.time == dt.datetime.fromtimestamp(js_change["time"], UTC)
        assert abs(record.time.timestamp() - time.time()) < 120
        assert record.actor == js_change["actor"] and record.ops == js_change["ops"]


async def test_stamped_changes_keep_their_hashes_through_javascript_save_and_load(
    server: ServerProcess,
) -> None:
    """JS exports a document with Python changes; loaded back, every hash and message is kept."""
    async with contextlib.AsyncExitStack() as stack:
        js = await stack.enter_async_context(JSPeer.start(server.url))
        conn = await stack.enter_async_context(connect(server.url))
        handle = await conn.create({"items": []})
        for i in range(3):
            with handle.doc.change(message=f"add {i}") as d:
                d["items"].append({"n": i, "text": f"item {i}"})
        found = await js.find(handle.document_id)
        assert found["state"] == "ready"
        await js.wait_for(handle.document_id, path=["items", 2, "n"], equals=2)
        await js.change(handle.document_id, [Op.push("items", 3)], message="js adds 3")
        loaded = Document.load(await js.export(handle.document_id))

    history = loaded.history()
    assert [r.message for r in history][-4:] == ["add 0", "add 1", "add 2", "js adds 3"]
    assert all(record.time is not None for record in history)
    ours = {record.hash for record in handle.doc.history()}
    assert ours <= {record.hash for record in history}
    assert Document.load(loaded.save()).heads == loaded.heads
