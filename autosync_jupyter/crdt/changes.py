"""Reading Automerge change chunks, and refusing the ones that would harm a document.

The Rust core accepts change bytes that it cannot stand behind later: about
one in seven checksum-valid mutations of a real change is applied without
an error, yet the document's next ``save()`` no longer loads (a saved
document rebuilds each change from its operations, and the rebuilt change
hashes differently); others make the core panic. :func:`read_change`
parses a change completely, as the core's encoder would write it, and
raises :class:`ChangeRejected` unless it is

* well formed: a sound chunk (magic, checksum, an inflated size within the
  caller's bound), a header, columns of the change format and nothing else;
* canonical: encoding its operations again gives exactly its bytes
  (:mod:`~autosync_jupyter.crdt.columns`), so a save and load keeps its hash;
* self-consistent: actions with the values, flags and predecessors the
  core expects, and every reference (object, list element, predecessor)
  naming an actor of the change and an operation older than the one that
  refers to it.

What a change means for one document (its sequence number, whether the
operations it references exist) is checked against that document by
:mod:`~autosync_jupyter.crdt.guard`, from the :class:`ChangeInfo` returned here.

>>> import automerge.core as am
>>> doc = am.Document()
>>> with doc.transaction() as tx:
...     tx.put(am.ROOT, "title", am.ScalarType.Str, "hello")
>>> change = doc.get_changes([])[0]
>>> info = read_change(change.bytes)
>>> info.hash == change.hash, info.seq, info.start_op, info.num_ops
(True, 1, 1, 1)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from .chunks import (
    CHUNK_CHANGE,
    CHUNK_COMPRESSED,
    COLUMN_DEFLATE,
    MAGIC,
    MAX_INFLATED,
    ChunkRejected,
    inflate_bounded,
)
from .columns import (
    ColumnError,
    decode_boolean,
    decode_delta,
    decode_rle,
    distinct_values,
    encode_boolean,
    encode_delta,
    encode_maybe_boolean,
    encode_rle,
    read_sleb,
    read_uleb,
    sleb,
    uleb,
)

__all__ = [
    "VALUE_COUNTER",
    "VALUE_FIRST_UNKNOWN",
    "VALUE_TIMESTAMP",
    "ChangeInfo",
    "ChangeRejected",
    "change_header",
    "change_value_types",
    "read_change",
    "restamp_change",
]

# Counters are 32-bit in the core (it refuses larger start ops).
_MAX_COUNTER: Final = 2**32 - 1
_MAX_ACTOR_LENGTH: Final = 256
# Rows a change may hold unless the caller says otherwise.
_DEFAULT_MAX_OPS: Final = 1_000_000

# Column specifications of the change format: (column id << 4) | type.
_OBJ_ACTOR: Final = 0x01
_OBJ_CTR: Final = 0x02
_KEY_ACTOR: Final = 0x11
_KEY_CTR: Final = 0x13
_KEY_STR: Final = 0x15
_INSERT: Final = 0x34
_ACTION: Final = 0x42
_VAL_META: Final = 0x56
_VAL_RAW: Final = 0x57
_PRED_GROUP: Final = 0x70
_PRED_ACTOR: Final = 0x71
_PRED_CTR: Final = 0x73
_EXPAND: Final = 0x94
_MARK_NAME: Final = 0xA5
_KNOWN_COLUMNS: Final = frozenset(
    {
        _OBJ_ACTOR,
        _OBJ_CTR,
        _KEY_ACTOR,
        _KEY_CTR,
        _KEY_STR,
        _INSERT,
        _ACTION,
        _VAL_META,
        _VAL_RAW,
        _PRED_GROUP,
        _PRED_ACTOR,
        _PRED_CTR,
        _EXPAND,
        _MARK_NAME,
    }
)

# Actions (the core's OpType::action_index) and value type codes.
_MAKE_MAP, _PUT, _MAKE_LIST, _DELETE, _MAKE_TEXT, _INCREMENT, _MAKE_TABLE, _MARK = range(8)
_VALUELESS: Final = frozenset({_MAKE_MAP, _MAKE_LIST, _DELETE, _MAKE_TEXT, _MAKE_TABLE})
_NULL, _FALSE, _TRUE, _ULEB, _LEB, _FLOAT = range(6)
_COUNTER, _TIMESTAMP = 8, 9
#: Value type codes (the low four bits of value metadata): a counter, a
#: timestamp, and the first code the 0.5 core does not know.
VALUE_COUNTER: Final = _COUNTER
VALUE_TIMESTAMP: Final = _TIMESTAMP
VALUE_FIRST_UNKNOWN: Final = 10


class ChangeRejected(ChunkRejected):
    """A change chunk that must not reach the Automerge core; the message says why."""


#: An operation id: (actor id, counter).
OpRef: TypeAlias = tuple[bytes, int]
#: What an object is, as far as keys go: a map (keys are names) or a sequence.
MAP: Final = "map"
SEQUENCE: Final = "sequence"


@dataclass(frozen=True, slots=True)
class ChangeInfo:
    """What a document needs to know about a change before applying it.

    Everything a change says about operations outside itself is listed here,
    for :mod:`~autosync_jupyter.crdt.guard` to check against the document; what
    it says about its own operations has been checked already.

    Attributes:
        hash: the change hash (SHA-256 of the uncompressed chunk).
        deps: the hashes it depends on.
        actor: its author's actor id.
        seq: its sequence number among the author's changes (from 1).
        start_op: the counter of its first operation.
        num_ops: how many operations it holds.
        references: the outside operations it refers to (objects, list
            elements, predecessors); a document must hold each of them.
        objects: the outside objects it writes to, with the kind each must
            be (:data:`MAP` when written by name, else :data:`SEQUENCE`).
        map_predecessors: ``(object, key, predecessor)`` for each outside
            predecessor of an operation on a map key (object None: the
            root); the predecessor must be an operation on that key.
        elements: ``(object, element)`` for each outside list element it
            names (as a position or a target); the element must be in that
            list.
        element_predecessors: ``(object, element, predecessor)`` for each
            outside predecessor of an operation on a list element; it must
            be that element, or an operation on it.
        made: the objects it creates, by counter, with their kind.
        map_ops: its operations on map keys, by counter: ``(object, key)``.
        inserts: its list inserts, by counter, with their list.
        element_ops: its other operations on list elements, by counter:
            ``(object, element)``.
        size: the chunk's size in bytes as received.
        inflated_size: the size of the change once inflated.
    """

    hash: bytes
    deps: tuple[bytes, ...]
    actor: bytes
    seq: int
    start_op: int
    num_ops: int
    references: frozenset[OpRef]
    objects: dict[OpRef, str]
    map_predecessors: tuple[tuple[OpRef | None, bytes, OpRef], ...]
    elements: tuple[tuple[OpRef | None, OpRef], ...]
    element_predecessors: tuple[tuple[OpRef | None, OpRef, OpRef], ...]
    made: dict[int, str]
    map_ops: dict[int, tuple[OpRef | None, bytes]]
    inserts: dict[int, OpRef | None]
    element_ops: dict[int, tuple[OpRef | None, OpRef]]
    size: int
    inflated_size: int

    @property
    def max_op(self) -> int:
        """The counter of its last operation (``start_op - 1`` when it holds none)."""
        return self.start_op + self.num_ops - 1


def _change_body(chunk: bytes, max_inflated: int) -> tuple[int, int, bytes]:
    """A change chunk's type, where it ends, and its (inflated) body; nothing checked."""
    if len(chunk) < 10 or chunk[:4] != MAGIC:
        raise ChangeRejected("not an automerge chunk (bad magic bytes)")
    try:
        length, start = read_uleb(chunk, 9)
        if chunk[8] == CHUNK_CHANGE:
            body = chunk[start : start + length]
        elif chunk[8] == CHUNK_COMPRESSED:
            body = inflate_bounded(chunk[start : start + length], max_inflated)
        else:
            raise ChangeRejected(f"chunk type {chunk[8]} is not a change")
    except (ColumnError, ChunkRejected) as exc:  # ChangeRejected above included
        raise ChangeRejected(f"not a sound change chunk: {exc}") from None
    return chunk[8], start + length, body


