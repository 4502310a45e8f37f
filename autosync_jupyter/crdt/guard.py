"""What one document knows of its history, to check a peer's changes against it.

:func:`~autosync_jupyter.crdt.changes.read_change` judges a change on its own;
this module judges it against a document before the core applies it:

* its sequence number follows its author's last one, and its operation
  counters come after its author's and its dependencies' (Lamport order);
* every operation it refers to exists, every object it writes to is an
  object of the right kind, every predecessor on a map key is an
  operation on that key, and every list element it names, as a position
  or through a predecessor, is in the list it writes to.

A change that fails would be applied by the core yet leave a document whose
next save does not load (a save keeps operations, and rebuilds each change
from them: the rebuilt change no longer hashes the same), so the hub
refuses it and the peer that sent it.

:class:`DocumentGuard` keeps, per document, each author's changes (counter
ranges and hashes, about 150 bytes per change, from the document's changes
when the first change arrives) and, once a change refers to older
operations, where every operation is (:class:`_OpIndex`, read from a save:
16 bytes per map write, a few entries per run of typed text; about 1.4 µs
per operation to build, once per loaded document). Both are kept up to date
as changes come.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import automerge.core as am

from .binding import object_id
from .changes import MAP, SEQUENCE, ChangeInfo, OpRef, read_change
from .chunks import (
    CHUNK_COMPRESSED,
    CHUNK_DOCUMENT,
    MAGIC,
    ChunkRejected,
    check_document_chunk,
    deflate_change,
    document_columns,
)
from .columns import ColumnError, decode_boolean, decode_delta, decode_rle, read_uleb
from .sync_message import SyncMessage

__all__ = [
    "Admission",
    "DocumentGuard",
    "Failure",
    "Limits",
    "Pending",
    "Rejected",
    "admit",
    "verify_applied",
]


def _kind(obj_type: object) -> str | None:
    # The binding's ObjType is not hashable: compare, do not look up.
    if obj_type == am.ObjType.Map:
        return MAP
    if obj_type in (am.ObjType.List, am.ObjType.Text):
        return SEQUENCE
    return None


@dataclass
class _Author:
    """One actor's changes, in sequence order."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)

    def holding(self, counter: int) -> int | None:
        """Index of the change that made operation ``counter``, if any."""
        i = bisect.bisect_right(self.starts, counter) - 1
        if i >= 0 and counter <= self.ends[i]:
            return i
        return None


@dataclass
class Pending:
    """Changes of one sync message accepted so far, not yet applied."""

    infos: dict[bytes, ChangeInfo] = field(default_factory=dict)
    authors: dict[bytes, list[ChangeInfo]] = field(default_factory=dict)

    def add(self, info: ChangeInfo) -> None:
        self.infos[info.hash] = info
        self.authors.setdefault(info.actor, []).append(info)

    def holding(self, ref: OpRef) -> ChangeInfo | None:
        for info in self.authors.get(ref[0], ()):
            if info.start_op <= ref[1] <= info.max_op:
                return info
        return None


_ABSENT = object()


