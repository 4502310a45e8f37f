"""The lock file that keeps a second store out of an open data directory.

Two processes writing one directory would delete each other's files at
compaction, so an open :class:`~.files.FileStore` holds an exclusive lock
on ``<dir>/.lock`` (which also names the holding process) until it closes.
The lock is released by the operating system when the process dies,
whatever happens. JS and R never read the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from .base import StoreLocked
from .fileio import BINARY

__all__ = ["LOCK_FILE", "lock_directory", "unlock"]

#: Name of the lock file in a data directory.
LOCK_FILE: Final = ".lock"

if sys.platform == "win32":
    import msvcrt

    def _lock_file(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock_file(fd: int) -> None:
        # flock, not lockf: released when the process dies, whatever happens.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock_directory(root: Path) -> int:
    """Lock the data directory ``root``; return the descriptor that holds the lock.

    Raises:
        StoreLocked: another open store (in this or another process) holds it.
        OSError: the lock file cannot be opened.
    """
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | BINARY, 0o666)
    try:
        _lock_file(fd)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise StoreLocked(
            f"{root} is in use by another store (process {holder or 'unknown'}); "
            "run one server per data directory"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def unlock(fd: int) -> None:
    """Release a lock taken by :func:`lock_directory`."""
    os.close(fd)