def change_header(
    chunk: bytes, *, max_inflated: int = MAX_INFLATED
) -> tuple[bytes, tuple[bytes, ...]]:
    """A change chunk's hash and dependencies, read without checking the rest.

    For bytes this process stored itself (finding what a damaged history
    still holds); peers' bytes go through :func:`read_change`.

    Raises:
        ChangeRejected: the chunk is not a sound change chunk.
    """
    chunk_type, end, body = _change_body(chunk, max_inflated)
    if chunk_type == CHUNK_CHANGE:
        digest = hashlib.sha256(memoryview(chunk)[8:end]).digest()
    else:
        digest = hashlib.sha256(bytes((CHUNK_CHANGE,)) + uleb(len(body)) + body).digest()
    try:
        count, pos = read_uleb(body, 0)
    except ColumnError as exc:
        raise ChangeRejected(f"not a sound change chunk: {exc}") from None
    deps = tuple(body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))
    if pos + 32 * count > len(body):
        raise ChangeRejected("change ends inside its dependencies")
    return digest, deps


def change_value_types(chunk: bytes, *, max_inflated: int = MAX_INFLATED) -> set[int]:
    """The value type codes a change chunk writes (``VALUE_COUNTER``, ...), nothing checked.

    For the changes of a document this process holds (may it hold a
    counter?); peers' bytes go through :func:`read_change`.

    Raises:
        ChangeRejected: the chunk or its value column does not decode.
    """
    _, _, body = _change_body(chunk, max_inflated)
    try:
        header = _read_header(body)
        pos = header.columns_at
        for spec, size in header.specs:
            data, pos = _take(body, pos, size, "columns")
            if spec & ~COLUMN_DEFLATE == _VAL_META:
                if spec & COLUMN_DEFLATE:
                    data = inflate_bounded(data, max_inflated)
                return {int(meta) & 0x0F for meta in distinct_values(data, "u")}
    except (ColumnError, ChunkRejected) as exc:
        if isinstance(exc, ChangeRejected):
            raise
        raise ChangeRejected(f"change columns do not decode: {exc}") from None
    return set()