class _OpIndex:
    """Where a document's operations are: the key each map write is on, the list
    each list element is in, and the element each other list write targets.

    Built from a save of the document (its operations, sorted by object), then
    kept up to date from each change the document takes. Compact: map writes
    cost 16 bytes each (a counter and a hash of their key, per author), list
    elements are kept as runs of consecutive counters of one author in one
    list (typing makes long runs), so a long text costs a few entries.
    """

    def __init__(self) -> None:
        self._map_counters: dict[bytes, array[int]] = {}
        self._map_keys: dict[bytes, array[int]] = {}
        self._starts: dict[bytes, list[int]] = {}
        self._ends: dict[bytes, list[int]] = {}
        self._lists: dict[bytes, list[OpRef]] = {}
        self._writes: dict[OpRef, tuple[OpRef, OpRef]] = {}

    @classmethod
    def from_saved(cls, saved: bytes) -> _OpIndex:
        """Index a document from its ``save()``."""
        index = cls()
        doc = document_columns(saved)
        cols = doc.ops
        rows = len(decode_rle(cols.get(0x42, b""), "u", limit=2**40))

        def column(values: list[Any]) -> list[Any]:
            return values + [None] * (rows - len(values))

        # Typed loosely: these are our own saved bytes, read as they are.
        obj_actor = column(decode_rle(cols.get(0x01, b""), "u", limit=rows))
        obj_ctr = column(decode_rle(cols.get(0x02, b""), "u", limit=rows))
        key_actor = column(decode_rle(cols.get(0x11, b""), "u", limit=rows))
        key_ctr = column(decode_delta(cols.get(0x13, b""), limit=rows))
        key_str = column(decode_rle(cols.get(0x15, b""), "s", limit=rows))
        id_actor: list[Any] = decode_rle(cols.get(0x21, b""), "u", limit=rows)
        id_ctr: list[Any] = decode_delta(cols.get(0x23, b""), limit=rows)
        insert = decode_boolean(cols.get(0x34, b""), limit=rows)
        insert += [False] * (rows - len(insert))
        actors = doc.actors
        maps: dict[bytes, list[tuple[int, int]]] = {}
        inserts: dict[bytes, list[tuple[int, OpRef]]] = {}
        for row in range(rows):
            actor: bytes = actors[id_actor[row]]
            counter: int = id_ctr[row]
            o_actor = obj_actor[row]
            obj: OpRef | None = None if o_actor is None else (actors[o_actor], obj_ctr[row])
            if key_str[row] is not None:
                maps.setdefault(actor, []).append((counter, hash((obj, key_str[row]))))
            elif obj is None:
                continue
            elif insert[row]:
                inserts.setdefault(actor, []).append((counter, obj))
            elif key_actor[row] is not None:
                element = (actors[key_actor[row]], key_ctr[row])
                index._writes[(actor, counter)] = (obj, element)
        for actor, entries in maps.items():
            entries.sort()
            index._map_counters[actor] = array("q", [c for c, _ in entries])
            index._map_keys[actor] = array("q", [k for _, k in entries])
        for actor, items in inserts.items():
            items.sort()
            for counter, obj in items:
                index.add_element(actor, counter, obj)
        return index

    def add(self, info: ChangeInfo) -> None:
        """Take note of the operations of a change the document now holds."""
        actor = info.actor
        if info.map_ops:
            counters = self._map_counters.setdefault(actor, array("q"))
            keys = self._map_keys.setdefault(actor, array("q"))
            for counter, (obj, key) in sorted(info.map_ops.items()):
                if counters and counters[-1] >= counter:
                    i = bisect.bisect_left(counters, counter)
                    counters.insert(i, counter)
                    keys.insert(i, hash((obj, key)))
                else:
                    counters.append(counter)
                    keys.append(hash((obj, key)))
        for counter, in_list in info.inserts.items():
            if in_list is not None:
                self.add_element(actor, counter, in_list)
        for counter, (in_list, element) in info.element_ops.items():
            if in_list is not None:
                self._writes[(actor, counter)] = (in_list, element)

    def on_key(self, op: OpRef, obj: OpRef | None, key: bytes) -> bool:
        """Whether ``op`` is a write to ``key`` of map ``obj``."""
        counters = self._map_counters.get(op[0])
        if counters is None:
            return False
        i = bisect.bisect_left(counters, op[1])
        return (
            i < len(counters)
            and counters[i] == op[1]
            and self._map_keys[op[0]][i] == hash((obj, key))
        )

    def add_element(self, actor: bytes, counter: int, obj: OpRef) -> None:
        starts = self._starts.setdefault(actor, [])
        ends = self._ends.setdefault(actor, [])
        lists = self._lists.setdefault(actor, [])
        if starts and ends[-1] + 1 == counter and lists[-1] == obj:
            ends[-1] = counter
        elif not starts or starts[-1] < counter:
            starts.append(counter)
            ends.append(counter)
            lists.append(obj)
        else:  # out of order (never for new operations): keep the runs sorted
            i = bisect.bisect_left(starts, counter)
            starts.insert(i, counter)
            ends.insert(i, counter)
            lists.insert(i, obj)

    def list_of(self, element: OpRef) -> object:
        """The list holding ``element``, or ``_ABSENT``."""
        starts = self._starts.get(element[0])
        if starts is None:
            return _ABSENT
        i = bisect.bisect_right(starts, element[1]) - 1
        if i >= 0 and element[1] <= self._ends[element[0]][i]:
            return self._lists[element[0]][i]
        return _ABSENT

    def target(self, op: OpRef) -> tuple[OpRef, OpRef] | None:
        """``(list, element)`` a non-insert list operation writes to."""
        return self._writes.get(op)


