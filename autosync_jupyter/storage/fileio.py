"""File primitives that survive a crash: fsync'd writes, atomic replacement, safe reads.

Every function here blocks; the file store calls them on its I/O thread
only. None of them knows the store's layout.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "BINARY",
    "ensure_dir",
    "fsync_dir",
    "fsync_or_error",
    "read_file",
    "replace_atomically",
    "tmp_name",
    "write_all",
    "write_new_file",
]

#: Flags for every ``os.open`` of a store file: binary (Windows), not inherited.
BINARY: Final = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    if os.name == "nt":  # Windows cannot open a directory; NTFS journals entries itself
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path``.

    A FIFO, a device or a symbolic link in a data directory is not ours
    (``/dev/zero`` would never end, a FIFO would hang the I/O thread): it is
    refused with an OSError, never opened for reading.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | BINARY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist), write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | BINARY, 0o666)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_or_error(target: int | Path) -> OSError | None:
    """fsync a file descriptor or a directory; return the error instead of raising it."""
    try:
        if isinstance(target, Path):
            fsync_dir(target)
        else:
            os.fsync(target)
    except OSError as exc:
        return exc
    return None


def tmp_name(name: str) -> str:
    return f"{name}.tmp-{secrets.token_hex(4)}"


def ensure_dir(path: Path, unsynced: set[Path] | None = None) -> None:
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
            fsync_dir(directory.parent)
        else:
            unsynced.add(directory.parent)


def replace_atomically(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``path`` so that a crash leaves either the old or the new file, whole.

    The temporary file lives in ``tmp_dir`` (same file system), outside
    the directories the JS adapter reads, so a leftover one is invisible
    to a JS server; the store's opening removes leftovers.
    """
    tmp = tmp_dir / tmp_name(path.name)
    try:
        write_new_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