def restamp_change(
    chunk: bytes, *, time: int, message: str | None, max_inflated: int = MAX_INFLATED
) -> tuple[bytes, bytes]:
    """A change chunk with its time and message replaced: the new chunk and its hash.

    Works around ``transaction()`` of the binding, which takes neither (its
    changes carry time 0 and no message). Only the two header fields are
    written again; the operations' columns are kept byte for byte, so the
    result is as canonical as the input (a save and load keeps its hash).
    ``time`` is in seconds since the epoch, as JavaScript's ``change()``
    writes it. The result is uncompressed (type 1), which every reader takes.

    >>> import automerge.core as am
    >>> doc = am.Document()
    >>> with doc.transaction() as tx:
    ...     tx.put(am.ROOT, "n", am.ScalarType.Int, 1)
    >>> chunk, digest = restamp_change(doc.get_changes([])[0].bytes, time=1700000000, message="hi")
    >>> info = read_change(chunk)
    >>> info.hash == digest, info.seq, info.num_ops
    (True, 1, 1)

    Raises:
        ChangeRejected: the chunk is not a sound change chunk.
    """
    _, _, body = _change_body(chunk, max_inflated)
    try:
        count, pos = read_uleb(body, 0)
        actor_length, pos = read_uleb(body, pos + 32 * count)
        _, pos = read_uleb(body, pos + actor_length)  # sequence number
        _, pos = read_uleb(body, pos)  # start op
        fields_at = pos
        _, pos = read_sleb(body, pos)
        message_length, pos = read_uleb(body, pos)
    except ColumnError as exc:
        raise ChangeRejected(f"not a sound change chunk: {exc}") from None
    pos += message_length
    if pos > len(body):
        raise ChangeRejected("change ends inside its message")
    # The core writes no message and the empty message alike (length 0).
    text = (message or "").encode("utf-8")
    rebuilt = body[:fields_at] + sleb(time) + uleb(len(text)) + text + body[pos:]
    framed = bytes((CHUNK_CHANGE,)) + uleb(len(rebuilt)) + rebuilt
    digest = hashlib.sha256(framed).digest()
    return MAGIC + digest[:4] + framed, digest


