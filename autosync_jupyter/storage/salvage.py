"""Loading a document from stored bytes, keeping every change that can be kept.

A store holds, per document, snapshots and change chunks. When a chunk is
damaged the store sets it aside, and the changes after it that depend on it
can no longer be applied: ``Document.load`` then refuses everything.
:func:`load_document` loads what is complete and hands back the rest as
*waiting* changes: kept (in memory, and on disk through every compaction)
until the missing ones arrive from a peer that still has them, at which
point they apply.

>>> import automerge.core as am
>>> doc = am.Document()
>>> for i in range(3):
...     with doc.transaction() as tx:
...         tx.put(am.ROOT, f"k{i}", am.ScalarType.Int, i)
>>> first, lost, third = (bytes(c.raw_bytes) for c in doc.get_changes([]))
>>> loaded = load_document(first + third)
>>> sorted(loaded.document.keys(am.ROOT)), len(loaded.waiting), len(loaded.missing)
(['k0'], 1, 1)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import automerge.core as am

from ..crdt.binding import is_panic
from ..crdt.changes import ChangeRejected, change_header
from ..crdt.chunks import CHUNK_DOCUMENT, split_chunks
from ..ids import encode_heads
from ..wording import counted

__all__ = ["Loaded", "load_document", "log_salvage"]

logger = logging.getLogger("autosync_jupyter.loading")


@dataclass
class Loaded:
    """What stored bytes gave.

    Attributes:
        document: the document of every change whose history is complete
            (empty when only waiting changes survived; None: nothing in the
            bytes could be read at all).
        waiting: change chunks whose dependencies are missing, by hash.
        missing: the hashes they wait for (directly; none of them is here).
        unreadable: chunks that are sound on disk but that the core refuses.
    """

    document: am.Document | None
    waiting: dict[bytes, bytes] = field(default_factory=dict)
    missing: set[bytes] = field(default_factory=set)
    unreadable: int = 0


def _loads(data: bytes) -> am.Document | None:
    try:
        return am.Document.load(data)
    except BaseException as exc:
        if not is_panic(exc) and not isinstance(exc, Exception):
            raise
        return None


def load_document(data: bytes) -> Loaded:
    """Load ``data`` (snapshots and change chunks, as a store returns them).

    Everything that can be applied is; changes depending on something absent
    come back in :attr:`Loaded.waiting`. One ``Document.load`` when the
    history is complete (the usual case); when it is not, the chunks are
    ordered by their dependencies once and loaded once more.
    """
    whole = _loads(data)
    if whole is not None:
        return _with_queued(whole, data)
    snapshots: list[bytes] = []
    changes: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
    unreadable = 0
    for chunk in split_chunks(data):
        if chunk[8] == CHUNK_DOCUMENT:
            snapshots.append(chunk)
            continue
        try:
            change_hash, deps = change_header(chunk)
        except ChangeRejected:
            unreadable += 1
            continue
        changes.setdefault(change_hash, (chunk, deps))
    base = b""
    for snapshot in snapshots:
        if _loads(base + snapshot) is not None:
            base += snapshot
        else:
            unreadable += 1
    document = _loads(base) if base else am.Document()
    if document is None:
        document = am.Document()
    known = {change.hash for change in document.get_changes([])}
    ordered = _in_dependency_order(changes, known)
    loaded = _loads(base + b"".join(changes[h][0] for h in ordered)) if ordered else document
    if loaded is None:
        # Some change the core will not take: add them one at a time.
        loaded, ordered, refused = _one_by_one(base, document, changes, ordered)
        unreadable += refused
    done = known | set(ordered)
    waiting = {h: chunk for h, (chunk, _) in changes.items() if h not in done}
    missing = {
        dep for h in waiting for dep in changes[h][1] if dep not in done and dep not in waiting
    }
    if not loaded.get_heads() and not snapshots and not ordered and not waiting:
        return Loaded(None, waiting, missing, unreadable)
    return Loaded(loaded, waiting, missing, unreadable)


def _with_queued(document: am.Document, data: bytes) -> Loaded:
    """A document that loaded; the change chunks it did not apply are waiting.

    (After a saved document, the core takes change chunks whose dependencies
    are absent without a word and keeps them aside: they are found here, so
    they are not lost at the next compaction.)
    """
    chunks = [c for c in split_chunks(data) if c[8] != CHUNK_DOCUMENT]
    if not chunks:
        return Loaded(document)
    have = {change.hash for change in document.get_changes([])}
    waiting: dict[bytes, bytes] = {}
    deps_of: dict[bytes, tuple[bytes, ...]] = {}
    for chunk in chunks:
        try:
            change_hash, deps = change_header(chunk)
        except ChangeRejected:
            continue
        if change_hash not in have:
            waiting[change_hash] = chunk
            deps_of[change_hash] = deps
    missing = {d for deps in deps_of.values() for d in deps if d not in have and d not in waiting}
    return Loaded(document, waiting, missing)


def _in_dependency_order(
    changes: dict[bytes, tuple[bytes, tuple[bytes, ...]]], known: set[bytes]
) -> list[bytes]:
    """The changes whose history is complete, each after its dependencies."""
    waiting_on: dict[bytes, list[bytes]] = {}
    blocked: dict[bytes, int] = {}
    ready = []
    for change_hash, (_, deps) in changes.items():
        if change_hash in known:
            continue
        absent = {dep for dep in deps if dep not in known}
        blocked[change_hash] = len(absent)
        for dep in absent:
            waiting_on.setdefault(dep, []).append(change_hash)
        if not absent:
            ready.append(change_hash)
    ordered = []
    while ready:
        change_hash = ready.pop()
        ordered.append(change_hash)
        for child in waiting_on.get(change_hash, ()):
            blocked[child] -= 1
            if not blocked[child]:
                ready.append(child)
    return ordered


# Adding changes one at a time reloads the document each time; beyond this
# many, the rest is left waiting rather than stall the caller.
_MAX_ONE_BY_ONE = 2_000


def _one_by_one(
    base: bytes,
    document: am.Document,
    changes: dict[bytes, tuple[bytes, tuple[bytes, ...]]],
    ordered: Iterable[bytes],
) -> tuple[am.Document, list[bytes], int]:
    """Add changes one at a time; return the document, what was kept, how many were refused."""
    good = base
    kept: list[bytes] = []
    blocked: set[bytes] = set()
    refused = 0
    loaded = document
    for tried, change_hash in enumerate(ordered):
        chunk, deps = changes[change_hash]
        if tried >= _MAX_ONE_BY_ONE or any(dep in blocked for dep in deps):
            blocked.add(change_hash)  # waits for one the core refused
            continue
        attempt = _loads(good + chunk)
        if attempt is None:
            blocked.add(change_hash)
            refused += 1
            continue
        good += chunk
        kept.append(change_hash)
        loaded = attempt
    return loaded, kept, refused


def log_salvage(doc_id: str, loaded: Loaded) -> None:
    """One line about what a damaged history left: changes that wait, and on what."""
    if loaded.unreadable:
        logger.error(
            "document %s: %s the core refuses were left out",
            doc_id,
            counted(loaded.unreadable, "stored chunk"),
        )
    if loaded.waiting:
        missing = sorted(encode_heads(loaded.missing))
        logger.warning(
            "document %s: %s wait for %s it lacks (%s%s); "
            "kept, and applied when a peer brings them",
            doc_id,
            counted(len(loaded.waiting), "stored change"),
            counted(len(missing), "change"),
            ", ".join(missing[:3]),
            ", ..." if len(missing) > 3 else "",
        )
