"""The LiveView's timeline and presence, driven without a kernel (as test_widgets.py).

The tests set the traits the front end sets (``timeline``, ``version``,
``identity``), play its custom messages (``restore``) and read what the
widget sends back (``versions``, ``past``, ``presence``, ``status``).
"""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest
from waiting import eventually

from autosync_jupyter.crdt.document import Document
from autosync_jupyter.errors import AutosyncError
from autosync_jupyter.ids import parse_automerge_url
from autosync_jupyter.jupyter.live_view import LiveView
from autosync_jupyter.jupyter.timeline import version_heads, write_version
from autosync_jupyter.runtime.blocking import BlockingConnection
from autosync_jupyter.runtime.client import fetch
from autosync_jupyter.runtime.connection import connect
from autosync_jupyter.runtime.server import SyncServer

until = functools.partial(eventually, timeout=5.0)


def three_versions() -> Document:
    doc = Document({"title": "draft", "items": [1, 2], "meta": {"n": 1}})
    with doc.change(message="retitle") as d:
        d["title"] = "final"
        d["items"].append(3)
    with doc.change() as d:
        del d["meta"]["n"]
        d["extra"] = True
    return doc


# -- restoring, as a function ------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_write_version_makes_the_content_that_of_the_version(version: int) -> None:
    doc = three_versions()
    history = doc.history()
    past = doc.at(version_heads(history, version))
    with doc.change() as d:
        write_version(d, past)
    assert doc.to_py() == past.to_py()
    assert len(doc.history()) == len(history) + (version != 3)  # nothing to write for "now"


def test_write_version_writes_only_what_differs() -> None:
    """A restore leaves equal values alone, so a concurrent edit to them survives the merge."""
    doc = Document({"keep": "same", "n": 1, "text": "hello world"})
    first = doc.heads
    with doc.change() as d:
        d["n"] = 2
        d["text"].splice(0, 5, "HELLO")
    other = doc.fork()
    with other.change() as d:
        d["keep"] = "edited elsewhere"  # concurrent with the restore
        d["text"].splice(11, 0, "!")
    past = doc.at(first)
    with doc.change() as d:
        write_version(d, past)
    doc.merge(other)
    assert doc.to_py() == {"keep": "edited elsewhere", "n": 1, "text": "hello world!"}


def test_write_version_keeps_types_apart() -> None:
    """True is not 1, a list is not a map; nested lists shrink and grow."""
    doc = Document({"flag": True, "rows": [[1, 2], {"a": 1}], "x": {"y": [1]}})
    first = doc.heads
    with doc.change() as d:
        d["flag"] = 1
        d["rows"][0].append(3)
        d["rows"].append("more")
        d["x"] = [1]
    past = doc.at(first)
    with doc.change() as d:
        write_version(d, past)
    assert doc.to_py() == {"flag": True, "rows": [[1, 2], {"a": 1}], "x": {"y": [1]}}
    assert doc["flag"] is True


def test_version_heads_are_the_prefixes_heads() -> None:
    doc = three_versions()
    history = doc.history()
    assert version_heads(history, len(history)) == doc.heads
    assert version_heads(history, 1) == [bytes.fromhex(history[0].hash)]
    with pytest.raises(IndexError, match="versions go from 1 to 3"):
        version_heads(history, 4)
    with pytest.raises(IndexError):
        version_heads(history, 0)


def test_version_heads_of_concurrent_changes() -> None:
    """Two peers' concurrent changes: the version holding both has two heads."""
    doc = Document({"n": 0})
    other = doc.fork()
    with doc.change() as d:
        d["a"] = 1
    with other.change() as d:
        d["b"] = 2
    doc.merge(other)
    history = doc.history()
    assert sorted(version_heads(history, 3)) == sorted(doc.heads)
    assert len(version_heads(history, 3)) == 2
    assert doc.at(version_heads(history, 3)).to_py() == {"n": 0, "a": 1, "b": 2}


