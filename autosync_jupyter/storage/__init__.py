"""Storage: where documents live between runs, and how damaged bytes are salvaged.

A :class:`Store` keeps each document as a snapshot plus incremental
changes; :class:`FileStore` writes the layout of the JS sync server's
``NodeFSStorageAdapter``, :class:`MemoryStore` keeps nothing. The salvage
reader turns whatever bytes a store holds into the largest loadable
document. Storage knows nothing of peers or the protocol.

Modules, one job each:

- :mod:`.base`: the :class:`Store` contract, :class:`Damage`,
  :class:`StoreLocked`, :data:`COMPACTION_FLOOR`, the id check;
- :mod:`.memory`: :class:`MemoryStore`;
- :mod:`.files`: :class:`FileStore`, the event-loop side (queues, group
  commit, the I/O thread) and the on-disk layout it keeps;
- :mod:`.postgres`: :class:`PostgresStore`, the same contract in
  PostgreSQL tables (needs the ``postgres`` extra: psycopg 3);
- :mod:`.disk`: that layout's file operations, run on the I/O thread;
- :mod:`.fileio`: crash-safe file primitives (fsync'd writes, atomic
  replacement, reads that refuse anything but regular files);
- :mod:`.lock`: the lock file, one open store per directory;
- :mod:`.quarantine`: damaged bytes set aside and cut out of their files;
- :mod:`.salvage`: loading damaged bytes into the largest loadable document.
"""

from __future__ import annotations

import os

from .base import COMPACTION_FLOOR, Damage, Store, StoreLocked
from .files import FileStore
from .memory import MemoryStore
from .postgres import PostgresStore, is_postgres_url

__all__ = [
    "COMPACTION_FLOOR",
    "Damage",
    "FileStore",
    "MemoryStore",
    "PostgresStore",
    "Store",
    "StoreLocked",
    "open_store",
]


def open_store(data_dir: str | os.PathLike[str] | None) -> Store:
    """Return the store ``data_dir`` names, not yet opened (``await store.open()``).

    A ``postgresql://`` (or ``postgres://``) URL gives a :class:`PostgresStore`,
    a path a :class:`FileStore` over that directory, None a :class:`MemoryStore`.
    """
    if data_dir is None:
        return MemoryStore()
    if is_postgres_url(data_dir):
        return PostgresStore(os.fspath(data_dir))
    return FileStore(data_dir)