class DocumentGuard:
    """The history facts of one document that incoming changes are checked against.

    Args:
        core: the document, whose changes are indexed once (about 1 µs per change).
    """

    def __init__(self, core: am.Document) -> None:
        self._core = core
        self._authors: dict[bytes, _Author] = {}
        self._changes: dict[bytes, tuple[bytes, int]] = {}  # hash -> (actor, index)
        # Built from a save when a change first refers to older operations.
        self._ops: _OpIndex | None = None
        self._heads = core.get_heads()
        self.record(core.get_changes([]), {})

    def catch_up(self) -> None:
        """Take note of changes made to the document since the guard last looked.

        For documents changed by other means than a checked sync message
        (a user's edits); a no-op when nothing changed.
        """
        heads = self._core.get_heads()
        if heads != self._heads:
            self.record(self._core.get_changes(self._heads), {})
            self._heads = heads

    def __len__(self) -> int:
        return len(self._changes)

    def knows(self, change_hash: bytes) -> bool:
        """Whether the document holds the change with this hash."""
        return change_hash in self._changes

    def record(self, changes: Iterable[Any], infos: dict[bytes, ChangeInfo]) -> None:
        """Take note of changes the document now holds (binding ``Change`` objects).

        ``infos`` has what :func:`~autosync_jupyter.crdt.changes.read_change` said
        of the ones that came from peers; others (made here) are read now.
        """
        for change in changes:
            change_hash = change.hash
            if change_hash in self._changes:
                continue
            self._note(change_hash, change.actor_id, change.start_op, change.max_op)
            if self._ops is None:
                continue
            info = infos.get(change_hash)
            if info is None:
                try:
                    info = read_change(change.bytes)
                except ChunkRejected:
                    self._ops = None  # rebuilt from a save when next needed
                    continue
            self._ops.add(info)

    def record_admitted(self, admission: Admission, heads: list[bytes]) -> None:
        """Take note of the changes of ``admission``, which the core applied, leaving ``heads``.

        For when :meth:`Admission.applied_alone` holds: the changes were read
        and checked on arrival, so the document need not be asked for them.
        """
        for info in admission.accepted.values():
            self._note(info.hash, info.actor, info.start_op, info.max_op)
            if self._ops is not None:
                self._ops.add(info)
        self._heads = heads

    @property
    def heads(self) -> list[bytes]:
        """The document's heads when the guard last took note of its changes."""
        return self._heads

    def _note(self, change_hash: bytes, actor: bytes, start_op: int, max_op: int) -> None:
        author = self._authors.setdefault(actor, _Author())
        author.starts.append(start_op)
        author.ends.append(max_op)
        author.hashes.append(change_hash)
        self._changes[change_hash] = (actor, len(author.hashes) - 1)

    def _max_op(self, change_hash: bytes, pending: Pending) -> int | None:
        found = self._changes.get(change_hash)
        if found is not None:
            return self._authors[found[0]].ends[found[1]]
        info = pending.infos.get(change_hash)
        return info.max_op if info is not None else None

    def _last(self, actor: bytes, pending: Pending) -> tuple[int, int]:
        """(last sequence number, last max op) of an author, pending changes included."""
        mine = pending.authors.get(actor)
        if mine:
            return mine[-1].seq, mine[-1].max_op
        author = self._authors.get(actor)
        if author is None or not author.ends:
            return 0, 0
        return len(author.ends), author.ends[-1]

    def _holding(self, ref: OpRef) -> bytes | None:
        author = self._authors.get(ref[0])
        if author is None:
            return None
        i = author.holding(ref[1])
        return None if i is None else author.hashes[i]

    def ready(self, info: ChangeInfo, pending: Pending) -> bool:
        """Whether every dependency of ``info`` is in the document or pending."""
        return all(dep in self._changes or dep in pending.infos for dep in info.deps)

    def check(self, info: ChangeInfo, pending: Pending) -> str | None:
        """Why ``info`` must not be applied after the document and ``pending``, or None.

        Call only for a change that is :meth:`ready` and not yet known.
        """
        seq, max_op = self._last(info.actor, pending)
        if info.seq != seq + 1:
            return f"change {info.hash.hex()[:12]} has sequence number {info.seq}, not {seq + 1}"
        if info.start_op <= max_op:
            return f"change {info.hash.hex()[:12]} reuses its author's operation counters"
        for dep in info.deps:
            dep_max = self._max_op(dep, pending)
            if dep_max is not None and info.start_op <= dep_max:
                return f"change {info.hash.hex()[:12]} starts before its dependencies end"
        for op in info.references:
            if self._holding(op) is None and pending.holding(op) is None:
                return f"change {info.hash.hex()[:12]} refers to an operation that does not exist"
        for made, kind in info.objects.items():
            reason = self._check_object(made, kind, pending)
            if reason:
                return f"change {info.hash.hex()[:12]}: {reason}"
        for on, key, pred in info.map_predecessors:
            if not self._on_key(on, key, pred, pending):
                return (
                    f"change {info.hash.hex()[:12]} names a predecessor that is not "
                    "on the key it writes"
                )
        for in_list, element in info.elements:
            if self._list_of(element, pending) != in_list:
                return f"change {info.hash.hex()[:12]} names an element of another list"
        for in_list, element, pred in info.element_predecessors:
            if pred == element:
                continue  # the element itself, checked just above
            maker = pending.holding(pred)
            if maker is not None:
                target = maker.element_ops.get(pred[1])
            else:
                target = self._index().target(pred)
            if target != (in_list, element):
                return (
                    f"change {info.hash.hex()[:12]} names a predecessor that is not "
                    "on the element it writes"
                )
        return None

    def _index(self) -> _OpIndex:
        if self._ops is None:
            self._ops = _OpIndex.from_saved(self._core.save())
        return self._ops

    def _list_of(self, element: OpRef, pending: Pending) -> object:
        maker = pending.holding(element)
        if maker is not None:
            return maker.inserts.get(element[1], _ABSENT)
        return self._index().list_of(element)

    def _check_object(self, obj: OpRef, kind: str, pending: Pending) -> str | None:
        maker = pending.holding(obj)
        if maker is not None:
            made = maker.made.get(obj[1])
        else:
            try:
                made = _kind(self._core.object_type(object_id(*obj)))
            except Exception:
                made = None
        if made is None:
            return "writes to something that is not an object"
        if made != kind:
            return f"writes to a {made} as if it were a {kind}"
        return None

    def _on_key(self, obj: OpRef | None, key: bytes, pred: OpRef, pending: Pending) -> bool:
        maker = pending.holding(pred)
        if maker is not None:
            return maker.map_ops.get(pred[1]) == (obj, key)
        return self._index().on_key(pred, obj, key)


