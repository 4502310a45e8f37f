"""Several servers on one PostgreSQL database (``PostgresStore(shared=True)``) serve as one.

Two ``SyncServer`` in this process, each with its own shared store on the
same database, each with its own client: what one client changes reaches
the other through the database's commit and NOTIFY. Waits are generous
polls on the content, never timed assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import automerge.core as am
import psycopg
import pytest

from autosync_jupyter import SyncServer, connect
from autosync_jupyter.ids import DocumentId, generate_document_id
from autosync_jupyter.storage import PostgresStore, StoreLocked

WAIT = 30.0  # seconds: generous, only a bound on a hang


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (a poll bounded by ``WAIT``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def two_servers(url: str) -> AsyncIterator[tuple[SyncServer, SyncServer]]:
    async with (
        SyncServer(port=0, data_dir=None, store=PostgresStore(url, shared=True)) as a,
        SyncServer(port=0, data_dir=None, store=PostgresStore(url, shared=True)) as b,
    ):
        yield a, b


async def test_a_change_through_one_server_reaches_a_peer_of_the_other(postgres_url: str) -> None:
    async with (
        two_servers(postgres_url) as (a, b),
        connect(a.url) as on_a,
        connect(b.url) as on_b,
    ):
        mine = await on_a.create({"title": "shared", "n": 1})
        await mine.flush()
        await until(lambda: mine.document_id in b.list_documents())
        theirs = await on_b.open(mine.document_id)
        assert theirs.to_py() == {"title": "shared", "n": 1}
        with mine.change() as d:
            d["n"] = 2
        await mine.flush()
        await theirs.wait_for(lambda c: c.get("n") == 2, timeout=WAIT)
        # And back the other way.
        with theirs.change() as d:
            d["from_b"] = True
        await theirs.flush()
        await mine.wait_for(lambda c: c.get("from_b") is True, timeout=WAIT)


async def test_concurrent_edits_through_both_servers_converge(postgres_url: str) -> None:
    async with two_servers(postgres_url) as (a, b):
        async with connect(a.url) as on_a, connect(b.url) as on_b:
            first = await on_a.create({"items": {}})
            await first.flush()
            # Asked for at once, B may not know it yet ("unavailable"); it is
            # sent when B hears of it.
            second = await on_b.open(first.document_id, wait=False)
            await second.when_ready(timeout=WAIT)
            for i in range(20):
                with first.change() as d:
                    d["items"][f"a{i}"] = i
                with second.change() as d:
                    d["items"][f"b{i}"] = i
                if i % 5 == 0:
                    await asyncio.sleep(0)
            await first.flush()
            await second.flush()
            expected = {f"a{i}": i for i in range(20)} | {f"b{i}": i for i in range(20)}
            await first.wait_for(lambda c: c["items"] == expected, timeout=WAIT)
            await second.wait_for(lambda c: c["items"] == expected, timeout=WAIT)
            doc_id = first.document_id
        # Both servers hold the same content in memory...
        await until(lambda: a.snapshot(doc_id) is not None and b.snapshot(doc_id) is not None)
        snap_a, snap_b = a.snapshot(doc_id), b.snapshot(doc_id)
        assert snap_a is not None and snap_b is not None
        assert snap_a.to_py() == snap_b.to_py() == {"items": expected}
    # ...and the database holds all of it.
    async with SyncServer(port=0, data_dir=None, store=PostgresStore(postgres_url)) as alone:
        assert (await alone.read_document(doc_id)) == {"items": expected}


async def test_a_document_created_through_one_server_opens_through_the_other(
    postgres_url: str,
) -> None:
    async with two_servers(postgres_url) as (a, b):
        async with connect(a.url) as on_a:
            made = await on_a.create({"title": "made on a"})
            await made.flush()
        doc_id = DocumentId(made.document_id)
        await until(lambda: doc_id in b.list_documents())
        async with connect(b.url) as on_b:
            found = await on_b.open(doc_id)
            assert found.to_py() == {"title": "made on a"}


async def test_a_server_side_change_reaches_the_other_server(postgres_url: str) -> None:
    """The document API of one server, a peer of the other."""
    async with two_servers(postgres_url) as (a, b):
        doc_id = await a.create_document({"n": 0})
        await until(lambda: doc_id in b.list_documents())
        async with connect(b.url) as on_b:
            handle = await on_b.open(doc_id)
            for n in range(1, 4):
                await a.change_document(doc_id, lambda d, n=n: d.__setitem__("n", n))
            await handle.wait_for(lambda c: c.get("n") == 3, timeout=WAIT)


async def test_the_listener_connects_again_and_catches_up(postgres_url: str) -> None:
    """A change whose announcement was missed reaches the peers once the listener is back.

    The row is written by hand, without NOTIFY (an announcement lost while
    the listening connection was down); then the listening connections are
    cut: on listening again, every loaded document is read for new rows.
    """
    async with (
        two_servers(postgres_url) as (a, b),
        connect(a.url) as on_a,
        connect(b.url) as on_b,
    ):
        mine = await on_a.create({"n": 0})
        await mine.flush()
        await until(lambda: mine.document_id in b.list_documents())
        theirs = await on_b.open(mine.document_id)
        doc_id = mine.document_id
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            stored = admin.execute(
                "SELECT data FROM autosync_chunks WHERE doc_id = %s ORDER BY seq", (doc_id,)
            ).fetchall()
            doc = am.Document.load(b"".join(bytes(row[0]) for row in stored))
            heads = doc.get_heads()
            with doc.transaction() as tx:
                tx.put(am.ROOT, "n", am.ScalarType.Int, 7)
            change = b"".join(c.bytes for c in doc.get_changes(heads))
            admin.execute(
                "INSERT INTO autosync_chunks (doc_id, kind, data) VALUES (%s, 'incremental', %s)",
                (doc_id, change),
            )
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'autosync listen'"
            ).fetchall()
        assert len(cut) == 2
        await theirs.wait_for(lambda c: c.get("n") == 7, timeout=WAIT)
        await mine.wait_for(lambda c: c.get("n") == 7, timeout=WAIT)
        # Listening again: announcements flow as before.
        with mine.change() as d:
            d["n"] = 8
        await mine.flush()
        await theirs.wait_for(lambda c: c.get("n") == 8, timeout=WAIT)


async def test_a_shared_store_and_a_lone_store_exclude_each_other(postgres_url: str) -> None:
    lone = PostgresStore(postgres_url)
    await lone.open()
    try:
        with pytest.raises(StoreLocked, match="not shared"):
            await PostgresStore(postgres_url, shared=True).open()
    finally:
        await lone.close()
    shared = [PostgresStore(postgres_url, shared=True) for _ in range(2)]
    for store in shared:
        await store.open()
    try:
        with pytest.raises(StoreLocked, match="in use by another store"):
            await PostgresStore(postgres_url).open()
    finally:
        for store in shared:
            await store.close()


async def test_load_new_reads_only_rows_written_elsewhere(postgres_url: str) -> None:
    """A store reads another's rows once, and never its own."""
    one = PostgresStore(postgres_url, shared=True)
    two = PostgresStore(postgres_url, shared=True)
    await one.open()
    await two.open()
    seen: list[DocumentId] = []
    one.watch(seen.append)
    try:
        doc = am.Document()
        doc_id = generate_document_id()
        with doc.transaction() as tx:
            tx.put(am.ROOT, "k", am.ScalarType.Str, "v")
        two.append(doc_id, doc.save())
        await two.flush()
        await until(lambda: doc_id in seen)
        assert doc_id in one
        assert await one.load_new(doc_id) is None  # never loaded here: a load reads all
        assert await one.load(doc_id)
        assert await one.load_new(doc_id) is None  # nothing new
        heads = doc.get_heads()
        with doc.transaction() as tx:
            tx.put(am.ROOT, "k", am.ScalarType.Str, "w")
        change = b"".join(c.bytes for c in doc.get_changes(heads))
        two.append(doc_id, change)
        await two.flush()
        new = await one.load_new(doc_id)
        assert new == change
        assert await one.load_new(doc_id) is None
        one.append(doc_id, change)  # our own rows are never "new"
        await one.flush()
        assert await one.load_new(doc_id) is None
    finally:
        await one.close()
        await two.close()