# -- the widget's timeline ---------------------------------------------------------------


async def test_the_timeline_shows_a_version_its_changes_author_and_time() -> None:
    doc = three_versions()
    view = LiveView(doc)
    assert view.versions == 0 and view.past is None  # closed: nothing computed
    view.timeline = True
    await until(lambda: view.versions == 3)
    view.version = 2
    await until(lambda: view.past is not None)
    past = view.past
    assert past["version"] == 2 and past["versions"] == 3
    assert past["tree"] == {"title": "final", "items": [1, 2, 3], "meta": {"n": 1}}
    # The title is new text (put, then its characters spliced in); meta untouched.
    assert sorted(past["changed"]) == [["items", 2], ["title"], ["title", 0]]
    assert past["message"] == "retitle"
    record = doc.history()[1]
    assert past["hash"] == record.hash and past["actor"] == record.actor[:8]
    assert past["when"] == record.when
    assert past["url"] == ""  # a plain Document has no automerge: URL
    # The live tree is not touched by browsing.
    assert view.value["extra"] is True
    view.version = 0
    await until(lambda: view.past is None)
    view.close()


async def test_a_change_without_a_time_says_time_unknown() -> None:
    """Changes made before Python stamped times (and by some peers) carry time 0."""
    doc = Document({"n": 1})
    view = LiveView(doc)
    record = doc.history()[0]
    view.timeline = True
    view.version = 1
    await until(lambda: view.past is not None)
    assert view.past["when"] == record.when
    assert (view.past["time"] is None) == (record.time is None)
    if record.time is None:
        assert view.past["when"] == "time unknown"
    view.close()


async def test_restore_from_the_front_end_adds_a_change_and_keeps_history() -> None:
    doc = three_versions()
    view = LiveView(doc)
    view.timeline = True
    view.version = 1
    await until(lambda: view.past is not None)
    before = doc.history()
    view._on_msg(view, {"type": "restore", "version": 1}, [])
    assert doc.to_py() == {"title": "draft", "items": [1, 2], "meta": {"n": 1}}
    after = doc.history()
    assert len(after) == len(before) + 1
    assert [r.hash for r in after[: len(before)]] == [r.hash for r in before]
    assert after[-1].message == "restore version 1"
    assert view.version == 0 and "restored" in view.status
    await until(lambda: view.versions == 4 and view.value["title"] == "draft")
    # Nonsense from the front end is ignored or said, never raised.
    view._on_msg(view, {"type": "restore", "version": 99}, [])
    assert "cannot restore version 99" in view.status
    view._on_msg(view, {"type": "restore", "version": "1"}, [])
    view._on_msg(view, ["restore"], [])
    assert len(doc.history()) == 4
    view.close()


async def test_restore_through_a_handle_reaches_the_server_and_links_name_versions() -> None:
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"v": 1})
        async with connect(server.url) as conn:
            handle = await conn.open(doc_id)
            await server.change_document(doc_id, lambda d: d.update(v=2))
            await until(lambda: handle.doc["v"] == 2)
            view = LiveView(handle, announce=False)
            url = view.version_url(1)
            parsed_id, heads = parse_automerge_url(url)
            assert parsed_id == doc_id and heads == version_heads(handle.doc.history(), 1)
            assert (await fetch(server.url, url)).at(heads).to_py() == {"v": 1}
            view.timeline = True
            view.version = 1
            await until(lambda: view.past is not None)
            assert view.past["url"] == url
            view.restore(1)
            await handle.flush()
            assert (await server.read_document(doc_id))["v"] == 1
            view.close()


async def test_restore_on_a_server_view() -> None:
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"v": 1})
        await server.change_document(doc_id, lambda d: d.update(v=2))
        view = LiveView((server, doc_id))
        view.restore(1)
        await until(lambda: view.value == {"v": 1})
        view.close()


