"""Where documents live between runs: a durable file store and a memory store.

A :class:`Store` keeps, per document, the bytes that
:meth:`automerge.core.Document.load` accepts: full saves ("snapshots")
followed by change chunks. The hub appends the change bytes it receives,
awaits :meth:`Store.flush` before it acknowledges them, and now and then
replaces everything with one fresh snapshot (:meth:`Store.compact`).

>>> store = MemoryStore()
>>> store.durable
False

:class:`FileStore` keeps the directory layout of the JavaScript sync server's
``NodeFSStorageAdapter``, so a data directory can move between a JS server
and this one in both directions::

    <dir>/st/orage-adapter-id                       storage id (UUID text)
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/snapshot/<64 hex>
                                                    full saves, named by the
                                                    SHA-256 of their heads
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/incremental/<64 hex>
                                                    one change chunk per file
                                                    (written by JS)
    <dir>/4N/MNnkMhL8jXrdJ9jamS58PAVdXu/incremental/append-000001
                                                    append-only change log
                                                    (written by this store)
    <dir>/<document id>.automerge                   a full save in the R
                                                    package's layout (read only)
    <dir>/.corrupt/<document id>/...                damaged bytes set aside
    <dir>/.lock                                     held while a store is open

Unlike the JS adapter, this store never rewrites a file in place: change
bytes are appended to a log file and fsync'd once per batch (group commit),
snapshots are written to a temporary file and renamed into place, and every
file is checked chunk by chunk when it is read, so a crash or a damaged file
costs at most the damaged bytes, never the document.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TypeVar

from ..crdt.chunks import check_chunks, scan_chunks
from ..errors import InvalidDocumentId, StorageError
from ..ids import DocumentId, is_valid_document_id, validate_document_id

__all__ = [
    "COMPACTION_FLOOR",
    "Damage",
    "FileStore",
    "MemoryStore",
    "Store",
    "StoreLocked",
    "open_store",
]

logger = logging.getLogger("autosync_jupyter.storage")

#: Incremental bytes below which :meth:`Store.needs_compaction` never fires.
#: Below it a snapshot would be rewritten too often for too little gain.
COMPACTION_FLOOR: Final = 64 * 1024

# Threads that fsync the files of one batch in parallel.
_FSYNC_THREADS: Final = 16

# More files than this per document make every load slow (one open and read
# each), whatever their size: JS writes one file per change save, and this
# store starts a new append file per process run.
_MAX_FILES: Final = 32


_STORAGE_ID_DIR: Final = "st"
_STORAGE_ID_FILE: Final = "orage-adapter-id"
_STORAGE_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SNAPSHOT: Final = "snapshot"
_INCREMENTAL: Final = "incremental"
_R_SUFFIX: Final = ".automerge"
_CORRUPT_DIR: Final = ".corrupt"
_TRASH_DIR: Final = ".trash"
_APPEND_RE: Final = re.compile(r"append-([0-9]{6,18})")
_TMP_RE: Final = re.compile(r".+\.tmp-[0-9a-f]{8}")
# Key of the R layout's file in a document's set of loaded files.
_R_KEY: Final = "r"
# Only the base58 alphabet: never a path separator, never "." or "..".
_SAFE_ID_RE: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]{3,100}")

_T = TypeVar("_T")

# Held (locked) while a store is open: two processes writing one directory
# would delete each other's files at compaction. Never read by JS or R.
_LOCK_FILE: Final = ".lock"

if sys.platform == "win32":
    import msvcrt

    def _lock_file(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock_file(fd: int) -> None:
        # flock, not lockf: released when the process dies, whatever happens.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _heads_hash(heads: Iterable[bytes]) -> str:
    """Name a snapshot as JS automerge-repo does: SHA-256 of the sorted hex heads, joined."""
    joined = "".join(sorted(bytes(head).hex() for head in heads))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------
# The interface


class Store(abc.ABC):
    """Where documents live between runs.

    A store holds, per document, bytes that
    :meth:`automerge.core.Document.load` accepts. Its life is
    ``await open()``, then any number of :meth:`append`, :meth:`flush`,
    :meth:`load`, :meth:`compact` and :meth:`delete`, then ``await close()``.
    All methods are called from one event loop; none of them blocks it.

    Durability contract: bytes passed to :meth:`append` are durable once a
    :meth:`flush` that started after the append has returned. Acknowledge a
    change to a peer only then.
    """

    @property
    @abc.abstractmethod
    def storage_id(self) -> str:
        """The store's persistent identity (UUID text), announced to peers; valid after open()."""

    @property
    @abc.abstractmethod
    def durable(self) -> bool:
        """Whether the contents survive the process (False for :class:`MemoryStore`)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Make the store ready: create what is missing and list the documents it holds."""

    @abc.abstractmethod
    def document_ids(self) -> set[DocumentId]:
        """Return (a copy of) the ids of every document the store holds."""

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``; False for anything that is not an id."""
        return isinstance(doc_id, str) and doc_id in self.document_ids()

    @abc.abstractmethod
    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Return everything stored for ``doc_id``, ready for ``Document.load()``.

        The result is the document's snapshot(s) followed by its change
        chunks (duplicates are harmless to automerge), or None if the store
        holds nothing for it. Damaged pieces are set aside with a warning and
        the rest is returned.

        Raises:
            InvalidDocumentId: ``doc_id`` is not a valid document id.
            StorageError: the store could not be read.
        """

    def damage(self, doc_id: DocumentId) -> Damage:
        """What the last :meth:`load` of ``doc_id`` found damaged and set aside.

        A store that cannot be damaged (memory) reports nothing.
        """
        _check_id(doc_id)
        return Damage()

    @abc.abstractmethod
    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue change bytes for ``doc_id``; they are durable after the next :meth:`flush`.

        Args:
            doc_id: the document the changes belong to.
            data: one or more concatenated automerge chunks, as in
                ``b"".join(change.bytes for change in changes)``.

        Raises:
            InvalidDocumentId: ``doc_id`` is not a valid document id.
            ValueError: ``data`` is not a sequence of sound automerge chunks.
            StorageError: the store is not open.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything appended before this call is durable.

        Callers that arrive while a batch is being written share the next
        batch, so many concurrent flushes cost one write and one fsync per
        touched document, not one per caller.

        Raises:
            StorageError: the batch could not be written; the bytes stay
                queued and the next flush tries again.
        """

    @abc.abstractmethod
    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether ``doc_id`` has gathered enough change bytes or files to compact."""

    @abc.abstractmethod
    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Replace what is stored for ``doc_id`` by one snapshot.

        Args:
            doc_id: the document.
            snapshot: ``doc.save()``, taken at the moment of the call, so it
                covers everything appended so far. Bytes appended after the
                call are kept.
            heads: ``doc.get_heads()`` at the same moment (names the file).
            verify: called with the snapshot as read back from the store;
                unless it returns True nothing is replaced.

        Raises:
            ValueError: ``snapshot`` is not a sequence of sound automerge chunks.
            StorageError: the snapshot could not be written or did not read
                back as written and verified; what was stored before is
                still there.
        """

    @abc.abstractmethod
    async def delete(self, doc_id: DocumentId) -> None:
        """Forget ``doc_id``, including bytes appended but not yet flushed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush everything appended so far, then stop accepting appends."""


def open_store(data_dir: str | os.PathLike[str] | None) -> Store:
    """Return a :class:`FileStore` over ``data_dir``, or a :class:`MemoryStore` for None.

    The store is not opened yet: ``await store.open()`` before using it.
    """
    return MemoryStore() if data_dir is None else FileStore(data_dir)


def _check_id(doc_id: object) -> DocumentId:
    return validate_document_id(doc_id)


# --------------------------------------------------------------------------
# MemoryStore


@dataclasses.dataclass
class _MemoryDocument:
    snapshot: bytes = b""
    changes: list[bytes] = dataclasses.field(default_factory=list)
    change_bytes: int = 0


class MemoryStore(Store):
    """A store that keeps everything in memory: for tests and ephemeral servers.

    It behaves like :class:`FileStore` in every respect except that nothing
    survives the process; its storage id is new for every instance.
    """

    def __init__(self, *, compaction_floor: int = COMPACTION_FLOOR) -> None:
        self._storage_id = str(uuid.uuid4())
        self._documents: dict[DocumentId, _MemoryDocument] = {}
        self._floor = compaction_floor
        self._state = "new"

    def _require_open(self) -> None:
        # The same rules as FileStore, so that code tested against a
        # MemoryStore does not break on a FileStore.
        if self._state == "new":
            raise StorageError("open() the store first")
        if self._state == "closed":
            raise StorageError("the memory store is closed")

    @property
    def storage_id(self) -> str:
        """A random UUID, new for every instance."""
        if self._state == "new":
            raise StorageError("open() the store first")
        return self._storage_id

    @property
    def durable(self) -> bool:
        """Always False: the contents die with the process."""
        return False

    async def open(self) -> None:
        """Make the store usable; there is nothing to read."""
        if self._state != "new":
            raise StorageError("the memory store is already open or closed")
        self._state = "open"

    def document_ids(self) -> set[DocumentId]:
        """Return the ids of every document appended or compacted and not deleted."""
        if self._state == "new":
            raise StorageError("open() the store first")
        return set(self._documents)

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``."""
        return isinstance(doc_id, str) and doc_id in self._documents

    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Return the snapshot followed by the changes appended since, or None."""
        doc_id = _check_id(doc_id)
        self._require_open()
        document = self._documents.get(doc_id)
        if document is None:
            return None
        return document.snapshot + b"".join(document.changes)

    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Keep the change bytes; see :meth:`Store.append`."""
        doc_id = _check_id(doc_id)
        data = check_chunks(data, "appended data")
        self._require_open()
        document = self._documents.setdefault(doc_id, _MemoryDocument())
        document.changes.append(data)
        document.change_bytes += len(data)

    async def flush(self) -> None:
        """Return at once: memory is as durable as this store gets."""

    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether the changes outweigh the snapshot (and the floor) or are many."""
        document = self._documents.get(doc_id) if isinstance(doc_id, str) else None
        if document is None:
            return False
        return document.change_bytes >= max(len(document.snapshot), self._floor)

    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Replace the document by ``snapshot``; see :meth:`Store.compact`."""
        doc_id = _check_id(doc_id)
        snapshot = check_chunks(snapshot, "snapshot")
        self._require_open()
        if verify is not None and not verify(snapshot):
            raise StorageError(f"the snapshot of document {doc_id} does not verify; kept the old")
        self._documents[doc_id] = _MemoryDocument(snapshot=snapshot)

    async def delete(self, doc_id: DocumentId) -> None:
        """Forget the document."""
        doc_id = _check_id(doc_id)
        self._require_open()
        self._documents.pop(doc_id, None)

    async def close(self) -> None:
        """Stop accepting calls; the contents are dropped."""
        if self._state == "open":
            self._documents.clear()
        self._state = "closed"