def _take(data: bytes, pos: int, length: int, what: str) -> tuple[bytes, int]:
    end = pos + length
    if end > len(data):
        raise ChangeRejected(f"change ends inside its {what}")
    return data[pos:end], end


def read_change(
    chunk: bytes, *, max_inflated: int = 2**26, max_ops: int = _DEFAULT_MAX_OPS
) -> ChangeInfo:
    """Parse and check one change chunk (type 1, or type 2 = compressed).

    Args:
        chunk: exactly one chunk, as a sync message or a store carries it.
        max_inflated: the largest a compressed change may inflate to.
        max_ops: the most operations the change may hold.

    Raises:
        ChangeRejected: the chunk is damaged, not a change, not in the form
            Automerge writes, or inconsistent in itself (see the module).
    """
    try:
        return _read_change(chunk, max_inflated, max_ops)
    except ColumnError as exc:
        raise ChangeRejected(f"change columns do not decode: {exc}") from None


def _read_change(chunk: bytes, max_inflated: int, max_ops: int) -> ChangeInfo:
    if len(chunk) < 10 or chunk[:4] != MAGIC:
        raise ChangeRejected("not an automerge chunk (bad magic bytes)")
    chunk_type = chunk[8]
    length, start = read_uleb(chunk, 9)
    if start + length != len(chunk):
        raise ChangeRejected("chunk length does not match its header")
    if chunk_type == CHUNK_CHANGE:
        body = chunk[start:]
        digest = hashlib.sha256(memoryview(chunk)[8:]).digest()
    elif chunk_type == CHUNK_COMPRESSED:
        try:
            body = inflate_bounded(chunk[start:], max_inflated)
        except ChunkRejected as exc:
            raise ChangeRejected(str(exc)) from None
        digest = hashlib.sha256(bytes((CHUNK_CHANGE,)) + uleb(len(body)) + body).digest()
    else:
        raise ChangeRejected(f"chunk type {chunk_type} is not a change")
    if digest[:4] != chunk[4:8]:
        raise ChangeRejected("bad checksum")
    return _read_body(body, digest, len(chunk), max_ops)


@dataclass(frozen=True, slots=True)
class _Header:
    """The fields of a change before its columns, and where the column data starts."""

    deps: tuple[bytes, ...]
    actor: bytes
    seq: int
    start_op: int
    time: int
    message: bytes
    others: list[bytes]
    specs: list[tuple[int, int]]
    columns_at: int


def _read_header(body: bytes) -> _Header:
    count, pos = read_uleb(body, 0)
    if count * 32 > len(body):
        raise ChangeRejected("change claims more dependencies than it holds")
    deps = tuple(body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))
    pos += 32 * count
    actor_length, pos = read_uleb(body, pos)
    actor, pos = _take(body, pos, actor_length, "actor id")
    seq, pos = read_uleb(body, pos)
    start_op, pos = read_uleb(body, pos)
    time, pos = read_sleb(body, pos)
    message_length, pos = read_uleb(body, pos)
    message, pos = _take(body, pos, message_length, "message")
    count, pos = read_uleb(body, pos)
    if count > len(body):
        raise ChangeRejected("change claims more actors than it holds")
    others: list[bytes] = []
    for _ in range(count):
        other_length, pos = read_uleb(body, pos)
        other, pos = _take(body, pos, other_length, "actor ids")
        others.append(other)
    count, pos = read_uleb(body, pos)
    if count > len(_KNOWN_COLUMNS):
        raise ChangeRejected("change has columns the change format does not have")
    specs: list[tuple[int, int]] = []
    for _ in range(count):
        spec, pos = read_uleb(body, pos)
        column_length, pos = read_uleb(body, pos)
        specs.append((spec, column_length))
    return _Header(deps, actor, seq, start_op, time, message, others, specs, pos)