async def test_a_view_that_cannot_write_says_so() -> None:
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"v": 1})
        async with connect(server.url) as conn:
            view = LiveView((conn, doc_id))  # opens in the background
            with pytest.raises(AutosyncError, match="cannot change"):
                view.restore(1)
            await until(lambda: view.value == {"v": 1})
            view.close()
    with pytest.raises(AutosyncError, match="no automerge: URL"):
        LiveView(Document({"a": 1})).version_url(1)


# -- presence ----------------------------------------------------------------------------


async def test_the_view_announces_its_user_and_lists_the_others() -> None:
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"rows": []})
        async with connect(server.url) as alice, connect(server.url) as bob:
            a = await alice.open(doc_id)
            b = await bob.open(doc_id)
            view = LiveView(a, name="Alice", color="#123456")
            assert view.presence[0] == {
                "peer": alice.peer_id,
                "name": "Alice",
                "color": "#123456",
                "viewing": [],
                "heads": None,
                "me": True,
            }
            await until(lambda: alice.peer_id in b.presence.peers)
            assert b.presence.peers[alice.peer_id].name == "Alice"
            b.presence.announce(name="Bob", viewing=["rows"])
            await until(lambda: len(view.presence) == 2)
            bob_row = view.presence[1]
            assert (bob_row["name"], bob_row["viewing"], bob_row["me"]) == ("Bob", ["rows"], False)
            # Browsing a past version tells the others which one.
            view.timeline = True
            view.version = 1
            await until(lambda: b.presence.peers[alice.peer_id].state.get("heads") is not None)
            assert b.presence.peers[alice.peer_id].state["heads"] == view.past["url_heads"]
            assert view.past["url"].endswith("#" + "|".join(view.past["url_heads"]))
            view.version = 0
            await until(lambda: b.presence.peers[alice.peer_id].state.get("heads") is None)
            # Bob leaves; then the view goes, and Alice with it.
            b.presence.leave()
            await until(lambda: len(view.presence) == 1)
            view.close()
            await until(lambda: alice.peer_id not in b.presence.peers)


async def test_the_user_name_comes_from_jupyter_identity() -> None:
    """The front end sets ``identity`` from JupyterLab's api/me; the announcement follows."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({})
        async with connect(server.url) as alice, connect(server.url) as bob:
            a = await alice.open(doc_id)
            b = await bob.open(doc_id)
            view = LiveView(a)
            b.presence.announce(name="Bob")
            await until(lambda: alice.peer_id in b.presence.peers)
            await asyncio.to_thread(setattr, view, "identity", {"name": "Ada L.", "color": "#f00"})
            await until(lambda: b.presence.peers[alice.peer_id].name == "Ada L.")
            assert b.presence.peers[alice.peer_id].color == "#f00"
            await until(lambda: view.presence[0]["name"] == "Ada L.")
            view.close()


async def test_a_watching_view_announces_nothing() -> None:
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({})
        async with connect(server.url) as alice, connect(server.url) as bob:
            a = await alice.open(doc_id)
            b = await bob.open(doc_id)
            view = LiveView(a, announce=False)
            b.presence.announce(name="Bob")
            await asyncio.sleep(0.2)
            assert alice.peer_id not in b.presence.peers
            assert not a.presence.announced
            view.close()


async def test_presence_of_a_blocking_handle_reaches_the_view_in_its_loop() -> None:
    """The connection's thread hears the peers; the view's traits change in the kernel loop."""
    loop_thread = threading.get_ident()
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({})
        conn = await asyncio.to_thread(BlockingConnection, server.url)
        try:
            handle = await asyncio.to_thread(conn.open, doc_id)
            view = LiveView(handle, name="Script user")
            set_in: set[int] = set()
            view.observe(lambda change: set_in.add(threading.get_ident()), names="presence")
            async with connect(server.url) as other:
                o = await other.open(doc_id)
                o.presence.announce(name="Other")
                await until(lambda: any(row["name"] == "Other" for row in view.presence))
                assert set_in == {loop_thread}
            view.close()
        finally:
            await asyncio.to_thread(conn.close)