# --------------------------------------------------------------------------
# FileStore: the disk side, run only on the store's I/O thread


@dataclasses.dataclass(frozen=True)
class _Usage:
    """What is on disk for one document, as far as this process has seen."""

    snapshot_bytes: int = 0
    incremental_bytes: int = 0
    files: int = 0


class StoreLocked(StorageError):
    """Another process (a running server) holds the data directory."""


@dataclasses.dataclass
class Damage:
    """What the last read of a document found damaged on disk.

    Attributes:
        damaged_bytes: bytes that are not part of a sound chunk.
        files: how many files held them.
        set_aside: where copies of the damaged files went (empty when the
            store is read-only: nothing is moved then).
    """

    damaged_bytes: int = 0
    files: int = 0
    set_aside: list[Path] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _DocumentFiles:
    """The I/O thread's bookkeeping for one document."""

    # Number of the append file this process writes to; None until the first
    # write after start-up or after a compaction rotated the log.
    active: int | None = None
    next_number: int | None = None
    # Files (keys like "snapshot/<hex>", "incremental/<name>", or _R_KEY) this
    # process loaded or wrote: what a compaction may delete. A file that
    # exists but was never read is never deleted, so no change is lost.
    covered: set[str] = dataclasses.field(default_factory=set)
    # The generation before the current one (the previous snapshot and the
    # logs written after it): kept until the next compaction succeeds, so
    # one damaged snapshot never costs the document.
    older: set[str] = dataclasses.field(default_factory=set)
    snapshot_bytes: int = 0
    incremental_bytes: int = 0
    files: int = 0
    damage: Damage = dataclasses.field(default_factory=Damage)

    def usage(self) -> _Usage:
        return _Usage(self.snapshot_bytes, self.incremental_bytes, self.files)


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals entries itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_BINARY: Final = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path``.

    A FIFO, a device or a symbolic link in a data directory is not ours
    (``/dev/zero`` would never end, a FIFO would hang the I/O thread): it is
    refused with an OSError, never opened for reading.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | _BINARY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_or_error(target: int | Path) -> OSError | None:
    """fsync a file descriptor or a directory; return the error instead of raising it."""
    try:
        if isinstance(target, Path):
            _fsync_dir(target)
        else:
            os.fsync(target)
    except OSError as exc:
        return exc
    return None