def _read_body(body: bytes, digest: bytes, size: int, max_ops: int) -> ChangeInfo:
    # -- header -------------------------------------------------------------------
    header = _read_header(body)
    deps, actor, seq, start_op = header.deps, header.actor, header.seq, header.start_op
    time, message, others, pos = header.time, header.message, header.others, header.columns_at
    columns: dict[int, bytes] = {}
    for spec, column_length in header.specs:
        if spec not in _KNOWN_COLUMNS or spec in columns:
            raise ChangeRejected(f"change has an unexpected column (specification {spec})")
        columns[spec], pos = _take(body, pos, column_length, "columns")
    extra = body[pos:]

    if not 1 <= len(actor) <= _MAX_ACTOR_LENGTH:
        raise ChangeRejected("change's actor id is empty or too long")
    if seq < 1 or not 1 <= start_op <= _MAX_COUNTER:
        raise ChangeRejected("change's sequence number or start op is out of range")
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        raise ChangeRejected("change message is not UTF-8") from None

    # -- operations -----------------------------------------------------------------
    actions = decode_rle(columns.get(_ACTION, b""), "u", limit=max_ops)
    num_ops = len(actions)
    if start_op + num_ops - 1 > _MAX_COUNTER:
        raise ChangeRejected("change's operation counters exceed 32 bits")
    ops = _Ops.decode(columns, num_ops, max_ops)
    table = [actor, *others]
    facts = ops.check(table, start_op, actions)

    # -- canonical form: what the core's encoder would write ------------------------
    referenced = {table[index] for index in ops.actor_indexes()} - {actor}
    if others != sorted(referenced):
        raise ChangeRejected("change's actor list is not the sorted list of actors it references")
    if list(deps) != sorted(set(deps)):
        raise ChangeRejected("change's dependencies are not sorted and unique")
    canonical = bytearray(uleb(len(deps)))
    for dep in deps:
        canonical += dep
    canonical += uleb(len(actor)) + actor + uleb(seq) + uleb(start_op) + sleb(time)
    canonical += uleb(len(message)) + message + uleb(len(others))
    for other in others:
        canonical += uleb(len(other)) + other
    encoded = ops.encode(actions)
    canonical += uleb(len(encoded))
    for spec, data in encoded:
        canonical += uleb(spec) + uleb(len(data))
    for _, data in encoded:
        canonical += data
    canonical += extra
    if canonical != body:
        raise ChangeRejected("change is not encoded the way automerge encodes it")
    return ChangeInfo(
        hash=digest,
        deps=deps,
        actor=actor,
        seq=seq,
        start_op=start_op,
        num_ops=num_ops,
        references=frozenset(facts.references),
        objects=facts.objects,
        map_predecessors=tuple(facts.map_predecessors),
        elements=tuple(facts.elements),
        element_predecessors=tuple(facts.element_predecessors),
        made=facts.made,
        map_ops=facts.map_ops,
        inserts=facts.inserts,
        element_ops=facts.element_ops,
        size=size,
        inflated_size=len(body),
    )


