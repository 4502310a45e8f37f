"""The PostgreSQL store against a real PostgreSQL server: durability, compaction, damage, locks.

The contract tests shared with the memory and file stores run against it in
test_storage.py; these cover what only a database has (its tables, its
connection, other sessions).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import automerge.core as am
import psycopg
import pytest

from autosync_jupyter.errors import StorageError
from autosync_jupyter.ids import generate_document_id
from autosync_jupyter.storage import PostgresStore, StoreLocked, open_store
from autosync_jupyter.storage.postgres import INSTALL_HINT, SCHEMA_VERSION

FLOOR = 1024


class Doc:
    """A real automerge document that hands out the bytes of each change."""

    def __init__(self) -> None:
        self.doc = am.Document()
        self.id = generate_document_id()

    def change(self, key: str = "k", value: str = "v") -> bytes:
        heads = self.doc.get_heads()
        with self.doc.transaction() as tx:
            tx.put(am.ROOT, key, am.ScalarType.Str, value)
        return b"".join(c.bytes for c in self.doc.get_changes(heads))

    @property
    def heads(self) -> list[bytes]:
        return sorted(self.doc.get_heads())


def heads_of(data: bytes | None) -> list[bytes]:
    assert data is not None
    return sorted(am.Document.load(data).get_heads())


async def opened(url: str, **kwargs: object) -> PostgresStore:
    store = PostgresStore(url, compaction_floor=FLOOR, **kwargs)  # type: ignore[arg-type]
    await store.open()
    return store


def sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement in its own session (as an operator or another program would)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def terminate_other_sessions(url: str) -> int:
    """Kill every other backend of the database: the store's connection breaks for real."""
    rows = sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return len(rows)


async def test_changes_survive_close_and_reopen(postgres_url: str) -> None:
    """Committed appends load back in a new store on the same database, with the same id."""
    doc = Doc()
    store = await opened(postgres_url)
    storage_id = store.storage_id
    for i in range(5):
        store.append(doc.id, doc.change(f"k{i}"))
    await store.close()
    again = await opened(postgres_url)
    assert again.storage_id == storage_id
    assert str(uuid.UUID(storage_id)) == storage_id
    assert again.document_ids() == {doc.id}
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_flush_commits_one_row_per_document(postgres_url: str) -> None:
    """After flush() another session sees the rows: one per document per batch."""
    docs = [Doc() for _ in range(3)]
    store = await opened(postgres_url)
    for doc in docs:
        for i in range(4):
            store.append(doc.id, doc.change(f"k{i}"))
    await store.flush()
    counts = sql(postgres_url, "SELECT doc_id, count(*) FROM autosync_chunks GROUP BY doc_id")
    assert sorted(counts) == sorted((doc.id, 1) for doc in docs)
    await store.close()


async def test_concurrent_flushes_share_transactions(postgres_url: str) -> None:
    """200 coroutines appending and flushing at once cost a few commits, not 200."""
    store = await opened(postgres_url)
    docs = [Doc() for _ in range(10)]

    async def writer(i: int) -> None:
        doc = docs[i % len(docs)]
        store.append(doc.id, doc.change(f"k{i}"))
        await store.flush()

    await asyncio.gather(*(writer(i) for i in range(200)))
    assert 1 <= store.batches <= 3
    for doc in docs:
        assert heads_of(await store.load(doc.id)) == doc.heads
    await store.close()