@dataclasses.dataclass(frozen=True)
class _Append:
    """Bytes written to a log file in the current batch, not yet fsync'd."""

    doc_id: DocumentId
    fd: int
    number: int
    new: bool
    directory: Path
    size_before: int
    length: int


def _tmp_name(name: str) -> str:
    return f"{name}.tmp-{secrets.token_hex(4)}"


class _Disk:
    """Every file operation of a :class:`FileStore`.

    Its methods run one at a time, in submission order, on the store's single
    I/O thread, so they never race one another: a load never reads a file
    that a batch is half-way through appending to, and a compaction runs
    after every batch submitted before it. They raise :class:`StorageError`.
    """

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only
        self._documents: dict[DocumentId, _DocumentFiles] = {}
        self._fsync_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None

    def close(self) -> None:
        """Stop the fsync helper threads and release the directory."""
        if self._fsync_threads is not None:
            self._fsync_threads.shutdown()
            self._fsync_threads = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.root / _LOCK_FILE, os.O_RDWR | os.O_CREAT | _BINARY, 0o666)
        try:
            _lock_file(fd)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise StoreLocked(
                f"{self.root} is in use by another store (process {holder or 'unknown'}); "
                "run one server per data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    # -- paths

    def _doc_dir(self, doc_id: DocumentId) -> Path:
        # The id was validated by the caller; checked again because this is
        # the one place where an id becomes a path.
        if not _SAFE_ID_RE.fullmatch(doc_id):
            raise InvalidDocumentId(f"refusing to make a path of {doc_id!r}")
        return self.root / doc_id[:2] / doc_id[2:]

    def _path(self, doc_id: DocumentId, key: str) -> Path:
        doc_dir = self._doc_dir(doc_id)
        return self.root / f"{doc_id}{_R_SUFFIX}" if key == _R_KEY else doc_dir / key

    def _files(self, doc_id: DocumentId) -> _DocumentFiles:
        return self._documents.setdefault(doc_id, _DocumentFiles())

    def _ensure_dir(self, path: Path, unsynced: set[Path] | None = None) -> None:
        """Create ``path`` and missing parents, making each new entry durable.

        With ``unsynced``, the directories to fsync are added to it instead,
        for the caller to fsync together with other work.
        """
        missing = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                continue
            if unsynced is None:
                _fsync_dir(directory.parent)
            else:
                unsynced.add(directory.parent)

    def _replace_atomically(self, path: Path, data: bytes, tmp_dir: Path) -> None:
        """Write ``path`` so that a crash leaves either the old or the new file, whole.

        The temporary file lives in ``tmp_dir`` (same file system), outside
        the directories the JS adapter reads, so a leftover one is invisible
        to a JS server; :meth:`prepare` removes leftovers.
        """
        tmp = tmp_dir / _tmp_name(path.name)
        try:
            _write_new_file(tmp, data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    # -- open

    def prepare(self) -> tuple[str, set[DocumentId]]:
        """Create the directory, read or create the storage id, list the documents."""
        if self.read_only:
            if not self.root.is_dir():
                raise StorageError(f"no data directory at {self.root}")
            try:
                return self._storage_id(), self._index()
            except OSError as exc:
                raise StorageError(f"cannot read the store in {self.root}: {exc}") from exc
        try:
            self._ensure_dir(self.root.absolute())
            self._lock()
            shutil.rmtree(self.root / _TRASH_DIR, ignore_errors=True)
            storage_id = self._storage_id()
            return storage_id, self._index()
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open the store in {self.root}: {exc}") from exc
            raise

    def _storage_id(self) -> str:
        path = self.root / _STORAGE_ID_DIR / _STORAGE_ID_FILE
        try:
            raw = _read_file(path)
        except FileNotFoundError:
            raw = None
        if raw is not None:
            text = raw.decode("utf-8", "replace").strip()
            if _STORAGE_ID_RE.fullmatch(text):
                return text
        if self.read_only:
            return str(uuid.uuid4())  # never announced: a read-only store serves no peer
        if raw is not None:
            # JS writes this file non-atomically, so a crash can leave it empty.
            logger.warning("%s holds no usable storage id; making a new one", path)
            self._set_aside(self.root / _CORRUPT_DIR / "storage-adapter-id", raw)
        storage_id = str(uuid.uuid4())
        self._ensure_dir(path.parent)
        self._replace_atomically(path, storage_id.encode("ascii"), path.parent)
        logger.info("created storage id %s in %s", storage_id, self.root)
        return storage_id

    def _index(self) -> set[DocumentId]:
        found: set[DocumentId] = set()
        with os.scandir(self.root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = entry.name
                if name.startswith("."):
                    continue  # .corrupt, R's .sync_states, editor and OS files
                if _TMP_RE.fullmatch(name) and entry.is_file(follow_symlinks=False):
                    self._remove_leftover(entry.path)
                    continue
                if entry.is_dir(follow_symlinks=False) and len(name) == 2:
                    try:
                        found.update(self._index_prefix(Path(entry.path)))
                    except OSError as exc:
                        # One unreadable folder must not close the whole store.
                        logger.error("skipping %s: cannot list it (%s)", entry.path, exc)
                elif name.endswith(_R_SUFFIX) and entry.is_file(follow_symlinks=False):
                    stem = name[: -len(_R_SUFFIX)]
                    if is_valid_document_id(stem):
                        found.add(DocumentId(stem))
                    else:
                        logger.warning("skipping %s: %r is not a document id", entry.path, stem)
                else:
                    logger.warning("skipping %s: not part of a document store", entry.path)
        return found

    def _index_prefix(self, prefix_dir: Path) -> set[DocumentId]:
        found: set[DocumentId] = set()
        with os.scandir(prefix_dir) as entries:
            for entry in entries:
                if _TMP_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    self._remove_leftover(entry.path)  # a storage id write cut short
                    continue
                if prefix_dir.name == _STORAGE_ID_DIR and entry.name == _STORAGE_ID_FILE:
                    continue
                doc_id = prefix_dir.name + entry.name
                if not entry.is_dir(follow_symlinks=False) or not is_valid_document_id(doc_id):
                    logger.warning("skipping %s: not a document directory", entry.path)
                    continue
                try:
                    has_data = self._clean_document_dir(Path(entry.path))
                except OSError as exc:
                    # Listed all the same: reading it says why it cannot be read.
                    logger.error("document %s: cannot list its files (%s)", doc_id, exc)
                    has_data = True
                if has_data:
                    found.add(DocumentId(doc_id))
        return found

    def _remove_leftover(self, path: str) -> None:
        """Remove a temporary file that a crash left behind (unless read-only)."""
        if not self.read_only:
            logger.info("removing %s, left over from an interrupted write", path)
            os.unlink(path)

    def _clean_document_dir(self, doc_dir: Path) -> bool:
        """Remove temporary files left by a crash; tell whether any chunk file remains."""
        has_data = False
        for directory in (doc_dir, doc_dir / _SNAPSHOT, doc_dir / _INCREMENTAL):
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if _TMP_RE.fullmatch(entry.name):
                    self._remove_leftover(entry.path)
                elif directory != doc_dir and entry.stat(follow_symlinks=False).st_size:
                    # (an empty log: a crash came between creating and writing it)
                    has_data = True
        return has_data

    # -- load

    def _sources(self, doc_id: DocumentId) -> list[str]:
        """Keys of the document's files in load order: snapshots, JS chunks, our logs."""
        keys = []
        if self._path(doc_id, _R_KEY).is_file():
            keys.append(_R_KEY)
        doc_dir = self._doc_dir(doc_id)
        for kind in (_SNAPSHOT, _INCREMENTAL):
            try:
                with os.scandir(doc_dir / kind) as entries:
                    names = [
                        e.name
                        for e in entries
                        if e.is_file(follow_symlinks=False) and not _TMP_RE.fullmatch(e.name)
                    ]
            except (FileNotFoundError, NotADirectoryError):
                continue
            js_names = sorted(n for n in names if not _APPEND_RE.fullmatch(n))
            logs = sorted((n for n in names if _APPEND_RE.fullmatch(n)), key=_append_number)
            keys.extend(f"{kind}/{name}" for name in js_names + logs)
        return keys

    def read(self, doc_id: DocumentId) -> tuple[bytes, _Usage, Damage]:
        """Read, check and concatenate every file of ``doc_id``; say what was damaged."""
        files = self._files(doc_id)
        files.damage = Damage()
        pieces = []
        snapshot_bytes = incremental_bytes = count = 0
        try:
            for key in self._sources(doc_id):
                path = self._path(doc_id, key)
                try:
                    data = _read_file(path)
                except FileNotFoundError:
                    continue
                data = self._checked(doc_id, key, path, data)
                if not data:
                    continue
                pieces.append(data)
                files.covered.add(key)
                count += 1
                if key.startswith(_INCREMENTAL):
                    incremental_bytes += len(data)
                else:
                    snapshot_bytes += len(data)
        except OSError as exc:
            raise StorageError(f"cannot read document {doc_id}: {exc}") from exc
        files.snapshot_bytes = snapshot_bytes
        files.incremental_bytes = incremental_bytes
        files.files = count
        return b"".join(pieces), files.usage(), files.damage

    def _checked(self, doc_id: DocumentId, key: str, path: Path, data: bytes) -> bytes:
        """Return the sound chunks of a file, setting damaged bytes aside on disk."""
        scan = scan_chunks(data)
        if not scan.bad:
            return data
        damage = self._files(doc_id).damage
        damage.damaged_bytes += sum(end - start for start, end in scan.bad)
        damage.files += 1
        if self.read_only:
            logger.warning(
                "document %s: %s has %d damaged bytes; reading the rest (read-only: not repaired)",
                doc_id,
                path,
                sum(end - start for start, end in scan.bad),
            )
            return scan.good_bytes(data)
        corrupt_dir = self.root / _CORRUPT_DIR / doc_id
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        label = f"{stamp}-{path.name if key == _R_KEY else key.replace('/', '-')}"
        tail_start = scan.bad[0][0]
        if len(scan.bad) == 1 and scan.bad[0][1] == len(data) and tail_start > 0:
            # A write cut short by a crash: keep the sound prefix in place.
            # Never acknowledged (its fsync never returned), so nothing is lost.
            aside = self._set_aside(corrupt_dir / f"{label}.tail", data[tail_start:])
            damage.set_aside.append(aside)
            fd = os.open(path, os.O_WRONLY | _BINARY)
            try:
                os.ftruncate(fd, tail_start)
                os.fsync(fd)
            finally:
                os.close(fd)
            logger.warning(
                "document %s: %s ends in %d damaged bytes (a write cut short?); "
                "cut them off and moved them to %s",
                doc_id,
                path,
                len(data) - tail_start,
                aside,
            )
            return data[:tail_start]
        # Damage inside the file: keep a copy of the whole file, then replace
        # it by its sound chunks (or remove it). A crash in between leaves the
        # original or the repaired file, both loadable.
        aside = self._set_aside(corrupt_dir / label, data)
        damage.set_aside.append(aside)
        good = scan.good_bytes(data)
        if good:
            tmp_dir = self.root if key == _R_KEY else self._doc_dir(doc_id)
            self._replace_atomically(path, good, tmp_dir)
        else:
            path.unlink()
            _fsync_dir(path.parent)
        files = self._files(doc_id)
        if files.active is not None and key == f"{_INCREMENTAL}/{_append_name(files.active)}":
            files.active = None  # never append after bytes we did not write
        logger.warning(
            "document %s: %s has %d damaged bytes in %d place(s); kept %d sound bytes, "
            "moved the original to %s",
            doc_id,
            path,
            sum(end - start for start, end in scan.bad),
            len(scan.bad),
            len(good),
            aside,
        )
        return good

    def _set_aside(self, target: Path, data: bytes) -> Path:
        """Durably write damaged ``data`` to a new file named ``target`` (or a variant)."""
        self._ensure_dir(target.parent)
        while True:
            try:
                _write_new_file(target, data)
            except FileExistsError:
                target = target.with_name(_tmp_name(target.name).replace(".tmp-", "-"))
                continue
            _fsync_dir(target.parent)
            return target

    # -- append

    def write_batch(self, batch: dict[DocumentId, bytes]) -> dict[DocumentId, _Usage]:
        """Append each document's bytes to its log file and fsync them all: one batch.

        The files are fsync'd in parallel: the file system then commits them
        in one or a few journal transactions, about ten times faster than one
        after another when a batch touches many documents.
        """
        failures: list[str] = []
        appends: list[_Append] = []
        # Directories that gained an entry (a new log file or directory):
        # fsync'd with the files, or the new names could vanish in a crash.
        unsynced: set[Path] = set()
        try:
            for doc_id, data in batch.items():
                try:
                    appends.append(self._write(doc_id, data, unsynced))
                except OSError as exc:
                    failures.append(self._failed(doc_id, len(data), exc))
            targets: list[int | Path] = [append.fd for append in appends]
            errors = self._fsync_all([*targets, *sorted(unsynced)])
            dir_error = next((e for e in errors[len(appends) :] if e), None)
            for append, error in zip(appends, errors, strict=False):
                error = error or (dir_error if append.new else None)
                if error is None:
                    self._commit(append)
                else:
                    self._abandon(append)
                    failures.append(self._failed(append.doc_id, append.length, error))
        finally:
            for append in appends:
                os.close(append.fd)
        if failures:
            raise StorageError("could not write " + "; ".join(failures))
        return {doc_id: self._files(doc_id).usage() for doc_id in batch}

    def _fsync_all(self, targets: list[int | Path]) -> list[OSError | None]:
        if len(targets) == 1:
            return [_fsync_or_error(targets[0])]
        return list(self._sync_pool().map(_fsync_or_error, targets))

    def _sync_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._fsync_threads is None:
            self._fsync_threads = concurrent.futures.ThreadPoolExecutor(
                _FSYNC_THREADS, thread_name_prefix="autosync-fsync"
            )
        return self._fsync_threads

    def _write(self, doc_id: DocumentId, data: bytes, unsynced: set[Path]) -> _Append:
        """Write (not yet fsync) ``data`` at the end of the document's log file."""
        files = self._files(doc_id)
        directory = self._doc_dir(doc_id) / _INCREMENTAL
        if files.active is None:
            self._ensure_dir(directory, unsynced)
            number, fd = self._create_log(directory, files)
            unsynced.add(directory)
            new = True
        else:
            number, new = files.active, False
            fd = os.open(directory / _append_name(number), os.O_WRONLY | os.O_APPEND | _BINARY)
        try:
            append = _Append(doc_id, fd, number, new, directory, os.fstat(fd).st_size, len(data))
            try:
                _write_all(fd, data)
            except OSError:
                self._abandon(append)
                raise
        except OSError:
            files.active = None
            os.close(fd)
            raise
        return append

    def _commit(self, append: _Append) -> None:
        files = self._files(append.doc_id)
        if append.new:
            files.active = append.number
            files.files += 1
        files.incremental_bytes += append.length

    def _abandon(self, append: _Append) -> None:
        # After a failed write or fsync the file's contents are unknown: cut
        # what we may have added and never append to it again. The bytes stay
        # queued and go to a fresh file with the next batch.
        self._files(append.doc_id).active = None
        with contextlib.suppress(OSError):
            os.ftruncate(append.fd, append.size_before)

    def _failed(self, doc_id: DocumentId, length: int, error: OSError) -> str:
        logger.error("document %s: cannot append %d bytes: %s", doc_id, length, error)
        return f"{doc_id}: {error}"

    def _create_log(self, incremental_dir: Path, files: _DocumentFiles) -> tuple[int, int]:
        if files.next_number is None:
            with os.scandir(incremental_dir) as entries:
                numbers = [_append_number(e.name) for e in entries if _APPEND_RE.fullmatch(e.name)]
            files.next_number = max(numbers, default=0) + 1
        while True:
            number = files.next_number
            files.next_number += 1
            path = incremental_dir / _append_name(number)
            try:
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _BINARY, 0o666
                )
            except FileExistsError:
                continue
            files.covered.add(f"{_INCREMENTAL}/{path.name}")
            return number, fd

    # -- compact and delete

    def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        name: str,
        verify: Callable[[bytes], bool] | None = None,
    ) -> _Usage:
        """Write ``snapshot``, check it, then drop the generation before the current one."""
        files = self._files(doc_id)
        # Rotate first: batches submitted after this compaction (bytes
        # appended after the call) go to a new log file, which is kept.
        files.active = None
        doc_dir = self._doc_dir(doc_id)
        snapshot_key = f"{_SNAPSHOT}/{name}"
        path = doc_dir / _SNAPSHOT / name
        try:
            self._ensure_dir(doc_dir / _SNAPSHOT)
            tmp = doc_dir / _tmp_name(name)
            try:
                _write_new_file(tmp, snapshot)
                # What the disk gives back, not what was meant: a snapshot
                # replaces files only once it reads back whole and loads.
                written = tmp.read_bytes()
                if written != snapshot or (verify is not None and not verify(written)):
                    raise StorageError(
                        f"the new snapshot of document {doc_id} did not read back intact "
                        "or does not load; nothing was removed"
                    )
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
            # From here the snapshot is durable. Drop the generation before the
            # current one: the current one (the previous snapshot and the logs
            # since) stays until the next compaction, in case this snapshot is
            # damaged later. A crash during the removals leaves duplicates,
            # which automerge loads happily.
            touched = set()
            for key in sorted(files.older - files.covered - {snapshot_key}):
                old = self._path(doc_id, key)
                old.unlink(missing_ok=True)
                touched.add(old.parent)
            for directory in touched:
                _fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot compact document {doc_id}: {exc}") from exc
        files.older = files.covered - {snapshot_key}
        files.covered = {snapshot_key}
        files.snapshot_bytes = len(snapshot)
        files.incremental_bytes = 0
        files.files = 1
        return files.usage()

    def delete(self, doc_id: DocumentId) -> None:
        """Remove every file of ``doc_id``; a crash leaves all of it or none of it visible."""
        self._documents.pop(doc_id, None)
        doc_dir = self._doc_dir(doc_id)
        try:
            if doc_dir.exists():
                trash = self.root / _TRASH_DIR
                self._ensure_dir(trash)
                target = trash / secrets.token_hex(8)
                os.rename(doc_dir, target)
                _fsync_dir(doc_dir.parent)
                shutil.rmtree(target)
                with contextlib.suppress(OSError):
                    os.rmdir(doc_dir.parent)  # only if it held nothing else
            r_file = self._path(doc_id, _R_KEY)
            if r_file.exists():
                r_file.unlink()
                _fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot delete document {doc_id}: {exc}") from exc


def _append_name(number: int) -> str:
    return f"append-{number:06d}"


def _append_number(name: str) -> int:
    match = _APPEND_RE.fullmatch(name)
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------
# FileStore: the event-loop side


class FileStore(Store):
    """A durable store in a directory, compatible with the JS sync server's layout.

    Appends are queued in memory and written by :meth:`flush` in batches: one
    write and one fsync per touched document, however many changes and
    callers the batch holds. All file work runs on one worker thread, in
    the order it was asked for (a batch's fsyncs fan out to helper threads),
    so the event loop never waits for the disk. :meth:`open` locks the
    directory until :meth:`close`: one writing store per directory.

    Example::

        store = FileStore(".amrg")
        await store.open()
        store.append(doc_id, b"".join(change.bytes for change in changes))
        await store.flush()  # durable from here: now acknowledge
        if store.needs_compaction(doc_id):
            await store.compact(doc_id, doc.save(), doc.get_heads())
        doc = automerge.core.Document.load(await store.load(doc_id))
        await store.close()

    Args:
        directory: the data directory; created if missing. It may hold data
            written by the JavaScript sync server (``NodeFSStorageAdapter``)
            or the R package ``autosync`` (``<id>.automerge`` files; a
            document's R file is replaced by a snapshot in the JS layout at
            its first compaction). Run one server per directory.
        compaction_floor: incremental bytes below which
            :meth:`needs_compaction` stays False.
        read_only: only read, for inspecting a directory that a running
            server holds (``autosync ls``): no lock is taken, nothing is
            created, repaired or removed, damaged bytes are skipped, and
            :meth:`append`, :meth:`compact` and :meth:`delete` raise
            :class:`StorageError`. The storage id is the directory's, or a
            random one if it has none.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        compaction_floor: int = COMPACTION_FLOOR,
        read_only: bool = False,
    ) -> None:
        self._root = Path(directory)
        self._read_only = read_only
        self._disk = _Disk(self._root, read_only=read_only)
        self._damage: dict[DocumentId, Damage] = {}
        self._floor = compaction_floor
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._storage_id: str | None = None
        self._ids: set[DocumentId] = set()
        self._usage: dict[DocumentId, _Usage] = {}
        # Appended bytes not yet written, and those of the batch being written.
        self._pending: dict[DocumentId, list[bytes]] = {}
        self._inflight: dict[DocumentId, list[bytes]] = {}
        self._appended = 0  # appends so far
        self._durable_upto = 0  # the first this many appends are durable
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False
        self._batches = 0

    def __repr__(self) -> str:
        return f"FileStore({str(self._root)!r})"

    @property
    def directory(self) -> Path:
        """The data directory."""
        return self._root

    @property
    def storage_id(self) -> str:
        """The id in ``<dir>/st/orage-adapter-id``, reused across runs and from JS."""
        if self._storage_id is None:
            raise StorageError("open() the store first")
        return self._storage_id

    @property
    def durable(self) -> bool:
        """True: flushed appends survive a crash (False if opened read-only)."""
        return not self._read_only

    @property
    def batches(self) -> int:
        """How many batches :meth:`flush` has written (one fsync per document each)."""
        return self._batches

    def _run(self, func: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        # Submits at once, so jobs run in the order this is called.
        if self._io is None:
            raise StorageError("open() the store first")
        if self._stopped:
            raise StorageError(f"the store in {self._root} is closed")
        return asyncio.get_running_loop().run_in_executor(self._io, func, *args)

    def _require_open(self, *, writing: bool = False) -> None:
        if self._io is None:
            raise StorageError("open() the store first")
        if self._closing:
            raise StorageError(f"the store in {self._root} is closed")
        if writing and self._read_only:
            raise StorageError(f"the store in {self._root} was opened read-only")

    async def open(self) -> None:
        """Create the directory if needed, read or create the storage id, list documents.

        Only directories are listed; no document is read until :meth:`load`.
        Temporary files left by a crash are removed. The directory is locked
        until :meth:`close` (or the end of the process).

        Raises:
            StorageError: the directory cannot be created or read, or another
                open store (in this or another process) holds it.
        """
        if self._io is not None:
            raise StorageError(f"the store in {self._root} is already open (or closed)")
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="autosync-storage")
        try:
            self._storage_id, ids = await self._run(self._disk.prepare)
        except BaseException:
            self._io.shutdown(wait=False)
            self._io = None
            raise
        self._ids |= ids
        logger.info(
            "opened %s: %d documents, storage id %s", self._root, len(ids), self._storage_id
        )

    def document_ids(self) -> set[DocumentId]:
        """Return the ids of every document found at open, appended or compacted since."""
        if self._io is None:
            raise StorageError("open() the store first")
        return set(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``."""
        return isinstance(doc_id, str) and doc_id in self._ids

    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Read and check the document's files; see :meth:`Store.load`.

        Damaged files are repaired on disk: a torn tail is cut off, a file
        with damage inside is replaced by its sound chunks; the damaged bytes
        are kept under ``<dir>/.corrupt/<id>/``.
        """
        doc_id = _check_id(doc_id)
        self._require_open()
        # Appended but maybe not yet on disk when the read runs; taken now so
        # that every append made before this call is in the result.
        unwritten = b"".join(self._inflight.get(doc_id, []) + self._pending.get(doc_id, []))
        data, usage, damage = await self._run(self._disk.read, doc_id)
        self._damage[doc_id] = damage
        self._usage[doc_id] = usage
        result = data + unwritten
        return result or None

    def damage(self, doc_id: DocumentId) -> Damage:
        """What the last :meth:`load` of ``doc_id`` found damaged (nothing before a load)."""
        return self._damage.get(_check_id(doc_id), Damage())

    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue change bytes; see :meth:`Store.append`."""
        if not (isinstance(doc_id, str) and doc_id in self._ids):  # validated once per id
            doc_id = _check_id(doc_id)
        data = check_chunks(data, "appended data")
        self._require_open(writing=True)
        self._pending.setdefault(doc_id, []).append(data)
        self._ids.add(doc_id)
        self._appended += 1

    async def flush(self) -> None:
        """Write and fsync everything appended before this call; see :meth:`Store.flush`."""
        target = self._appended
        while self._durable_upto < target:
            if self._writer is None:
                self._writer = asyncio.ensure_future(self._write_batch())
                self._writer.add_done_callback(_consume_exception)
            # Shielded: a caller that is cancelled must not cancel the batch
            # other callers wait for.
            await asyncio.shield(self._writer)

    async def _write_batch(self) -> None:
        upto = self._appended
        count = upto - self._durable_upto
        self._inflight, self._pending = self._pending, {}
        try:
            if self._inflight:
                batch = {doc_id: b"".join(chunks) for doc_id, chunks in self._inflight.items()}
                usages = await self._run(self._disk.write_batch, batch)
                self._usage.update(usages)
                self._batches += 1
                logger.debug("wrote a batch of %d appends to %d documents", count, len(batch))
            self._durable_upto = upto
        except BaseException:
            # Back to the front of the queue (minus deleted documents): the
            # next flush retries. Bytes that did reach the disk are written
            # again, which is harmless.
            for doc_id, chunks in self._inflight.items():
                self._pending[doc_id] = chunks + self._pending.get(doc_id, [])
            raise
        finally:
            self._inflight = {}
            self._writer = None

    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether the change bytes outweigh the snapshot, or the files are many.

        True when the document's incremental bytes (on disk and queued) reach
        the larger of its snapshot size and ``compaction_floor``, or when it
        is spread over more than 32 files. Only what this process has loaded
        or written counts.
        """
        if not isinstance(doc_id, str):
            return False
        usage = self._usage.get(doc_id, _Usage())
        unwritten = sum(map(len, self._inflight.get(doc_id, [])))
        unwritten += sum(map(len, self._pending.get(doc_id, [])))
        incremental = usage.incremental_bytes + unwritten
        return incremental >= max(usage.snapshot_bytes, self._floor) or usage.files > _MAX_FILES

    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Write ``snapshot`` safely and drop what an earlier one covers; see :meth:`Store.compact`.

        Steps, each safe to crash after: the append log is rotated (later
        appends go to a new file); the snapshot is written to a temporary
        file, fsync'd, read back, compared with what was written and given
        to ``verify``, then renamed to ``snapshot/<heads hash>`` and the
        directory fsync'd; then the generation before the current one is
        removed (the snapshot, JS change files and append logs that the
        previous compaction left). So a document keeps two generations on
        disk: the new snapshot with the logs after it, and the previous
        snapshot with the logs between the two.
        """
        doc_id = _check_id(doc_id)
        snapshot = check_chunks(snapshot, "snapshot")
        self._require_open(writing=True)
        usage = await self._run(self._disk.compact, doc_id, snapshot, _heads_hash(heads), verify)
        self._usage[doc_id] = usage
        self._ids.add(doc_id)

    async def delete(self, doc_id: DocumentId) -> None:
        """Remove the document's files and forget its queued appends."""
        doc_id = _check_id(doc_id)
        self._require_open(writing=True)
        self._pending.pop(doc_id, None)
        self._inflight.pop(doc_id, None)
        self._ids.discard(doc_id)
        self._usage.pop(doc_id, None)
        await self._run(self._disk.delete, doc_id)

    async def close(self) -> None:
        """Flush what was appended so far, refuse further appends, stop the I/O thread."""
        if self._io is None or self._closing:
            return
        self._closing = True
        try:
            await self.flush()
            await self._run(self._disk.close)  # after every queued job
        finally:
            self._stopped = True
            self._io.shutdown(wait=False)
        logger.info("closed %s", self._root)


def _consume_exception(task: asyncio.Task[None]) -> None:
    # The batch's error reaches every waiting flush(); marking it retrieved
    # keeps asyncio from also logging it when no caller is left waiting.
    if not task.cancelled():
        task.exception()
