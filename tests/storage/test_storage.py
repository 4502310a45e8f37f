"""Tests of autosync_jupyter.storage, with real files and real automerge documents."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import automerge.core as am
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autosync_jupyter.crdt.chunks import chunk_end, scan_chunks
from autosync_jupyter.errors import InvalidDocumentId, StorageError
from autosync_jupyter.ids import generate_document_id
from autosync_jupyter.storage import FileStore, MemoryStore, PostgresStore, Store, open_store

FLOOR = 1024  # a small compaction floor keeps the documents in these tests small
JS_STORAGE_ID = "0a03f2f8-f53f-4988-a2ed-577789c07249"


# --------------------------------------------------------------------------
# Helpers


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


def js_heads_hash(heads: list[bytes]) -> str:
    """automerge-repo's headsHash, written independently of the module under test."""
    return hashlib.sha256("".join(sorted(h.hex() for h in heads)).encode()).hexdigest()


def doc_dir(root: Path, doc_id: str) -> Path:
    return root / doc_id[:2] / doc_id[2:]


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def append_files(root: Path, doc_id: str) -> list[Path]:
    return sorted((doc_dir(root, doc_id) / "incremental").glob("append-*"))


def js_load(root: Path, doc_id: str) -> bytes:
    """Concatenate a document's files the way JS automerge-repo's NodeFS loader does."""
    base = doc_dir(root, doc_id)
    pieces = []
    for kind in ("snapshot", "incremental"):
        pieces += [p.read_bytes() for p in sorted((base / kind).rglob("*")) if p.is_file()]
    return b"".join(pieces)


async def reopened(root: Path) -> FileStore:
    store = FileStore(root, compaction_floor=FLOOR)
    await store.open()
    return store


def crash(store: FileStore) -> None:
    """Simulate the death of the process: drop the store without flushing or closing it."""
    assert store._io is not None
    store._io.shutdown(wait=True)
    store._disk.close()  # the directory lock, which the OS frees when a process dies