@dataclass
class _Facts:
    references: set[OpRef] = field(default_factory=set)
    objects: dict[OpRef, str] = field(default_factory=dict)
    map_predecessors: list[tuple[OpRef | None, bytes, OpRef]] = field(default_factory=list)
    elements: set[tuple[OpRef | None, OpRef]] = field(default_factory=set)
    element_predecessors: list[tuple[OpRef | None, OpRef, OpRef]] = field(default_factory=list)
    made: dict[int, str] = field(default_factory=dict)
    map_ops: dict[int, tuple[OpRef | None, bytes]] = field(default_factory=dict)
    # Counter of an insert of this change -> its object; counter of a put
    # on a list element of this change -> (object, element).
    inserts: dict[int, OpRef | None] = field(default_factory=dict)
    element_ops: dict[int, tuple[OpRef | None, OpRef]] = field(default_factory=dict)


class _Ops:
    """The decoded operation columns of one change, row-aligned."""

    def __init__(self) -> None:
        self.obj_actor: list[int | bytes | None] = []
        self.obj_ctr: list[int | bytes | None] = []
        self.key_actor: list[int | bytes | None] = []
        self.key_ctr: list[int | None] = []
        self.key_str: list[int | bytes | None] = []
        self.insert: list[bool] = []
        self.meta: list[int | bytes | None] = []
        self.raw = b""
        self.pred_num: list[int | bytes | None] = []
        self.pred_actor: list[int | bytes | None] = []
        self.pred_ctr: list[int | None] = []
        self.expand: list[bool] = []
        self.mark_name: list[int | bytes | None] = []

    @classmethod
    def decode(cls, columns: dict[int, bytes], rows: int, max_preds: int) -> _Ops:
        ops = cls()

        def padded(values: list[int | bytes | None], what: str) -> list[int | bytes | None]:
            if len(values) > rows:
                raise ChangeRejected(f"change's {what} column has more rows than operations")
            return values + [None] * (rows - len(values))

        get = columns.get
        ops.obj_actor = padded(decode_rle(get(_OBJ_ACTOR, b""), "u", limit=rows), "object")
        ops.obj_ctr = padded(decode_rle(get(_OBJ_CTR, b""), "u", limit=rows), "object")
        ops.key_actor = padded(decode_rle(get(_KEY_ACTOR, b""), "u", limit=rows), "key")
        key_ctr = decode_delta(get(_KEY_CTR, b""), limit=rows)
        if len(key_ctr) > rows:
            raise ChangeRejected("change's key column has more rows than operations")
        ops.key_ctr = key_ctr + [None] * (rows - len(key_ctr))
        ops.key_str = padded(decode_rle(get(_KEY_STR, b""), "s", limit=rows), "key")
        ops.insert = decode_boolean(get(_INSERT, b""), limit=rows)
        ops.meta = decode_rle(get(_VAL_META, b""), "u", limit=rows)
        ops.raw = get(_VAL_RAW, b"")
        ops.pred_num = decode_rle(get(_PRED_GROUP, b""), "u", limit=rows)
        total = sum(n for n in ops.pred_num if isinstance(n, int))
        if total > max_preds:
            raise ChangeRejected(f"change holds more than {max_preds} predecessors")
        ops.pred_actor = decode_rle(get(_PRED_ACTOR, b""), "u", limit=total)
        ops.pred_ctr = decode_delta(get(_PRED_CTR, b""), limit=total)
        ops.expand = decode_boolean(get(_EXPAND, b""), limit=rows)
        ops.expand += [False] * (rows - len(ops.expand))
        ops.mark_name = padded(decode_rle(get(_MARK_NAME, b""), "s", limit=rows), "mark")
        if len(ops.insert) != rows or len(ops.meta) != rows or len(ops.pred_num) != rows:
            raise ChangeRejected("change's columns do not have one row per operation")
        if len(ops.pred_actor) != total or len(ops.pred_ctr) != total:
            raise ChangeRejected("change's predecessor columns do not match their counts")
        if None in ops.meta or None in ops.pred_num or None in ops.pred_actor:
            raise ChangeRejected("change has a null where a value is required")
        return ops

    def actor_indexes(self) -> set[int]:
        indexes = {a for a in self.obj_actor if isinstance(a, int)}
        indexes.update(a for a in self.key_actor if isinstance(a, int))
        indexes.update(a for a in self.pred_actor if isinstance(a, int))
        return indexes

    def check(self, table: list[bytes], start_op: int, actions: list[int | bytes | None]) -> _Facts:
        """Apply the rules every operation must follow; return what it says of others."""
        actors = len(table)
        author = table[0]
        facts = _Facts()
        own = range(start_op, start_op + len(actions))

        def ref(actor: object, counter: object, op: int, what: str) -> OpRef:
            if not isinstance(actor, int) or not 0 <= actor < actors:
                raise ChangeRejected(f"operation {op}: {what} names an actor the change lacks")
            if not isinstance(counter, int) or not 1 <= counter < op:
                raise ChangeRejected(f"operation {op}: {what} is not an older operation")
            found = (table[actor], counter)
            if actor or counter not in own:
                facts.references.add(found)
            return found

        def internal(found: OpRef) -> bool:
            return found[0] == author and found[1] in own

        raw_pos = 0
        pred_pos = 0
        raw = self.raw
        for row, action in enumerate(actions):
            op = start_op + row
            if not isinstance(action, int) or action > _MARK:
                raise ChangeRejected(f"operation {op}: unknown action {action!r}")
            obj: OpRef | None = None
            if self.obj_actor[row] is not None or self.obj_ctr[row] is not None:
                obj = ref(self.obj_actor[row], self.obj_ctr[row], op, "its object")
            key_str = self.key_str[row]
            key_actor, key_ctr = self.key_actor[row], self.key_ctr[row]
            element: OpRef | None = None
            if key_str is not None:
                assert isinstance(key_str, bytes)
                if key_actor is not None or key_ctr is not None:
                    raise ChangeRejected(f"operation {op}: a key that is both a name and an id")
                if self.insert[row]:
                    raise ChangeRejected(f"operation {op}: an insert needs a list position")
                kind = MAP
                facts.map_ops[op] = (obj, key_str)
            else:
                kind = SEQUENCE
                if not (key_ctr == 0 and key_actor is None):  # not the head of the list
                    element = ref(key_actor, key_ctr, op, "its list element")
                    if not internal(element):
                        facts.elements.add((obj, element))
                    elif facts.inserts.get(element[1], False) != obj:
                        raise ChangeRejected(f"operation {op}: its list element is elsewhere")
                if self.insert[row]:
                    facts.inserts[op] = obj
                elif element is not None:
                    facts.element_ops[op] = (obj, element)
                else:
                    raise ChangeRejected(f"operation {op}: only an insert may name the head")
            if obj is None:
                if kind == SEQUENCE:
                    raise ChangeRejected(f"operation {op}: the root is a map, not a list")
            else:
                if internal(obj):
                    if facts.made.get(obj[1]) != kind:
                        raise ChangeRejected(f"operation {op}: its object is not a {kind}")
                elif facts.objects.setdefault(obj, kind) != kind:
                    raise ChangeRejected(f"operation {op}: an object used as map and list")
            meta = self.meta[row]
            assert isinstance(meta, int)
            value_kind, length = meta & 0x0F, meta >> 4
            value = raw[raw_pos : raw_pos + length]
            if len(value) != length:
                raise ChangeRejected(f"operation {op}: value runs past the value column")
            raw_pos += length
            _check_value(op, value_kind, value)
            mark_name = self.mark_name[row]
            if action == _MARK:
                if mark_name is None and value_kind != _NULL:
                    raise ChangeRejected(f"operation {op}: a mark's end carries a value")
            else:
                if mark_name is not None or self.expand[row]:
                    raise ChangeRejected(f"operation {op}: mark fields on a non-mark operation")
                if action in _VALUELESS and value_kind != _NULL:
                    raise ChangeRejected(f"operation {op}: action {action} carries a value")
                if action == _INCREMENT and value_kind != _LEB:
                    raise ChangeRejected(f"operation {op}: an increment needs a signed integer")
            if action in (_MAKE_MAP, _MAKE_TABLE):
                facts.made[op] = MAP
            elif action in (_MAKE_LIST, _MAKE_TEXT):
                facts.made[op] = SEQUENCE
            count = self.pred_num[row]
            assert isinstance(count, int)
            if action == _DELETE and (count == 0 or self.insert[row]):
                raise ChangeRejected(f"operation {op}: a delete needs a predecessor, no insert")
            if count and self.insert[row]:
                raise ChangeRejected(f"operation {op}: an insert has no predecessors")
            previous: tuple[int, bytes] | None = None
            for i in range(pred_pos, pred_pos + count):
                actor, counter = self.pred_actor[i], self.pred_ctr[i]
                pred = ref(actor, counter, op, "a predecessor")
                current = (pred[1], pred[0])
                if previous is not None and current <= previous:
                    raise ChangeRejected(f"operation {op}: predecessors out of order")
                previous = current
                if kind == MAP:
                    assert isinstance(key_str, bytes)
                    if not internal(pred):
                        facts.map_predecessors.append((obj, key_str, pred))
                    elif facts.map_ops.get(pred[1]) != (obj, key_str):
                        raise ChangeRejected(f"operation {op}: a predecessor on another key")
                elif not internal(pred):
                    assert element is not None
                    facts.element_predecessors.append((obj, element, pred))
                else:
                    at = facts.element_ops.get(pred[1])
                    same_element = pred == element and facts.inserts.get(pred[1], False) == obj
                    if not same_element and at != (obj, element):
                        raise ChangeRejected(f"operation {op}: a predecessor on another element")
            pred_pos += count
        if raw_pos != len(raw):
            raise ChangeRejected("change's value column holds more bytes than its values")
        return facts

    def encode(self, actions: list[int | bytes | None]) -> list[tuple[int, bytes]]:
        """The change's columns as the core's encoder writes them, empty ones left out."""
        obj_actor = encode_rle(self.obj_actor, "u")
        columns = [
            (_OBJ_ACTOR, obj_actor),
            (_OBJ_CTR, encode_rle(self.obj_ctr, "u") if obj_actor else b""),
            (_KEY_ACTOR, encode_rle(self.key_actor, "u")),
            (_KEY_CTR, encode_delta(self.key_ctr)),
            (_KEY_STR, encode_rle(self.key_str, "s")),
            (_INSERT, encode_boolean(self.insert)),
            (_ACTION, encode_rle(actions, "u")),
            (_VAL_META, encode_rle(self.meta, "u")),
            (_VAL_RAW, self.raw),
            (_PRED_GROUP, encode_rle(self.pred_num, "u")),
        ]
        pred_actor = encode_rle(self.pred_actor, "u")
        if pred_actor:
            columns.append((_PRED_ACTOR, pred_actor))
            columns.append((_PRED_CTR, encode_delta(self.pred_ctr)))
        columns.append((_EXPAND, encode_maybe_boolean(self.expand)))
        columns.append((_MARK_NAME, encode_rle(self.mark_name, "s")))
        return [(spec, data) for spec, data in columns if data]


def _check_value(op: int, kind: int, value: bytes) -> None:
    # The value column's encodings: each must be exactly what the core writes.
    if kind in (_NULL, _FALSE, _TRUE):
        if value:
            raise ChangeRejected(f"operation {op}: a null or boolean with bytes")
    elif kind in (_ULEB, _LEB, _COUNTER, _TIMESTAMP):
        try:
            number, end = (read_uleb if kind == _ULEB else read_sleb)(value, 0)
        except ColumnError:
            raise ChangeRejected(f"operation {op}: a number that does not decode") from None
        if end != len(value) or value != (uleb(number) if kind == _ULEB else sleb(number)):
            raise ChangeRejected(f"operation {op}: a number not in its shortest form")
    elif kind == _FLOAT:
        if len(value) != 8:
            raise ChangeRejected(f"operation {op}: a float that is not 8 bytes")
    elif kind == 6:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise ChangeRejected(f"operation {op}: a string that is not UTF-8") from None
