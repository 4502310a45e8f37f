"""Storage: where documents live between runs, and how damaged bytes are salvaged.

A :class:`Store` keeps each document as a snapshot plus incremental
changes; :class:`FileStore` writes the layout of the JS sync server's
``NodeFSStorageAdapter``, :class:`MemoryStore` keeps nothing. The salvage
reader turns whatever bytes a store holds into the largest loadable
document. Storage knows nothing of peers or the protocol.
"""

from .files import COMPACTION_FLOOR, Damage, FileStore, MemoryStore, Store, StoreLocked, open_store

__all__ = [
    "COMPACTION_FLOOR",
    "Damage",
    "FileStore",
    "MemoryStore",
    "Store",
    "StoreLocked",
    "open_store",
]