class FsyncGate:
    """Stand-in for os.fsync that holds the next call until released."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, fd: int) -> None:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.released.wait(10)
        self.real(fd)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsyncGate]:
    gate = FsyncGate(os.fsync)
    monkeypatch.setattr(os, "fsync", gate)
    yield gate
    gate.released.set()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def file_store(root: Path) -> AsyncIterator[FileStore]:
    store = FileStore(root, compaction_floor=FLOOR)
    await store.open()
    yield store
    await store.close()


def make_store(kind: str, root: Path, request: pytest.FixtureRequest) -> Store:
    """A store of ``kind`` (not opened): in memory, in ``root``, or in a new database."""
    if kind == "memory":
        return MemoryStore(compaction_floor=FLOOR)
    if kind == "postgres":
        return PostgresStore(request.getfixturevalue("postgres_url"), compaction_floor=FLOOR)
    return FileStore(root, compaction_floor=FLOOR)


@pytest.fixture(params=["memory", "file", "postgres"])
async def store(request: pytest.FixtureRequest, root: Path) -> AsyncIterator[Store]:
    store = make_store(request.param, root, request)
    await store.open()
    yield store
    await store.close()


# --------------------------------------------------------------------------
# The interface, for every store


async def test_unknown_document_loads_as_none(store: Store) -> None:
    """load() returns None for a document the store has never held."""
    assert await store.load(generate_document_id()) is None


async def test_appended_changes_load_back(store: Store) -> None:
    """Flushed appends load back into the same document."""
    doc = Doc()
    for i in range(3):
        store.append(doc.id, doc.change(f"k{i}", "v"))
    await store.flush()
    assert heads_of(await store.load(doc.id)) == doc.heads


async def test_load_includes_appends_not_yet_flushed(store: Store) -> None:
    """load() sees appends that no flush has written yet."""
    doc = Doc()
    store.append(doc.id, doc.change())
    assert heads_of(await store.load(doc.id)) == doc.heads


async def test_document_ids_track_appends(store: Store) -> None:
    """An appended document is listed and contained."""
    doc = Doc()
    store.append(doc.id, doc.change())
    assert store.document_ids() == {doc.id}
    assert doc.id in store
    assert generate_document_id() not in store


async def test_contains_is_false_for_non_ids(store: Store) -> None:
    """`in` answers False, without raising, for anything that is not a held id."""
    assert "../x" not in store
    assert 42 not in store
    assert None not in store


async def test_compact_keeps_document_and_later_appends(store: Store) -> None:
    """After compaction the snapshot plus later appends load to the latest heads."""
    doc = Doc()
    store.append(doc.id, doc.change("a", "1"))
    await store.flush()
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    store.append(doc.id, doc.change("b", "2"))
    await store.flush()
    assert heads_of(await store.load(doc.id)) == doc.heads


async def test_needs_compaction_when_changes_outgrow_the_floor(store: Store) -> None:
    """needs_compaction turns True past the floor and False after compact()."""
    doc = Doc()
    store.append(doc.id, doc.change("k", "v"))
    assert not store.needs_compaction(doc.id)
    for i in range(100):
        if store.needs_compaction(doc.id):
            break
        store.append(doc.id, doc.change("k", f"{i} {'x' * 200}"))
    assert store.needs_compaction(doc.id)
    await store.flush()
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    assert not store.needs_compaction(doc.id)


async def test_delete_forgets_the_document(store: Store) -> None:
    """delete() drops stored and queued bytes alike."""
    doc = Doc()
    store.append(doc.id, doc.change("a", "1"))
    await store.flush()
    store.append(doc.id, doc.change("b", "2"))
    await store.delete(doc.id)
    await store.flush()
    assert await store.load(doc.id) is None
    assert doc.id not in store


@pytest.mark.parametrize(
    "name",
    ["../x", "..", ".", "a/b", "/etc/passwd", "", "x" * 200, "4N/../../x", "1" * 30, 42, None],
)
async def test_invalid_ids_are_refused_before_any_path(
    store: Store, name: Any, tmp_path: Path
) -> None:
    """Every method refuses a hostile id with InvalidDocumentId and touches no file."""
    before = files_under(tmp_path)
    chunk = Doc().change()
    with pytest.raises(InvalidDocumentId):
        store.append(name, chunk)
    with pytest.raises(InvalidDocumentId):
        await store.load(name)
    with pytest.raises(InvalidDocumentId):
        await store.compact(name, am.Document().save(), [])
    with pytest.raises(InvalidDocumentId):
        await store.delete(name)
    await store.flush()
    assert not store.needs_compaction(name)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("data", [b"", b"hello", b"\x85\x6f\x4a\x83" + b"\0" * 6])
async def test_append_refuses_bytes_that_are_not_chunks(store: Store, data: bytes) -> None:
    """append() raises ValueError for bytes that are not automerge chunks."""
    with pytest.raises(ValueError, match="not a sequence of automerge chunks"):
        store.append(generate_document_id(), data)


async def test_append_refuses_a_chunk_with_a_bad_checksum(store: Store) -> None:
    """append() raises ValueError when one bit of a change is flipped."""
    chunk = bytearray(Doc().change())
    chunk[-1] ^= 1
    with pytest.raises(ValueError):
        store.append(generate_document_id(), bytes(chunk))


async def test_compressed_changes_are_accepted(store: Store) -> None:
    """Large changes, which automerge deflates (chunk type 2), pass the checksum check."""
    doc = Doc()
    heads = doc.doc.get_heads()
    with doc.doc.transaction() as tx:
        for i in range(300):
            tx.put(am.ROOT, f"key{i}", am.ScalarType.Str, f"value {i}")
    chunk = b"".join(c.bytes for c in doc.doc.get_changes(heads))
    assert chunk[8] == 2
    store.append(doc.id, chunk)
    await store.flush()
    assert heads_of(await store.load(doc.id)) == doc.heads


async def test_append_after_close_raises(store: Store) -> None:
    """A closed store refuses appends with StorageError."""
    await store.close()
    doc = Doc()
    with pytest.raises(StorageError):
        store.append(doc.id, doc.change())


@pytest.mark.parametrize("kind", ["memory", "file", "postgres"])
async def test_store_must_be_opened_first(
    kind: str, root: Path, request: pytest.FixtureRequest
) -> None:
    """Using a store before open() raises StorageError, for every kind alike."""
    store = make_store(kind, root, request)
    doc = Doc()
    with pytest.raises(StorageError):
        store.append(doc.id, doc.change())
    with pytest.raises(StorageError):
        await store.load(doc.id)
    with pytest.raises(StorageError):
        _ = store.storage_id


async def test_storage_id_is_a_uuid(store: Store) -> None:
    """The storage id is UUID text."""
    assert str(uuid.UUID(store.storage_id)) == store.storage_id


@pytest.mark.parametrize(
    ("data_dir", "kind", "durable"), [(None, MemoryStore, False), ("d", FileStore, True)]
)
def test_open_store_picks_the_kind(
    data_dir: str | None, kind: type[Store], durable: bool, tmp_path: Path
) -> None:
    """open_store(None) is a memory store, open_store(dir) a durable file store."""
    store = open_store(None if data_dir is None else tmp_path / data_dir)
    assert isinstance(store, kind)
    assert store.durable is durable


# --------------------------------------------------------------------------
# FileStore: durability and group commit


async def test_changes_survive_close_and_reopen(root: Path) -> None:
    """Appends flushed by close() load back in a new store on the same directory."""
    doc = Doc()
    store = await reopened(root)
    for i in range(5):
        store.append(doc.id, doc.change(f"k{i}"))
    await store.close()
    again = await reopened(root)
    assert again.document_ids() == {doc.id}
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_flush_alone_makes_appends_durable(root: Path) -> None:
    """After flush() returns, a fresh store sees the change without any close()."""
    doc = Doc()
    store = await reopened(root)
    store.append(doc.id, doc.change())
    await store.flush()
    crash(store)
    other = await reopened(root)
    assert heads_of(await other.load(doc.id)) == doc.heads
    await other.close()


async def test_a_directory_is_open_in_one_store_at_a_time(
    file_store: FileStore, root: Path
) -> None:
    """A second store on an open directory is refused; once closed, it opens again."""
    with pytest.raises(StorageError, match="in use by another store"):
        await reopened(root)
    await file_store.close()
    again = await reopened(root)
    await again.close()


async def test_flush_fsyncs_the_append_file(
    file_store: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flush() returns only after the new append file and its directory entry are fsync'd."""
    synced: set[int] = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.add(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    doc = Doc()
    file_store.append(doc.id, doc.change())
    await file_store.flush()
    (log,) = append_files(root, doc.id)
    assert log.stat().st_ino in synced
    assert log.parent.stat().st_ino in synced


async def test_concurrent_flushes_share_batches(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 coroutines appending and flushing at once cost a few batches, not 200 fsyncs."""
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    docs = [Doc() for _ in range(10)]

    async def writer(i: int) -> None:
        doc = docs[i % len(docs)]
        file_store.append(doc.id, doc.change(f"k{i}"))
        await file_store.flush()

    await asyncio.gather(*(writer(i) for i in range(200)))
    assert file_store.batches <= 3
    # Per document: the file, its new directories and the new entry.
    assert calls <= 6 * len(docs) * file_store.batches
    for doc in docs:
        assert heads_of(await file_store.load(doc.id)) == doc.heads


async def test_flushes_during_a_batch_share_the_next_batch(
    file_store: FileStore, gate: FsyncGate
) -> None:
    """Callers that flush while a batch is on its way to disk all ride the one next batch."""
    doc = Doc()
    file_store.append(doc.id, doc.change("first"))
    gate.armed = True
    first = asyncio.create_task(file_store.flush())
    await gate.wait_entered()

    async def late(i: int) -> None:
        file_store.append(doc.id, doc.change(f"late{i}"))
        await file_store.flush()

    late_flushes = [asyncio.create_task(late(i)) for i in range(50)]
    await asyncio.sleep(0.01)
    assert not first.done()
    assert not any(flush.done() for flush in late_flushes)
    gate.released.set()
    await asyncio.gather(first, *late_flushes)
    assert file_store.batches == 2


async def test_file_io_stays_off_the_event_loop_thread(
    file_store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync runs on a worker thread, never on the thread running the event loop."""
    threads = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        threads.add(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    doc = Doc()
    file_store.append(doc.id, doc.change())
    await file_store.flush()
    await file_store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    assert threads
    assert threading.get_ident() not in threads


async def test_failed_flush_raises_and_the_next_flush_retries(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync error fails the flush with StorageError; the bytes stay queued for the next."""
    store = await reopened(root)
    real_fsync = os.fsync
    failures = [OSError(5, "simulated I/O error")]

    def failing_fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    doc = Doc()
    store.append(doc.id, doc.change())
    with pytest.raises(StorageError, match="simulated I/O error"):
        await store.flush()
    await store.flush()
    await store.close()
    again = await reopened(root)
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


# --------------------------------------------------------------------------
# FileStore: layout and compaction


async def test_layout_follows_the_js_adapter(file_store: FileStore, root: Path) -> None:
    """Snapshots are named by the JS heads hash; our log never takes a 64-hex name."""
    doc = Doc()
    file_store.append(doc.id, doc.change("a"))
    await file_store.flush()
    heads_hash = js_heads_hash(doc.heads)
    await file_store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    file_store.append(doc.id, doc.change("b"))
    await file_store.flush()
    prefix = f"{doc.id[:2]}/{doc.id[2:]}"
    assert files_under(root) == {
        ".lock",
        "st/orage-adapter-id",
        f"{prefix}/snapshot/{heads_hash}",
        f"{prefix}/incremental/append-000001",  # the previous generation, kept
        f"{prefix}/incremental/append-000002",
    }


async def test_compaction_keeps_one_generation_back(root: Path) -> None:
    """A compaction removes what the one before it covered, never what it covers itself.

    On disk: the new snapshot and the logs after it, and the previous
    generation (what the new snapshot replaced), so one damaged file never
    costs the document.
    """
    doc = write_js_directory(root)
    store = await reopened(root)
    await store.load(doc.id)
    before = files_under(doc_dir(root, doc.id))
    store.append(doc.id, doc.change("py"))
    await store.flush()
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    first = f"snapshot/{js_heads_hash(doc.heads)}"
    kept = files_under(doc_dir(root, doc.id))
    assert before | {first, "incremental/append-000001"} == kept
    store.append(doc.id, doc.change("later"))
    await store.flush()
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    await store.close()
    second = f"snapshot/{js_heads_hash(doc.heads)}"
    assert files_under(doc_dir(root, doc.id)) == {
        first,
        "incremental/append-000002",
        second,
        "sync-state/peer",
    }


async def test_compaction_keeps_files_it_never_loaded(root: Path) -> None:
    """Files on disk that this process never read are not deleted by a compaction."""
    js = write_js_directory(root)
    store = await reopened(root)
    other = Doc()
    await store.compact(js.id, other.doc.save(), other.doc.get_heads())
    await store.close()
    names = files_under(doc_dir(root, js.id))
    assert sum(name.startswith("incremental/") for name in names) == 2
    assert sum(name.startswith("snapshot/") for name in names) == 2


async def test_crash_during_compaction_removals_leaves_a_loadable_directory(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the new snapshot but before the old files go loads everything."""
    store = await reopened(root)
    doc = Doc()
    store.append(doc.id, doc.change("a"))
    await store.flush()
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    store.append(doc.id, doc.change("b"))
    await store.flush()

    def crashing_unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", crashing_unlink)
        with pytest.raises(StorageError, match="simulated crash"):
            await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    snapshots = list((doc_dir(root, doc.id) / "snapshot").iterdir())
    assert len(snapshots) == 2
    crash(store)
    after_crash = await reopened(root)
    assert heads_of(await after_crash.load(doc.id)) == doc.heads
    await after_crash.close()


async def test_failed_snapshot_write_keeps_the_old_files(
    file_store: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename of a new snapshot fails, the old files and no temporary file remain."""
    doc = Doc()
    file_store.append(doc.id, doc.change())
    await file_store.flush()
    before = files_under(root)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_replace)
        with pytest.raises(StorageError):
            await file_store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    assert files_under(root) == before
    assert heads_of(await file_store.load(doc.id)) == doc.heads


async def test_leftover_temporary_files_are_removed_at_open(root: Path) -> None:
    """Temporary files from an interrupted write are neither loaded nor kept."""
    doc = Doc()
    store = await reopened(root)
    store.append(doc.id, doc.change())
    await store.close()
    base = doc_dir(root, doc.id)
    (base / "snapshot").mkdir()
    leftovers = [
        base / "0123.tmp-0badf00d",
        base / "snapshot" / "abcd.tmp-12345678",
        base / "incremental" / "append-000001.tmp-deadbeef",
        root / "st" / "orage-adapter-id.tmp-00000000",
    ]
    for path in leftovers:
        path.write_bytes(b"\x85\x6f\x4a\x83half a chunk")
    again = await reopened(root)
    assert heads_of(await again.load(doc.id)) == doc.heads
    assert not any(path.exists() for path in leftovers)
    assert not (root / ".corrupt").exists()
    await again.close()


async def test_read_only_store_reads_a_directory_in_use(file_store: FileStore, root: Path) -> None:
    """A read-only store opens a directory another store holds, and sees flushed changes."""
    doc = Doc()
    file_store.append(doc.id, doc.change())
    await file_store.flush()
    reader = FileStore(root, read_only=True)
    await reader.open()
    assert reader.storage_id == file_store.storage_id
    assert heads_of(await reader.load(doc.id)) == doc.heads
    await reader.close()


async def test_read_only_store_refuses_writes(root: Path) -> None:
    """append, compact and delete raise StorageError on a read-only store."""
    root.mkdir()
    reader = FileStore(root, read_only=True)
    await reader.open()
    doc = Doc()
    with pytest.raises(StorageError, match="read-only"):
        reader.append(doc.id, doc.change())
    with pytest.raises(StorageError, match="read-only"):
        await reader.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    with pytest.raises(StorageError, match="read-only"):
        await reader.delete(doc.id)
    await reader.close()


async def test_read_only_store_changes_no_file(root: Path) -> None:
    """Reading read-only skips a torn tail and a leftover temporary file without touching them."""
    doc = Doc()
    store = await reopened(root)
    chunks = [doc.change("a"), doc.change("b")]
    store.append(doc.id, b"".join(chunks))
    await store.close()
    (log,) = append_files(root, doc.id)
    os.truncate(log, log.stat().st_size - 3)
    (log.parent / "x.tmp-01234567").write_bytes(b"leftover")
    before = {name: (root / name).read_bytes() for name in files_under(root)}

    reader = FileStore(root, read_only=True)
    await reader.open()
    assert await reader.load(doc.id) == chunks[0]
    await reader.close()
    assert {name: (root / name).read_bytes() for name in files_under(root)} == before


# --------------------------------------------------------------------------
# FileStore: damaged files


async def test_empty_log_left_by_a_crash_is_not_a_document(root: Path) -> None:
    """A log file created but never written (a crash in between) does not list a document."""
    doc_id = generate_document_id()
    (doc_dir(root, doc_id) / "incremental").mkdir(parents=True)
    (doc_dir(root, doc_id) / "incremental" / "append-000001").write_bytes(b"")
    store = await reopened(root)
    assert doc_id not in store
    assert await store.load(doc_id) is None
    await store.close()


async def test_torn_tail_is_cut_off_and_the_rest_loads(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A last chunk cut short is moved to .corrupt, the file truncated, the rest loaded."""
    doc = Doc()
    store = await reopened(root)
    chunks = []
    for i in range(3):
        chunks.append(doc.change(f"k{i}"))
        store.append(doc.id, chunks[-1])
        await store.flush()
    await store.close()
    (log,) = append_files(root, doc.id)
    os.truncate(log, log.stat().st_size - 5)
    expected = heads_of(chunks[0] + chunks[1])

    again = await reopened(root)
    assert heads_of(await again.load(doc.id)) == expected
    await again.close()
    assert log.read_bytes() == chunks[0] + chunks[1]
    (aside,) = (root / ".corrupt" / doc.id).iterdir()
    assert aside.read_bytes() == chunks[2][:-5]
    assert "damaged bytes" in caplog.text


async def test_damage_inside_a_file_keeps_its_sound_chunks(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte in a middle chunk loses that chunk only; the original is set aside."""
    doc = Doc()
    store = await reopened(root)
    chunks = [doc.change(f"k{i}") for i in range(3)]
    store.append(doc.id, b"".join(chunks))
    await store.close()
    (log,) = append_files(root, doc.id)
    original = log.read_bytes()
    damaged = bytearray(original)
    damaged[len(chunks[0]) + len(chunks[1]) // 2] ^= 0xFF
    log.write_bytes(bytes(damaged))

    again = await reopened(root)
    assert await again.load(doc.id) == chunks[0] + chunks[2]
    await again.close()
    assert log.read_bytes() == chunks[0] + chunks[2]
    (aside,) = (root / ".corrupt" / doc.id).iterdir()
    assert aside.read_bytes() == bytes(damaged)
    assert "damaged bytes" in caplog.text


async def test_corrupt_snapshot_is_set_aside_and_other_documents_load(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged snapshot goes to .corrupt; the document's other files and other documents load."""
    damaged, healthy = Doc(), Doc()
    store = await reopened(root)
    store.append(damaged.id, damaged.change("a"))
    store.append(healthy.id, healthy.change("a"))
    await store.flush()
    await store.compact(damaged.id, damaged.doc.save(), damaged.doc.get_heads())
    later = damaged.change("b")
    store.append(damaged.id, later)
    await store.close()
    (snapshot,) = (doc_dir(root, damaged.id) / "snapshot").iterdir()
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))

    again = await reopened(root)
    # The previous generation (the log the snapshot replaced) is still there.
    assert heads_of(await again.load(damaged.id)) == damaged.heads
    assert heads_of(await again.load(healthy.id)) == healthy.heads
    await again.close()
    assert not snapshot.exists()
    (aside,) = (root / ".corrupt" / damaged.id).iterdir()
    assert aside.read_bytes() == bytes(data)
    assert damaged.id in caplog.text


@given(
    cut=st.integers(min_value=0, max_value=2000),
    flip=st.integers(min_value=0, max_value=2000),
    noise=st.binary(max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_scan_tiles_any_damaged_input(cut: int, flip: int, noise: bytes) -> None:
    """The chunk scanner splits any damaged input into sound chunks and bad regions, in order."""
    data = bytearray(SAMPLE_CHUNKS)
    data[flip % len(data)] ^= 0x55
    damaged = bytes(data[: cut % len(data)]) + noise + bytes(data[cut % len(data) :])
    scan = scan_chunks(damaged)
    regions = sorted(scan.good + scan.bad)
    assert [start for start, _ in regions] == [0] + [end for _, end in regions[:-1]]
    assert regions[-1][1] == len(damaged)
    assert all(chunk_end(damaged, start) == end for start, end in scan.good)


def _sample_chunks() -> bytes:
    doc = Doc()
    pieces = [doc.change("a"), doc.change("b", "x" * 100), doc.doc.save(), doc.change("c")]
    heads = doc.doc.get_heads()
    with doc.doc.transaction() as tx:
        for i in range(60):
            tx.put(am.ROOT, f"key{i}", am.ScalarType.Str, f"value {i}")
    pieces += [c.bytes for c in doc.doc.get_changes(heads)]
    return b"".join(pieces)


SAMPLE_CHUNKS = _sample_chunks()


def test_sample_chunks_scan_clean() -> None:
    """Undamaged chunks (documents, changes, compressed changes) scan without a bad region."""
    scan = scan_chunks(SAMPLE_CHUNKS)
    assert scan.bad == []
    assert [SAMPLE_CHUNKS[start + 8] for start, _ in scan.good] == [1, 1, 0, 1, 2]


# --------------------------------------------------------------------------
# FileStore: directories written by others


def write_js_directory(root: Path) -> Doc:
    """Write a document exactly as JS NodeFSStorageAdapter lays it out."""
    doc = Doc()
    doc.change("a")
    snapshot = doc.doc.save()
    base = doc_dir(root, doc.id)
    (root / "st").mkdir(parents=True)
    (root / "st" / "orage-adapter-id").write_text(JS_STORAGE_ID)
    (base / "snapshot").mkdir(parents=True)
    (base / "snapshot" / js_heads_hash(doc.heads)).write_bytes(snapshot)
    (base / "incremental").mkdir()
    for key in ("b", "c"):
        chunk = doc.change(key)
        (base / "incremental" / hashlib.sha256(chunk).hexdigest()).write_bytes(chunk)
    (base / "sync-state").mkdir()
    (base / "sync-state" / "peer").write_bytes(b"not decodable here")
    return doc


async def test_js_directory_loads(root: Path) -> None:
    """A NodeFS directory (snapshot plus per-change files) loads to the document's heads."""
    doc = write_js_directory(root)
    store = await reopened(root)
    assert store.document_ids() == {doc.id}
    assert heads_of(await store.load(doc.id)) == doc.heads
    await store.close()


async def test_storage_id_is_reused_from_a_js_directory(root: Path) -> None:
    """The JS server's st/orage-adapter-id becomes this store's id."""
    write_js_directory(root)
    store = await reopened(root)
    assert store.storage_id == JS_STORAGE_ID
    await store.close()


async def test_storage_id_persists_across_runs(root: Path) -> None:
    """A new directory gets a storage id that the next run reads back."""
    first = await reopened(root)
    await first.close()
    second = await reopened(root)
    assert second.storage_id == first.storage_id
    assert (root / "st" / "orage-adapter-id").read_text() == first.storage_id
    await second.close()


async def test_unusable_storage_id_is_replaced(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty storage id file (a JS write cut short) is replaced by a new UUID."""
    (root / "st").mkdir(parents=True)
    (root / "st" / "orage-adapter-id").write_bytes(b"")
    store = await reopened(root)
    assert uuid.UUID(store.storage_id)
    assert "no usable storage id" in caplog.text
    await store.close()


async def test_our_directory_stays_loadable_by_js(root: Path) -> None:
    """JS's rule (every snapshot file, then every incremental file) loads what we wrote."""
    doc = write_js_directory(root)
    store = await reopened(root)
    await store.load(doc.id)
    store.append(doc.id, doc.change("py1"))
    await store.flush()
    assert heads_of(js_load(root, doc.id)) == doc.heads
    await store.compact(doc.id, doc.doc.save(), doc.doc.get_heads())
    store.append(doc.id, doc.change("py2"))
    await store.close()
    assert heads_of(js_load(root, doc.id)) == doc.heads


async def test_sync_state_directories_are_left_alone(root: Path) -> None:
    """JS sync-state files are neither read nor changed, and none are written."""
    doc = write_js_directory(root)
    sync_state = doc_dir(root, doc.id) / "sync-state" / "peer"
    store = await reopened(root)
    await store.load(doc.id)
    other = Doc()
    store.append(other.id, other.change())
    await store.close()
    assert sync_state.read_bytes() == b"not decodable here"
    assert list(root.rglob("sync-state")) == [sync_state.parent]


async def test_r_layout_loads(root: Path) -> None:
    """An R package `<id>.automerge` file loads as the document's snapshot."""
    doc = Doc()
    doc.change("a")
    root.mkdir()
    (root / f"{doc.id}.automerge").write_bytes(doc.doc.save())
    (root / ".sync_states" / "peer").mkdir(parents=True)
    (root / ".sync_states" / "peer" / f"{doc.id}.sync").write_bytes(b"ignored")
    store = await reopened(root)
    assert store.document_ids() == {doc.id}
    assert heads_of(await store.load(doc.id)) == doc.heads
    await store.close()


async def test_names_that_are_not_documents_are_skipped(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Entries whose names are not document ids are skipped with a warning and left alone."""
    strangers = [
        root / "not-an-id.automerge",
        root / "README",
        root / "zz" / "not!valid" / "snapshot" / "x",
        root / "4N" / "MNnkMhL8jXrdJ9jamS58PAVdXv" / "snapshot" / "x",  # bad checksum
    ]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    store = await reopened(root)
    assert store.document_ids() == set()
    await store.close()
    assert all(path.exists() for path in strangers)
    assert "not-an-id.automerge" in caplog.text
    assert "README" in caplog.text
    assert "not!valid" in caplog.text
    assert "MNnkMhL8jXrdJ9jamS58PAVdXv" in caplog.text


async def test_delete_removes_every_file_of_the_document(root: Path) -> None:
    """delete() removes the document directory and its R file, for good."""
    doc = write_js_directory(root)
    (root / f"{doc.id}.automerge").write_bytes(doc.doc.save())
    store = await reopened(root)
    await store.delete(doc.id)
    await store.close()
    assert files_under(root) == {".lock", "st/orage-adapter-id"}
    again = await reopened(root)
    assert doc.id not in again
    await again.close()


# --------------------------------------------------------------------------
# FileStore: opening lists nothing; `in` asks the disk; the listing is lazy


async def write_documents(root: Path, count: int) -> list[Doc]:
    store = await reopened(root)
    docs = [Doc() for _ in range(count)]
    for doc in docs:
        store.append(doc.id, doc.change())
    await store.close()
    return docs


async def test_open_lists_nothing_and_in_asks_the_disk(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = await write_documents(root, 3)
    store = FileStore(root)

    def no_listing(self: object) -> None:
        raise AssertionError("open() or `in` listed the whole store")

    monkeypatch.setattr("autosync_jupyter.storage.disk.Disk.index", no_listing)
    await store.open()
    assert not store.listed
    assert all(doc.id in store for doc in docs)
    assert generate_document_id() not in store
    assert heads_of(await store.load(docs[0].id)) == docs[0].heads
    await store.close()


async def test_the_first_listing_sees_every_document(root: Path) -> None:
    docs = await write_documents(root, 4)
    store = await reopened(root)
    fresh = Doc()
    store.append(fresh.id, fresh.change())
    assert await store.all_document_ids() == {doc.id for doc in docs} | {fresh.id}
    assert store.listed
    assert store.document_ids() == {doc.id for doc in docs} | {fresh.id}
    await store.close()


async def test_a_document_with_only_empty_files_is_not_held(root: Path) -> None:
    """A crash between creating a log and writing it leaves an empty file: nothing stored."""
    doc = Doc()
    (doc_dir(root, doc.id) / "incremental").mkdir(parents=True)
    (doc_dir(root, doc.id) / "incremental" / "append-000001").write_bytes(b"")
    store = await reopened(root)
    assert doc.id not in store
    assert store.document_ids() == set()
    await store.close()


async def test_a_deleted_document_is_gone_even_from_a_listing_made_before(root: Path) -> None:
    (doc,) = await write_documents(root, 1)
    store = await reopened(root)
    await store.delete(doc.id)
    assert doc.id not in store
    assert await store.all_document_ids() == set()
    await store.close()


async def test_forget_keeps_what_was_stored_and_queued(root: Path) -> None:
    """Forgetting a document's bookkeeping loses nothing: a later load reads every file."""
    (doc,) = await write_documents(root, 1)
    store = await reopened(root)
    await store.load(doc.id)
    store.append(doc.id, doc.change("more"))
    store.forget(doc.id)  # queued bytes stay queued
    assert doc.id in store
    await store.flush()
    store.forget(doc.id)
    assert doc.id in store
    assert heads_of(await store.load(doc.id)) == doc.heads
    store.append(doc.id, doc.change("after"))
    await store.close()
    again = await reopened(root)
    assert heads_of(await again.load(doc.id)) == doc.heads
    await again.close()


async def test_leftover_temporary_files_go_when_the_document_is_first_read(root: Path) -> None:
    (doc,) = await write_documents(root, 1)
    leftover = doc_dir(root, doc.id) / "snapshot.tmp-0123abcd"
    leftover.write_bytes(b"half a snapshot")
    store = await reopened(root)
    assert leftover.exists()  # open() reads no document
    assert heads_of(await store.load(doc.id)) == doc.heads
    assert not leftover.exists()
    await store.close()