async def test_a_failed_flush_raises_and_keeps_the_bytes_queued(postgres_url: str) -> None:
    """With the database refusing writes, flush raises StorageError; once it accepts, it commits."""
    doc = Doc()
    store = await opened(postgres_url)
    store.append(doc.id, doc.change("a"))
    await store.flush()
    database = postgres_url.rsplit("/", 1)[-1]
    sql(postgres_url, f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    assert terminate_other_sessions(postgres_url) == 1
    store.append(doc.id, doc.change("b"))
    with pytest.raises(StorageError, match="read-only"):
        await store.flush()
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"  # the database refuses writes
    sql(admin, f"ALTER DATABASE {database} RESET default_transaction_read_only")
    terminate_other_sessions(postgres_url)
    await store.flush()
    await store.close()
    again = await opened(postgres_url)
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_a_lost_connection_is_opened_again(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After the server ends the store's session, the next operation reconnects and works."""
    doc = Doc()
    store = await opened(postgres_url)
    store.append(doc.id, doc.change("a"))
    await store.flush()
    assert terminate_other_sessions(postgres_url) == 1
    store.append(doc.id, doc.change("b"))
    await store.flush()
    assert "connecting again" in caplog.text
    # The reconnected session holds the lock again: a second writer is still refused.
    with pytest.raises(StoreLocked):
        await opened(postgres_url)
    await store.close()
    again = await opened(postgres_url)
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_one_writing_store_per_database(postgres_url: str) -> None:
    """A second store on a database in use is refused; read-only ones are not; after close, fine."""
    doc = Doc()
    first = await opened(postgres_url)
    first.append(doc.id, doc.change())
    await first.flush()
    with pytest.raises(StoreLocked, match="in use by another store"):
        await opened(postgres_url)
    reader = await opened(postgres_url, read_only=True)
    assert reader.storage_id == first.storage_id
    assert heads_of(await reader.load(doc.id)) == doc.heads
    with pytest.raises(StorageError, match="read-only"):
        reader.append(doc.id, doc.change("other"))
    await reader.close()
    await first.close()
    second = await opened(postgres_url)
    await second.close()


async def test_a_closed_store_frees_the_database_at_once(postgres_url: str) -> None:
    """A store opened right after another closed is not refused.

    PostgreSQL ends a session's backend (and releases its locks) a moment
    after the client hangs up; a restart must not meet the lock of the
    store it replaces (seen in CI: two shared stores closed, the exclusive
    one opened next was refused).
    """
    for _ in range(40):
        shared = [await opened(postgres_url, shared=True) for _ in range(2)]
        for store in shared:
            await store.close()
        alone = await opened(postgres_url)
        await alone.close()


async def test_compaction_keeps_what_was_appended_meanwhile(postgres_url: str) -> None:
    """Bytes appended and committed while a compaction runs stay; the covered rows go."""
    doc = Doc()
    store = await opened(postgres_url)
    for i in range(3):
        store.append(doc.id, doc.change(f"a{i}"))
        await store.flush()
    snapshot, heads = doc.doc.save(), doc.doc.get_heads()
    compacting = asyncio.ensure_future(store.compact(doc.id, snapshot, heads))
    store.append(doc.id, doc.change("after"))  # after the call: not in the snapshot
    await asyncio.gather(compacting, store.flush())
    rows = sql(
        postgres_url,
        "SELECT kind, count(*) FROM autosync_chunks WHERE doc_id = %s GROUP BY kind",
        (doc.id,),
    )
    assert dict(rows) == {"snapshot": 1, "incremental": 1}  # type: ignore[arg-type]
    await store.close()
    again = await opened(postgres_url)
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_a_snapshot_that_does_not_verify_changes_nothing(postgres_url: str) -> None:
    """verify() returning False rolls the compaction back: the same rows remain."""
    doc = Doc()
    store = await opened(postgres_url)
    store.append(doc.id, doc.change())
    await store.flush()
    before = sql(postgres_url, "SELECT seq, kind, data FROM autosync_chunks ORDER BY seq")
    with pytest.raises(StorageError, match="nothing was removed"):
        await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads(), verify=lambda _: False)
    assert sql(postgres_url, "SELECT seq, kind, data FROM autosync_chunks ORDER BY seq") == before
    assert heads_of(await store.load(doc.id)) == doc.heads
    await store.close()


async def test_rows_another_process_wrote_survive_a_compaction(postgres_url: str) -> None:
    """A compaction deletes only rows this store read or wrote, never one it has not seen."""
    doc = Doc()
    store = await opened(postgres_url)
    store.append(doc.id, doc.change("ours"))
    await store.flush()
    snapshot, heads = doc.doc.save(), doc.doc.get_heads()
    sql(  # written behind the store's back, e.g. by an operator's import
        postgres_url,
        "INSERT INTO autosync_chunks (doc_id, kind, data) VALUES (%s, 'incremental', %s)",
        (doc.id, doc.change("theirs")),
    )
    await store.compact(doc.id, snapshot, heads)
    kinds = sql(postgres_url, "SELECT kind FROM autosync_chunks WHERE doc_id = %s", (doc.id,))
    assert sorted(k for (k,) in kinds) == ["incremental", "snapshot"]
    assert heads_of(await store.load(doc.id)) == doc.heads
    await store.close()


async def test_damaged_rows_are_set_aside_and_the_rest_loads(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte in a row: the original goes to autosync_corrupt, its sound chunks stay."""
    damaged, healthy = Doc(), Doc()
    store = await opened(postgres_url)
    chunks = [damaged.change(f"k{i}") for i in range(3)]
    store.append(damaged.id, b"".join(chunks))
    store.append(healthy.id, healthy.change())
    await store.close()
    ((original,),) = sql(
        postgres_url, "SELECT data FROM autosync_chunks WHERE doc_id = %s", (damaged.id,)
    )
    bad = bytearray(original)  # type: ignore[arg-type]
    bad[len(chunks[0]) + len(chunks[1]) // 2] ^= 0xFF
    sql(
        postgres_url,
        "UPDATE autosync_chunks SET data = %s WHERE doc_id = %s",
        (bytes(bad), damaged.id),
    )
    again = await opened(postgres_url)
    assert sql(postgres_url, "SELECT count(*) FROM autosync_corrupt") == [(0,)]  # open reads none
    assert await again.load(damaged.id) == chunks[0] + chunks[2]
    damage = again.damage(damaged.id)
    assert damage.damaged_bytes == len(chunks[1]) and damage.files == 1
    assert [str(p) for p in damage.set_aside] == ["autosync_corrupt/1"]
    assert heads_of(await again.load(healthy.id)) == healthy.heads
    await again.close()
    assert "damaged bytes" in caplog.text
    assert sql(postgres_url, "SELECT doc_id, data FROM autosync_corrupt") == [
        (damaged.id, bytes(bad))
    ]
    assert sql(
        postgres_url, "SELECT data FROM autosync_chunks WHERE doc_id = %s", (damaged.id,)
    ) == [(chunks[0] + chunks[2],)]


async def test_read_only_store_repairs_nothing(postgres_url: str) -> None:
    """Read-only, a damaged row is skipped in the result and left as it is in the table."""
    doc = Doc()
    store = await opened(postgres_url)
    good = doc.change("a")
    store.append(doc.id, good)
    await store.close()
    sql(
        postgres_url,
        "UPDATE autosync_chunks SET data = data || %s WHERE doc_id = %s",
        (b"\x85\x6f\x4a\x83junk", doc.id),
    )
    reader = await opened(postgres_url, read_only=True)
    assert await reader.load(doc.id) == good
    assert reader.damage(doc.id).damaged_bytes == 8
    await reader.close()
    assert sql(postgres_url, "SELECT count(*) FROM autosync_corrupt") == [(0,)]
    assert sql(postgres_url, "SELECT data FROM autosync_chunks") == [(good + b"\x85oJ\x83junk",)]


async def test_rows_whose_id_is_not_a_document_id_are_skipped(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile doc_id written into the table is not listed, and left alone."""
    store = await opened(postgres_url)
    await store.close()
    sql(
        postgres_url,
        "INSERT INTO autosync_chunks (doc_id, kind, data) VALUES ('../../etc', 'incremental', %s)",
        (Doc().change(),),
    )
    again = await opened(postgres_url)
    assert again.document_ids() == set()
    await again.close()
    assert "not a document id" in caplog.text
    assert sql(postgres_url, "SELECT count(*) FROM autosync_chunks") == [(1,)]


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    """Tables of a newer schema version are refused, not written to."""
    store = await opened(postgres_url)
    await store.close()
    assert sql(postgres_url, "SELECT value FROM autosync_meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    sql(postgres_url, "UPDATE autosync_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StorageError, match="schema version '99'"):
        await opened(postgres_url)


async def test_read_only_on_an_empty_database_says_so(postgres_url: str) -> None:
    """A read-only store on a database without the tables fails and creates nothing."""
    with pytest.raises(StorageError, match="no autosync store"):
        await opened(postgres_url, read_only=True)
    assert sql(postgres_url, "SELECT to_regclass('autosync_chunks') IS NULL") == [(True,)]


async def test_two_stores_opening_a_new_database_at_once(postgres_url: str) -> None:
    """Creating the tables races safely: one store opens, the other is told the store is in use."""
    results = await asyncio.gather(
        opened(postgres_url), opened(postgres_url), return_exceptions=True
    )
    stores = [r for r in results if isinstance(r, PostgresStore)]
    refused = [r for r in results if isinstance(r, StoreLocked)]
    assert len(stores) == 1 and len(refused) == 1, results
    await stores[0].close()


async def test_unreachable_database_is_a_storage_error(
    postgres_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that does not exist fails open() with StorageError, without the password."""
    url = "postgresql://autosync:s3cret@127.0.0.1:1/nothing?connect_timeout=2"
    store = PostgresStore(url)
    with pytest.raises(StorageError) as failure:
        await store.open()
    assert "s3cret" not in str(failure.value) and "s3cret" not in repr(store)
    assert "***" in repr(store)


def test_open_store_takes_a_postgres_url() -> None:
    """open_store() gives a PostgresStore for postgresql:// and postgres:// URLs."""
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert store.durable


def test_the_install_hint_names_the_extra() -> None:
    """The message for a missing psycopg tells the pip command."""
    assert "autosync-jupyter[postgres]" in INSTALL_HINT


async def test_logs_name_no_password(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A URL with a password is logged without it."""
    caplog.set_level(logging.INFO)
    url = postgres_url.replace("autosync@", "autosync:hunter2@")
    store = await opened(url)  # trust authentication ignores the password
    await store.close()
    assert "opened postgresql://autosync:***@" in caplog.text
    assert "hunter2" not in caplog.text
