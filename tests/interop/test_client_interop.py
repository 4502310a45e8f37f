"""Our client against the official JS sync server and ours, with official JS peers.

Every test runs twice: against the JavaScript sync server (automerge-repo
2.5.6, as the public server is set up) and against ours (``python -m
autosync_jupyter serve``), both as subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jspeer import JSPeer, Op, js_value
from servers import ServerProcess, TLSFiles, js_sync_server, make_tls_files, py_sync_server

from autosync_jupyter import SyncServer
from autosync_jupyter.auth.tls import client_ssl_context
from autosync_jupyter.crdt.document import Document
from autosync_jupyter.errors import DocumentUnavailable
from autosync_jupyter.ids import generate_document_id
from autosync_jupyter.runtime.client import fetch
from autosync_jupyter.runtime.connection import connect

# Reconnect quickly in tests (the defaults are 0.25 s up to 15 s).
MIN_BACKOFF, MAX_BACKOFF = 0.05, 0.3
RICH: dict[str, Any] = {
    "title": "hello",
    "text": "world",
    "items": [1, "two", 3.5, None, True, {"six": [6]}],
    "nested": {"deep": {"lists": [[1, 2], [3]], "flag": False}, "empty": {}},
    "raw": b"\x00\x01\xff",
    "when": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
    "none": None,
}


def start_server(
    kind: str,
    data_dir: Path,
    *,
    tls: TLSFiles | None = None,
    port: int = 0,
    require_clean_exit: bool = True,
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The JS sync server or ours, optionally with TLS and on a given port."""
    if kind == "js":
        return js_sync_server(data_dir, tls, port=port, require_clean_exit=require_clean_exit)
    extra = ["--cert", str(tls.cert), "--key", str(tls.key)] if tls else []
    return py_sync_server(data_dir, *extra, port=port, require_clean_exit=require_clean_exit)


