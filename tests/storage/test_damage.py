"""Damaged storage costs only the damaged bytes (issue 11): waiting changes, generations, fsck."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import automerge.core as am
import pytest

from autosync_jupyter import Document, SyncServer, connect, fetch
from autosync_jupyter.cli import main as cli
from autosync_jupyter.crdt.changes import change_header
from autosync_jupyter.crdt.chunks import split_chunks
from autosync_jupyter.errors import DocumentUnavailable, DocumentUnreadable, StorageError
from autosync_jupyter.storage import FileStore

KEYS = 31


def doc_dir(root: Path, doc_id: str) -> Path:
    return root / doc_id[:2] / doc_id[2:]


def log_files(root: Path, doc_id: str) -> list[Path]:
    return sorted((doc_dir(root, doc_id) / "incremental").glob("append-*"))


async def write_31_keys(root: Path) -> tuple[str, Document]:
    """A server stores a document made of 31 changes, k0..k30; return it and a full copy."""
    async with SyncServer(port=0, data_dir=root) as server:
        doc_id = await server.create_document({})
        for i in range(KEYS):
            await server.change_document(doc_id, lambda d, i=i: d.__setitem__(f"k{i}", i))
        copy = await fetch(server.url, doc_id)
    assert len(copy.to_py()) == KEYS
    return doc_id, copy


def flip_a_byte_in_change(root: Path, doc_id: str, index: int) -> None:
    """Damage the ``index``-th change chunk of the document's log, in its middle."""
    (log,) = log_files(root, doc_id)
    data = bytearray(log.read_bytes())
    pos = 0
    for i, chunk in enumerate(split_chunks(bytes(data))):
        if i == index:
            data[pos + len(chunk) // 2] ^= 0xFF
            break
        pos += len(chunk)
    log.write_bytes(bytes(data))


async def test_changes_after_a_damaged_one_wait_and_come_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte mid-log: 16 keys served, the 15 later changes kept (not silently
    dropped), through a compaction too; a client with a full copy completes the document,
    and it stays complete after a restart."""
    root = tmp_path / "data"
    doc_id, full = await write_31_keys(root)
    flip_a_byte_in_change(root, doc_id, 16)  # creation + k0..k14 are before it
    caplog.set_level(logging.WARNING)
    async with SyncServer(port=0, data_dir=root) as server:
        partial = await fetch(server.url, doc_id)
        assert sorted(partial.to_py()) == sorted(f"k{i}" for i in range(15))
        assert "15 stored changes wait for 1 change it lacks" in caplog.text
        # A compaction meanwhile must keep them (it used to delete them for good).
        snapshot, heads = server.hub.save_document(doc_id)
        await server._store.compact(doc_id, snapshot, heads)
    async with SyncServer(port=0, data_dir=root) as server:
        assert server.hub.waiting_changes(doc_id) == 0  # not loaded yet
        assert len((await fetch(server.url, doc_id)).to_py()) == 15
        assert server.hub.waiting_changes(doc_id) == 15
        async with connect(server.url) as conn:
            await conn.create(full, doc_id=doc_id)  # a peer that still has everything
        assert len(await server.read_document(doc_id)) == KEYS
        assert server.hub.waiting_changes(doc_id) == 0
    async with SyncServer(port=0, data_dir=root) as server:
        assert await server.read_document(doc_id) == full.to_py()


async def test_a_damaged_snapshot_costs_nothing(tmp_path: Path) -> None:
    """A flipped byte in the newest snapshot: the previous generation still has everything."""
    root = tmp_path / "data"
    async with SyncServer(port=0, data_dir=root) as server:
        doc_id = await server.create_document({"a": 1})
        await server.change_document(doc_id, lambda d: d.__setitem__("b", 2))
        snapshot, heads = server.hub.save_document(doc_id)
        await server._store.compact(doc_id, snapshot, heads)
        await server.change_document(doc_id, lambda d: d.__setitem__("c", 3))
    (newest,) = (doc_dir(root, doc_id) / "snapshot").iterdir()
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    async with SyncServer(port=0, data_dir=root) as server:
        assert await server.read_document(doc_id) == {"a": 1, "b": 2, "c": 3}


async def test_a_snapshot_that_does_not_verify_replaces_nothing(tmp_path: Path) -> None:
    """Compaction reads its snapshot back and loads it before anything is removed."""
    root = tmp_path / "data"
    store = FileStore(root)
    await store.open()
    doc = am.Document()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
    doc_id = "4NMNnkMhL8jXrdJ9jamS58PAVdXu"
    store.append(doc_id, bytes(doc.get_changes([])[0].bytes))
    await store.flush()
    await store.load(doc_id)
    before = sorted(p.name for p in doc_dir(root, doc_id).rglob("*") if p.is_file())
    with pytest.raises(StorageError, match="did not read back intact or does not load"):
        await store.compact(doc_id, doc.save(), doc.get_heads(), verify=lambda data: False)
    await store.close()
    assert sorted(p.name for p in doc_dir(root, doc_id).rglob("*") if p.is_file()) == before


def test_fsck_reports_a_sound_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status 0 and one "ok" line per document."""
    import asyncio

    root = tmp_path / "data"
    asyncio.run(write_31_keys(root))
    assert cli(["fsck", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok ") and "1 document, 0 damaged" in out


def test_fsck_reports_damage_and_repair_sets_it_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 1, damaged bytes and waiting changes named; --repair moves the damage aside."""
    import asyncio

    root = tmp_path / "data"
    doc_id, _ = asyncio.run(write_31_keys(root))
    flip_a_byte_in_change(root, doc_id, 16)
    damaged = log_files(root, doc_id)[0].read_bytes()
    assert cli(["fsck", "--data-dir", str(root), "--json"]) == 1
    (report,) = json.loads(capsys.readouterr().out)["documents"]
    assert report["damaged_bytes"] > 0 and report["waiting_changes"] == 15
    assert report["changes"] == 16 and report["set_aside"] == []
    assert log_files(root, doc_id)[0].read_bytes() == damaged  # read-only: untouched
    assert cli(["fsck", "--data-dir", str(root), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "15 changes wait for 1 lost" in out and ".corrupt" in out
    assert list((root / ".corrupt" / doc_id).iterdir())
    chunks = split_chunks(log_files(root, doc_id)[0].read_bytes())
    assert len(chunks) == KEYS  # 32 changes, the damaged one set aside
    assert all(change_header(c) for c in chunks)


def make_unreadable(root: Path, doc_id: str) -> None:
    """A document folder the store cannot list (a symlink loop; root reads anything else)."""
    snapshots = doc_dir(root, doc_id) / "snapshot"
    if snapshots.exists():
        for path in snapshots.iterdir():
            path.unlink()
        snapshots.rmdir()
    snapshots.symlink_to("snapshot")


async def two_documents(root: Path) -> tuple[str, str]:
    async with SyncServer(port=0, data_dir=root) as server:
        good = await server.create_document({"good": 1})
        bad = await server.create_document({"bad": 1})
    return good, bad


async def test_an_unreadable_document_is_listed_marked_and_costs_no_other(tmp_path: Path) -> None:
    """It used to keep the whole store from opening (every document unavailable)."""
    root = tmp_path / "data"
    good, bad = await two_documents(root)
    make_unreadable(root, bad)
    async with SyncServer(port=0, data_dir=root) as server:
        assert await server.read_document(good) == {"good": 1}
        with pytest.raises(DocumentUnreadable, match=r"cannot be read.*symbolic links"):
            await server.get_document(bad)
        with pytest.raises(KeyError):  # what callers catch for any absent document
            await server.get_document(bad)
        rows = {row.document_id: row for row in server.document_summaries()}
        assert rows[good].error is None and rows[good].loaded
        assert rows[bad].error == "its files cannot be read (Too many levels of symbolic links)"
        assert not rows[bad].loaded
        with pytest.raises(DocumentUnavailable):  # peers are told, nothing is written
            await fetch(server.url, bad, timeout=5)
    assert (doc_dir(root, bad) / "snapshot").is_symlink()


async def test_a_wholly_damaged_document_says_so_until_a_peer_restores_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    async with SyncServer(port=0, data_dir=root) as server:
        doc_id = await server.create_document({"a": 1})
        copy = await fetch(server.url, doc_id)
    (log,) = log_files(root, doc_id)
    log.write_bytes(bytes(b ^ 0xFF for b in log.read_bytes()))
    async with SyncServer(port=0, data_dir=root) as server:
        with pytest.raises(DocumentUnreadable, match="stored bytes were damaged"):
            await server.get_document(doc_id)
        (row,) = server.document_summaries()
        assert row.error is not None and "a peer with a copy restores it" in row.error
        async with connect(server.url) as conn:
            await conn.create(copy, doc_id=doc_id)
        assert await server.read_document(doc_id) == {"a": 1}
        assert server.document_summaries()[0].error is None


def test_fsck_names_an_unreadable_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    root = tmp_path / "data"
    good, bad = asyncio.run(two_documents(root))
    make_unreadable(root, bad)
    assert cli(["fsck", "--data-dir", str(root), "--json"]) == 1
    reports = {r["id"]: r for r in json.loads(capsys.readouterr().out)["documents"]}
    assert reports[good]["sound"] and reports[good]["error"] is None
    assert not reports[bad]["sound"] and "symbolic links" in reports[bad]["error"]
