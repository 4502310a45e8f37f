"""The disk side of a :class:`~.files.FileStore`: its layout and every file operation.

:class:`Disk` runs only on the store's I/O thread, one call at a time. It
reads and writes the directory layout described in :mod:`.files` (that of
the JS sync server's ``NodeFSStorageAdapter``, plus the R package's
``<id>.automerge`` files): listing documents, reading and checking their
files, appending change logs in batches, compacting and deleting. The lock
file is :mod:`.lock`'s, damaged bytes are :mod:`.quarantine`'s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from ..errors import InvalidDocumentId, StorageError
from ..ids import DocumentId, is_valid_document_id
from .base import Damage
from .fileio import (
    BINARY,
    ensure_dir,
    fsync_dir,
    fsync_or_error,
    read_file,
    replace_atomically,
    tmp_name,
    write_all,
    write_new_file,
)
from .lock import lock_directory, unlock
from .quarantine import CORRUPT_DIR, keep_sound_chunks, set_aside

__all__ = ["MAX_FILES", "Disk", "Usage", "heads_hash"]

logger = logging.getLogger("autosync_jupyter.storage")

# Threads that fsync the files of one batch in parallel.
_FSYNC_THREADS: Final = 16

# More files than this per document make every load slow (one open and read
# each), whatever their size: JS writes one file per change save, and this
# store starts a new append file per process run.
MAX_FILES: Final = 32


_STORAGE_ID_DIR: Final = "st"
_STORAGE_ID_FILE: Final = "orage-adapter-id"
_STORAGE_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SNAPSHOT: Final = "snapshot"
_INCREMENTAL: Final = "incremental"
_R_SUFFIX: Final = ".automerge"
_TRASH_DIR: Final = ".trash"
_APPEND_RE: Final = re.compile(r"append-([0-9]{6,18})")
_TMP_RE: Final = re.compile(r".+\.tmp-[0-9a-f]{8}")
# Key of the R layout's file in a document's set of loaded files.
_R_KEY: Final = "r"
# Only the base58 alphabet: never a path separator, never "." or "..".
_SAFE_ID_RE: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]{3,100}")


def heads_hash(heads: Iterable[bytes]) -> str:
    """Name a snapshot as JS automerge-repo does: SHA-256 of the sorted hex heads, joined."""
    joined = "".join(sorted(bytes(head).hex() for head in heads))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Usage:
    """What is on disk for one document, as far as this process has seen."""

    snapshot_bytes: int = 0
    incremental_bytes: int = 0
    files: int = 0


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

    def usage(self) -> Usage:
        return Usage(self.snapshot_bytes, self.incremental_bytes, self.files)


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


class Disk:
    """Every file operation of a :class:`~.files.FileStore`.

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
            unlock(self._lock_fd)
            self._lock_fd = None

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

    # -- open

    def prepare(self) -> str:
        """Create the directory, read or create the storage id; list nothing.

        Only the top level is looked at (temporary files a crash left
        there): opening costs the same for ten documents as for a million.
        """
        if self.read_only:
            if not self.root.is_dir():
                raise StorageError(f"no data directory at {self.root}")
            try:
                return self._storage_id()
            except OSError as exc:
                raise StorageError(f"cannot read the store in {self.root}: {exc}") from exc
        try:
            ensure_dir(self.root.absolute())
            self._lock_fd = lock_directory(self.root)
            shutil.rmtree(self.root / _TRASH_DIR, ignore_errors=True)
            for directory in (self.root, self.root / _STORAGE_ID_DIR):
                self._remove_leftovers(directory)
            return self._storage_id()
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open the store in {self.root}: {exc}") from exc
            raise

    def _storage_id(self) -> str:
        path = self.root / _STORAGE_ID_DIR / _STORAGE_ID_FILE
        try:
            raw = read_file(path)
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
            set_aside(self.root / CORRUPT_DIR / "storage-adapter-id", raw)
        storage_id = str(uuid.uuid4())
        ensure_dir(path.parent)
        replace_atomically(path, storage_id.encode("ascii"), path.parent)
        logger.info("created storage id %s in %s", storage_id, self.root)
        return storage_id

    def holds(self, doc_id: DocumentId) -> bool:
        """Whether ``doc_id`` has a file with bytes in it: a few stats, any thread.

        A document directory left with empty files only (a crash between
        creating a log and writing it) holds nothing.
        """
        try:
            if self._path(doc_id, _R_KEY).is_file():
                return True
            return _has_chunks(self._doc_dir(doc_id))
        except OSError:
            return True  # unreadable: listed, and loading it says why

    def index(self) -> set[DocumentId]:
        """List every document: read only, so any thread may call it beside the I/O thread.

        Compactions and deletes running meanwhile never make a document
        vanish from the listing (a snapshot is renamed into place before
        the files it replaces go; a delete renames the whole directory).
        """
        found: set[DocumentId] = set()
        try:
            with os.scandir(self.root) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(f"cannot list the store in {self.root}: {exc}") from exc
        for entry in entries:
            name = entry.name
            if name.startswith(".") or _TMP_RE.fullmatch(name):
                continue  # .corrupt, R's .sync_states, editor and OS files; leftovers
            if entry.is_dir(follow_symlinks=False) and len(name) == 2:
                try:
                    found.update(self._index_prefix(Path(entry.path)))
                except OSError as exc:
                    # One unreadable folder must not hide the others.
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
                if _TMP_RE.fullmatch(entry.name):
                    continue
                if prefix_dir.name == _STORAGE_ID_DIR and entry.name == _STORAGE_ID_FILE:
                    continue
                doc_id = prefix_dir.name + entry.name
                if not entry.is_dir(follow_symlinks=False) or not is_valid_document_id(doc_id):
                    logger.warning("skipping %s: not a document directory", entry.path)
                    continue
                try:
                    has_data = _has_chunks(Path(entry.path))
                except OSError as exc:
                    # Listed all the same: reading it says why it cannot be read.
                    logger.error("document %s: cannot list its files (%s)", doc_id, exc)
                    has_data = True
                if has_data:
                    found.add(DocumentId(doc_id))
        return found

    def _remove_leftovers(self, directory: Path) -> None:
        """Remove temporary files that a crash left in ``directory`` (unless read-only)."""
        if self.read_only:
            return
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if _TMP_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                logger.info("removing %s, left over from an interrupted write", entry.path)
                os.unlink(entry.path)

    # -- load

    def _sources(self, doc_id: DocumentId, *, first_read: bool) -> list[str]:
        """Keys of the document's files in load order: snapshots, JS chunks, our logs."""
        doc_dir = self._doc_dir(doc_id)
        if first_read:
            # Its first read in this process: nothing of ours is half-written
            # in it, so a temporary file is a crash's leftover.
            for directory in (doc_dir, doc_dir / _SNAPSHOT, doc_dir / _INCREMENTAL):
                self._remove_leftovers(directory)
        keys = []
        if self._path(doc_id, _R_KEY).is_file():
            keys.append(_R_KEY)
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

    def read(self, doc_id: DocumentId) -> tuple[bytes, Usage, Damage]:
        """Read, check and concatenate every file of ``doc_id``; say what was damaged."""
        first_read = doc_id not in self._documents
        files = self._files(doc_id)
        files.damage = Damage()
        pieces = []
        snapshot_bytes = incremental_bytes = count = 0
        try:
            for key in self._sources(doc_id, first_read=first_read):
                path = self._path(doc_id, key)
                try:
                    data = read_file(path)
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
        files = self._files(doc_id)
        good, rewritten = keep_sound_chunks(
            self.root,
            doc_id,
            path,
            data,
            name=path.name if key == _R_KEY else key.replace("/", "-"),
            tmp_dir=self.root if key == _R_KEY else self._doc_dir(doc_id),
            damage=files.damage,
            read_only=self.read_only,
        )
        active = files.active
        if rewritten and active is not None and key == f"{_INCREMENTAL}/{_append_name(active)}":
            files.active = None  # never append after bytes we did not write
        return good

    # -- append

    def write_batch(self, batch: dict[DocumentId, bytes]) -> dict[DocumentId, Usage]:
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
            return [fsync_or_error(targets[0])]
        return list(self._sync_pool().map(fsync_or_error, targets))

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
            ensure_dir(directory, unsynced)
            number, fd = self._create_log(directory, files)
            unsynced.add(directory)
            new = True
        else:
            number, new = files.active, False
            fd = os.open(directory / _append_name(number), os.O_WRONLY | os.O_APPEND | BINARY)
        try:
            append = _Append(doc_id, fd, number, new, directory, os.fstat(fd).st_size, len(data))
            try:
                write_all(fd, data)
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
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | BINARY, 0o666
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
    ) -> Usage:
        """Write ``snapshot``, check it, then drop the generation before the current one."""
        files = self._files(doc_id)
        # Rotate first: batches submitted after this compaction (bytes
        # appended after the call) go to a new log file, which is kept.
        files.active = None
        doc_dir = self._doc_dir(doc_id)
        snapshot_key = f"{_SNAPSHOT}/{name}"
        path = doc_dir / _SNAPSHOT / name
        try:
            ensure_dir(doc_dir / _SNAPSHOT)
            tmp = doc_dir / tmp_name(name)
            try:
                write_new_file(tmp, snapshot)
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
            fsync_dir(path.parent)
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
                fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot compact document {doc_id}: {exc}") from exc
        files.older = files.covered - {snapshot_key}
        files.covered = {snapshot_key}
        files.snapshot_bytes = len(snapshot)
        files.incremental_bytes = 0
        files.files = 1
        return files.usage()

    def forget(self, doc_id: DocumentId) -> None:
        """Drop the bookkeeping of a document the server unloaded.

        Safe at any moment between jobs: the next write starts a new log
        file, the next read covers every file again, and the generation
        kept for safety is only removed one compaction later than it would
        have been.
        """
        self._documents.pop(doc_id, None)

    def delete(self, doc_id: DocumentId) -> None:
        """Remove every file of ``doc_id``; a crash leaves all of it or none of it visible."""
        self._documents.pop(doc_id, None)
        doc_dir = self._doc_dir(doc_id)
        try:
            if doc_dir.exists():
                trash = self.root / _TRASH_DIR
                ensure_dir(trash)
                target = trash / secrets.token_hex(8)
                os.rename(doc_dir, target)
                fsync_dir(doc_dir.parent)
                shutil.rmtree(target)
                with contextlib.suppress(OSError):
                    os.rmdir(doc_dir.parent)  # only if it held nothing else
            r_file = self._path(doc_id, _R_KEY)
            if r_file.exists():
                r_file.unlink()
                fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot delete document {doc_id}: {exc}") from exc


def _has_chunks(doc_dir: Path) -> bool:
    """Whether a document directory holds a snapshot or change file with bytes in it."""
    for kind in (_SNAPSHOT, _INCREMENTAL):
        try:
            with os.scandir(doc_dir / kind) as entries:
                for entry in entries:
                    if (
                        entry.is_file(follow_symlinks=False)
                        and not _TMP_RE.fullmatch(entry.name)
                        and entry.stat(follow_symlinks=False).st_size
                    ):
                        return True
        except (FileNotFoundError, NotADirectoryError):
            continue
    return False


def _append_name(number: int) -> str:
    return f"append-{number:06d}"


def _append_number(name: str) -> int:
    match = _APPEND_RE.fullmatch(name)
    return int(match.group(1)) if match else 0