async def test_both_servers_compacting_lose_nothing(postgres_url: str) -> None:
    """With compaction after every write on both servers, concurrent edits all stay stored."""

    def store() -> PostgresStore:
        return PostgresStore(postgres_url, shared=True, compaction_floor=1)

    async with (
        SyncServer(port=0, data_dir=None, store=store()) as a,
        SyncServer(port=0, data_dir=None, store=store()) as b,
        connect(a.url) as on_a,
        connect(b.url) as on_b,
    ):
        first = await on_a.create({"items": {}})
        await first.flush()
        second = await on_b.open(first.document_id, wait=False)
        await second.when_ready(timeout=WAIT)
        for i in range(30):
            with first.change() as d:
                d["items"][f"a{i}"] = i
            with second.change() as d:
                d["items"][f"b{i}"] = i
            await asyncio.gather(first.flush(), second.flush())
        expected = {f"a{i}": i for i in range(30)} | {f"b{i}": i for i in range(30)}
        await first.wait_for(lambda c: c["items"] == expected, timeout=WAIT)
        await second.wait_for(lambda c: c["items"] == expected, timeout=WAIT)
        doc_id = first.document_id
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        snapshots = admin.execute(
            "SELECT count(*) FROM autosync_chunks WHERE doc_id = %s AND kind = 'snapshot'",
            (doc_id,),
        ).fetchone()
    assert snapshots is not None and snapshots[0] >= 1  # compactions did happen
    async with SyncServer(port=0, data_dir=None, store=PostgresStore(postgres_url)) as alone:
        assert (await alone.read_document(doc_id)) == {"items": expected}


async def test_a_failed_read_after_a_notification_is_tried_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of the other server's rows that fails is retried, not left for a next NOTIFY."""
    from autosync_jupyter.errors import StorageError

    async with (
        two_servers(postgres_url) as (a, b),
        connect(a.url) as on_a,
        connect(b.url) as on_b,
    ):
        mine = await on_a.create({"n": 1})
        await mine.flush()
        await until(lambda: mine.document_id in b.list_documents())
        theirs = await on_b.open(mine.document_id)
        store = b._store
        real = store.load_new
        failures = []

        async def flaky(doc_id: DocumentId) -> bytes:
            if not failures:
                failures.append(doc_id)
                raise StorageError("connection to the database lost (test)")
            return await real(doc_id)

        monkeypatch.setattr(store, "load_new", flaky)
        with mine.change() as d:
            d["n"] = 2
        await mine.flush()
        # One notification only: the change arrives through the retry.
        await theirs.wait_for(lambda c: c.get("n") == 2, timeout=WAIT)
        assert failures == [mine.document_id]