@pytest.fixture(params=["js", "py"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which server the test runs against."""
    param: str = request.param
    return param


@pytest.fixture
async def server(kind: str, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """The server under test on a free port, storing in a temp directory."""
    async with start_server(kind, tmp_path / f"{kind}-data") as running:
        yield running


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until the async ``check()`` holds (test helper)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_fetch_of_a_js_document_with_every_kind_of_value(server: ServerProcess) -> None:
    """Maps, lists, text, counters, bytes, timestamps and nesting made in JS read back equal."""
    async with JSPeer.start(server.url) as js:
        doc_id = (await js.create(RICH))["documentId"]
        await js.change(
            doc_id,
            [
                Op.counter("hits", 5),
                Op.increment("hits", 2),
                Op.splice("text", 0, 0, "hello "),
                Op.counter(["nested", "deep", "count"], -3),
                Op.push("items", {"pushed": True}),
            ],
        )
        await js.wait_synced(doc_id)
        expected = await js.doc(doc_id)
        doc = await fetch(server.url, doc_id)
    content = doc.to_py()
    assert js_value(content) == expected
    assert content["hits"] == 7 and content["text"] == "hello world"
    assert content["raw"] == RICH["raw"] and content["when"] == RICH["when"]


async def test_fetch_of_a_large_document(server: ServerProcess) -> None:
    """A document over 5 MB made in JS arrives whole (one V2 message, beyond 1 MiB limits)."""
    blob = os.urandom(5_500_000)  # incompressible, so the document stays above 5 MB
    async with JSPeer.start(server.url) as js:
        doc_id = (await js.create({"blob": blob, "items": list(range(2000))}))["documentId"]
        await js.wait_synced(doc_id, timeout=60)
        doc = await fetch(server.url, doc_id, timeout=60)
    content = doc.to_py()
    assert content["blob"] == blob and content["items"] == list(range(2000))
    assert len(doc.save()) > 5_000_000


async def test_fetch_of_an_unknown_id_is_unavailable_promptly(server: ServerProcess) -> None:
    """An unknown id raises DocumentUnavailable within a second (JS's empty sync tolerated)."""
    started = time.monotonic()
    with pytest.raises(DocumentUnavailable):
        await fetch(server.url, generate_document_id(), timeout=10)
    assert time.monotonic() - started < 1.0


async def test_wss_with_a_self_signed_certificate(kind: str, tmp_path: Path) -> None:
    """fetch and a live connection work over wss:// with the test CA trusted."""
    tls = make_tls_files(tmp_path / "tls")
    async with (
        start_server(kind, tmp_path / "data", tls=tls) as server,
        JSPeer.start(server.url, ca_file=tls.ca) as js,
    ):
        assert server.url.startswith("wss://")
        doc_id = (await js.create({"secure": True}))["documentId"]
        await js.wait_synced(doc_id)
        ssl = client_ssl_context(tls.ca)
        assert (await fetch(server.url, doc_id, ssl=ssl)).to_py() == {"secure": True}
        async with connect(server.url, ssl=ssl) as conn:
            handle = await conn.open(doc_id)
            with handle.doc.change() as d:
                d["from_python"] = True
            await js.wait_for(doc_id, path="from_python", equals=True)


async def test_live_handle_and_js_peer_see_each_other(server: ServerProcess) -> None:
    """A JS peer's edits reach a live handle at once, and the handle's edits reach JS."""
    async with JSPeer.start(server.url) as js, connect(server.url) as conn:
        doc_id = (await js.create({"n": 0}))["documentId"]
        await js.wait_synced(doc_id)
        handle = await conn.open(doc_id)
        stream = handle.changes()
        await js.change(doc_id, [Op.set("n", 1)])
        event = await asyncio.wait_for(anext(stream), 10)
        assert event.origin == "remote" and handle.doc.to_py() == {"n": 1}
        with handle.doc.change() as d:
            d["python"] = "hi"
        await js.wait_for(doc_id, path="python", equals="hi")
        made = await conn.create({"made_in": "python"})
        found = await js.find(made.document_id)
        assert found["state"] == "ready" and found["doc"] == {"made_in": "python"}


async def test_concurrent_edits_converge(server: ServerProcess) -> None:
    """Python and JS editing one document at the same time end with the same content."""
    async with JSPeer.start(server.url) as js, connect(server.url) as conn:
        doc_id = (await js.create({"log": []}))["documentId"]
        await js.wait_synced(doc_id)
        handle = await conn.open(doc_id)

        async def python_edits() -> None:
            for i in range(20):
                with handle.doc.change() as d:
                    d[f"py{i}"] = i
                    d["log"].append(f"py{i}")
                await asyncio.sleep(0.002)

        async def js_edits() -> None:
            for i in range(20):
                await js.change(doc_id, [Op.set(f"js{i}", i), Op.push("log", f"js{i}")])

        await asyncio.gather(python_edits(), js_edits())
        await handle.flush(timeout=10)

        async def converged() -> bool:
            return bool(js_value(handle.doc.to_py()) == await js.doc(doc_id))

        await eventually(converged)
    log = handle.doc.to_py()["log"]
    assert sorted(log) == sorted([f"py{i}" for i in range(20)] + [f"js{i}" for i in range(20)])


async def test_server_killed_and_restarted_loses_nothing(kind: str, tmp_path: Path) -> None:
    """SIGKILL mid-session, restart on the same port: the client reconnects, nothing is lost."""
    data = tmp_path / "data"
    async with start_server(kind, data, require_clean_exit=False) as first:
        port = int(first.url.rsplit(":", 1)[1])
        conn = await connect(first.url, min_backoff=MIN_BACKOFF, max_backoff=MAX_BACKOFF)
        handle = await conn.create({"before": 1})
        with handle.doc.change() as d:
            d["acknowledged"] = 2
        await handle.flush()
        with handle.doc.change() as d:
            d["in_flight"] = 3  # may or may not reach the server before it dies
        os.kill(first.pid, signal.SIGKILL)
        await first.process.wait()
    try:
        await asyncio.wait_for(_until_disconnected(conn), 10)
        with handle.doc.change() as d:
            d["offline"] = 4
        async with start_server(kind, data, port=port) as second:
            await conn.wait_connected(timeout=15)
            await handle.flush(timeout=15)
            with handle.doc.change() as d:
                d["after"] = 5
            await handle.flush()
            expected = {"before": 1, "acknowledged": 2, "in_flight": 3, "offline": 4, "after": 5}
            assert (await fetch(second.url, handle.document_id)).to_py() == expected
            async with JSPeer.start(second.url) as js:
                assert (await js.find(handle.document_id))["doc"] == expected
        assert conn.reconnects >= 1
    finally:
        await conn.close(flush=False)


async def _until_disconnected(conn: Any) -> None:
    while conn.connected:
        await asyncio.sleep(0.01)


# -- properties ----------------------------------------------------------------------------

# Keys of letters and digits: JS object keys such as "__proto__" or a lone "$bytes"
# mean something else to JS code, which is not what this property is about.
_KEYS = st.text(st.characters(categories=["L", "Nd"]), min_size=1, max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)  # what a JS number holds exactly
    # JS has one number type: an integral float beyond 2**53 reaches JS (and its
    # JSON) as an inexact integer, and JS Automerge clamps integral numbers to
    # int64. Within ±2**53 every value crosses exactly.
    | st.floats(min_value=-(2.0**53), max_value=2.0**53, allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@pytest.fixture
async def bridge() -> AsyncIterator[tuple[str, JSPeer, Any]]:
    """Our server in-process, a JS peer and a Python connection on it."""
    async with (
        SyncServer(port=0, data_dir=None) as running,
        JSPeer.start(running.url) as js,
        connect(running.url) as conn,
    ):
        yield running.url, js, conn


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=JSON_VALUES)
async def test_json_values_cross_between_python_and_js(
    bridge: tuple[str, JSPeer, Any], value: Any
) -> None:
    """A JSON-like value written in Python reads back equal in JS, and the other way round."""
    url, js, conn = bridge
    made = await conn.create({"value": value})
    assert Document.load(made.doc.save()).to_py() == {"value": value}
    found = await js.find(made.document_id)
    assert found["state"] == "ready" and found["doc"] == {"value": value}
    doc_id = (await js.create({"value": js_value(value)}))["documentId"]
    await js.wait_synced(doc_id)
    assert (await fetch(url, doc_id)).to_py() == {"value": value}