@dataclass(frozen=True)
class Limits:
    """What one sync message may cost once unpacked.

    Attributes:
        max_inflated: bytes its chunks may inflate to, all together.
        max_ops: operations its changes may hold, all together.
    """

    max_inflated: int
    max_ops: int

    @classmethod
    def for_message_size(cls, max_message_size: int) -> Limits:
        """Limits derived from the largest message accepted on the wire.

        A message may unpack to at most that many bytes, and hold at most one
        operation per 100 of them (at least 100,000; a million for the
        default 100 MiB): each operation is checked in Python (about 3.5 µs)
        and kept by the core (about a hundred bytes), so the time and memory
        one message can cost stay bounded.
        """
        return cls(max_message_size, max(100_000, max_message_size // 100))


class Rejected(Exception):
    """A sync message the document must not take; ``too_big`` for a limit, else invalid."""

    def __init__(self, reason: str, *, too_big: bool = False) -> None:
        super().__init__(reason)
        self.too_big = too_big


@dataclass
class Admission:
    """The outcome of :func:`admit` for one sync message.

    Attributes:
        accepted: changes checked against the document and applicable now.
        orphans: changes whose dependencies the document lacks; the core
            keeps them until those arrive, and they are checked then.
        documents: how many saved-document chunks came along (checked
            after the core unpacks them).
        chunks: the bytes to store for each accepted change, by hash: as
            it came, or deflated if it came large and uncompressed.
    """

    accepted: dict[bytes, ChangeInfo] = field(default_factory=dict)
    orphans: dict[bytes, ChangeInfo] = field(default_factory=dict)
    documents: int = 0
    chunks: dict[bytes, bytes] = field(default_factory=dict)

    def applied_alone(self, before: list[bytes], heads: list[bytes]) -> bool:
        """Whether the core, at ``before`` and now at ``heads``, applied just the accepted changes.

        The heads the accepted changes lead to from ``before`` are computed
        here; a document's changes are exactly the ancestors of its heads, so
        if the core's heads are those, it holds what it held plus the accepted
        changes, nothing more and nothing less. Asking the core which changes
        are new costs a walk of the document's whole history, the price of
        the message itself again; this costs a few set operations. Only for
        messages without orphans or document chunks.
        """
        if self.orphans or self.documents:
            return False
        expected = set(before)
        for info in self.accepted.values():
            expected.difference_update(info.deps)
            expected.add(info.hash)
        return sorted(expected) == heads


#: Changes that came uncompressed are stored so below this many bytes, and
#: deflated (as the core keeps any of 256 bytes or more) from it: a change of
#: a few hundred bytes is mostly hashes, which deflating hardly shrinks, at
#: a cost near that of checking it; a compaction rewrites both anyway.
_DEFLATE_FROM = 1024


def _chunks(entry: bytes) -> list[bytes]:
    # A change entry is one or more chunks back to back; anything else is refused.
    out = []
    pos = 0
    while pos < len(entry):
        if entry[pos : pos + 4] != MAGIC or pos + 9 > len(entry):
            raise Rejected("a change entry that is not a sequence of automerge chunks")
        try:
            length, start = read_uleb(entry, pos + 9)
        except ColumnError:
            raise Rejected("a change entry with a damaged chunk header") from None
        end = start + length
        if end > len(entry):
            raise Rejected("a change entry whose last chunk is cut short")
        out.append(entry[pos:end])
        pos = end
    return out


def admit(guard: DocumentGuard, message: SyncMessage, limits: Limits) -> Admission:
    """Check every change a sync message carries, before the core sees any of it.

    Raises:
        Rejected: a chunk is damaged, not canonical, inconsistent with the
            document, or the message unpacks beyond ``limits``.
    """
    admission = Admission()
    inflated = ops = 0
    pending = Pending()
    for entry in message.changes:
        for chunk in _chunks(entry):
            room = limits.max_inflated - inflated
            try:
                if chunk[8] == CHUNK_DOCUMENT:
                    doc = check_document_chunk(
                        chunk, max_inflated=room, max_rows=limits.max_ops - ops
                    )
                    inflated += doc.inflated_size
                    ops += doc.ops
                    admission.documents += 1
                    continue
                info = read_change(chunk, max_inflated=room, max_ops=limits.max_ops - ops)
            except ChunkRejected as exc:
                raise Rejected(str(exc), too_big="more than" in str(exc)) from None
            inflated += info.inflated_size
            ops += info.num_ops
            if inflated > limits.max_inflated:
                raise Rejected(
                    f"changes unpack to more than {limits.max_inflated} bytes", too_big=True
                )
            if guard.knows(info.hash) or info.hash in pending.infos:
                continue
            if info.hash in admission.orphans or not guard.ready(info, pending):
                admission.orphans[info.hash] = info
                continue
            reason = guard.check(info, pending)
            if reason:
                raise Rejected(reason)
            pending.add(info)
            if chunk[8] == CHUNK_COMPRESSED or len(chunk) < _DEFLATE_FROM:
                admission.chunks[info.hash] = chunk
            else:
                admission.chunks[info.hash] = deflate_change(chunk)
    admission.accepted = pending.infos
    return admission


@dataclass(frozen=True)
class Failure:
    """Why a change the core applied must be undone, and which change it was."""

    reason: str
    change_hash: bytes


def verify_applied(
    guard: DocumentGuard, changes: list[Any], admission: Admission, known: dict[bytes, ChangeInfo]
) -> Failure | None:
    """After the core applied a message, check what could not be checked before.

    ``changes`` are the document's new changes in the order the core applied
    them; those not in ``admission.accepted`` (orphans whose dependencies
    arrived, changes unpacked from a document chunk) are read and checked
    now, in order, with ``known`` holding what was read of earlier orphans.
    Every change is recorded in the guard as it passes.

    Returns:
        Why the document must be rolled back (and which change), or None.
    """
    for change in changes:
        info = admission.accepted.get(change.hash) or known.get(change.hash)
        if change.hash not in admission.accepted:
            if info is None:
                try:
                    info = read_change(change.bytes)
                except ChunkRejected as exc:
                    return Failure(
                        f"the core applied a change that does not check: {exc}", change.hash
                    )
            reason = guard.check(info, Pending())
            if reason:
                return Failure(reason, change.hash)
        guard.record([change], {change.hash: info} if info is not None else {})
    guard.catch_up()
    return None
