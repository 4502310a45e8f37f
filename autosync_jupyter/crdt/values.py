"""Plain Python values in and out of Automerge documents (``automerge.core``).

The low-level converter under :class:`~autosync_jupyter.Document`,
for code that holds a binding document directly (the hub and the server).

Writing follows what JavaScript peers expect: ``dict`` becomes a map,
``list``/``tuple`` a list, ``str`` collaborative text (what
``@automerge/automerge`` makes of a JS string), ``bool`` a boolean (never the
integer 1), ``int`` a 64-bit integer, ``float`` a float64, ``None`` null,
``bytes`` a byte array and ``datetime`` a timestamp (whole milliseconds, the
rest dropped; a naive ``datetime`` is taken as UTC).

Reading never lets a panic of the binding escape: counters (which the binding
cannot convert) are read from the document's patches instead (see
:mod:`.patches`), timestamps come back as aware UTC ``datetime`` (the binding
returns naive local time) and byte arrays as ``bytes`` (not lists of ints).

>>> doc = new_document({"title": "hi", "done": False, "tags": ["a"]})
>>> to_py(doc) == {"title": "hi", "done": False, "tags": ["a"]}
True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import automerge.core as am

from ..errors import CounterNotSupported, UnreadableValue
from .binding import bytes_from_binding, insert_text, is_panic, obj_key, utc_from_binding
from .patches import SpecialIndex, Tracker, Unknown, exact_timestamp
from .patches import _Counter as _IndexedCounter

__all__ = [
    "Counter",
    "ObjectRef",
    "Reader",
    "Unknown",
    "check_key",
    "check_value",
    "ensure_first_change",
    "new_document",
    "put_value",
    "to_py",
    "write_root",
]

_MIN_INT64 = -(2**63)
_MAX_INT64 = 2**63 - 1
_UTC = dt.timezone.utc

Prop = str | int
#: Where reads come from: a document, or the transaction open on it.
Source = am.Document | am.Transaction

COUNTER_CREATION_MESSAGE = (
    "cannot create a counter from Python: the automerge binding (1.0.0rc1) corrupts the "
    "document when it writes one. Counters made by JavaScript peers can be read and "
    "incremented (d.increment(key, n)); to count from Python, store an int."
)


class Counter(int):
    """The value of an Automerge counter, as read.

    An ``int`` (arithmetic, comparisons and JSON work as usual) that remembers
    it came from a counter. Increment the counter itself inside
    ``doc.change()``; assigning a ``Counter`` elsewhere would create a new
    counter, which Python cannot (:class:`~autosync_jupyter.errors.CounterNotSupported`).

    >>> Counter(3) + 1
    4
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Counter({int(self)})"


@dataclass(frozen=True)
class ObjectRef:
    """A map, list or text object of a document: its type and its binding id."""

    kind: am.ObjType
    id: bytes


# -- writing --------------------------------------------------------------------------


def check_int(value: int) -> int:
    """Return ``value`` if it fits Automerge's signed 64-bit integers, else raise."""
    if not _MIN_INT64 <= value <= _MAX_INT64:
        raise ValueError(f"integer {value} does not fit in 64 bits")
    return value


def _scalar(value: Any) -> tuple[am.ScalarType, Any]:
    if value is None:
        return am.ScalarType.Null, None
    if isinstance(value, bool):
        return am.ScalarType.Boolean, value
    if isinstance(value, Counter):
        raise CounterNotSupported(COUNTER_CREATION_MESSAGE)
    if isinstance(value, int):
        return am.ScalarType.Int, check_int(value)
    if isinstance(value, float):
        return am.ScalarType.F64, value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return am.ScalarType.Bytes, bytes(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        # Timestamps are whole milliseconds; the binding would round the
        # rest (possibly into the next second), so drop it as JS's Date does.
        return am.ScalarType.Timestamp, value.replace(microsecond=value.microsecond // 1000 * 1000)
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a document")


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(
        value, (str, bytes, bytearray, memoryview)
    )


def check_key(key: Any) -> str:
    """Return ``key`` if it can be a map key (a non-empty ``str``), else raise."""
    if not isinstance(key, str):
        raise TypeError(f"map keys must be strings, not {type(key).__name__}")
    if not key:
        raise ValueError("map keys must not be empty (Automerge does not allow it)")
    return key


def check_value(value: Any) -> None:
    """Raise the error :func:`put_value` would raise for ``value``, without writing.

    Lets a caller refuse a bad value before any part of it is written.
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_key(key)
            check_value(item)
    elif isinstance(value, str):
        return
    elif _is_list(value):
        for item in value:
            check_value(item)
    else:
        _scalar(value)


def put_value(
    tx: am.Transaction, obj: bytes, prop: Prop, value: Any, *, insert: bool = False
) -> None:
    """Write ``value`` at ``prop`` of ``obj`` (a map key, or a list index).

    With ``insert=True`` the value is inserted before list index ``prop``
    instead of replacing the element there. The caller checks that ``prop``
    exists (the binding panics on a bad list index).

    Raises:
        TypeError: a value (or a map key) of a type a document cannot hold.
        ValueError: an integer outside the signed 64-bit range, an empty key.
        CounterNotSupported: ``value`` is a :class:`Counter`.
    """
    if isinstance(value, Mapping):
        kind = am.ObjType.Map
    elif isinstance(value, str):
        kind = am.ObjType.Text
    elif _is_list(value):
        kind = am.ObjType.List
    else:
        scalar_type, scalar = _scalar(value)
        if insert:
            assert isinstance(prop, int), "insert needs a list index"
            tx.insert(obj, prop, scalar_type, scalar)
        else:
            tx.put(obj, prop, scalar_type, scalar)
        return
    if kind == am.ObjType.Map:
        for key in value:
            check_key(key)
    if insert:
        assert isinstance(prop, int), "insert needs a list index"
        child = tx.insert_object(obj, prop, kind)
    else:
        child = tx.put_object(obj, prop, kind)
    if kind == am.ObjType.Map:
        for key, item in value.items():
            put_value(tx, child, key, item)
    elif kind == am.ObjType.Text:
        insert_text(tx, child, 0, value)
    else:
        for index, item in enumerate(value):
            put_value(tx, child, index, item, insert=True)


def write_root(tx: am.Transaction, initial: Mapping[str, Any]) -> None:
    """Write every key of ``initial`` into the root map."""
    if not isinstance(initial, Mapping):
        raise TypeError(f"a document's root must be a mapping, not {type(initial).__name__}")
    for key, value in initial.items():
        put_value(tx, am.ROOT, check_key(key), value)


def new_document(initial: Mapping[str, Any] | None = None) -> am.Document:
    """Make a document holding ``initial``, with at least one change.

    A document without changes has no heads, and on the wire that cannot be
    told apart from "I do not have it" (protocol §4.4), so an empty
    ``initial`` still gets an (empty) first change.
    """
    document = am.Document()
    if initial:
        with document.transaction() as tx:
            write_root(tx, initial)
    ensure_first_change(document)
    return document


def ensure_first_change(document: am.Document) -> bool:
    """Give a document without changes an empty one; tell whether it needed it.

    A document without changes has no heads, which on the wire means "I do
    not have it" (protocol §4.4).
    """
    if document.get_heads():
        return False
    with document.transaction() as tx:
        # An empty transaction commits no change; this pair leaves the root
        # empty but makes one.
        tx.put(am.ROOT, "_", am.ScalarType.Null, None)
        tx.delete(am.ROOT, "_")
    return True


# -- reading --------------------------------------------------------------------------


class Reader:
    """Reads one binding document without ever triggering the binding's panic.

    Args:
        source: the document, or the transaction open on it (to read the
            transaction's own writes).
        index: where the document's counters and unknown values are, for
            the state being read (see :class:`~autosync_jupyter.crdt.patches.Tracker`).
        heads: read the document as of these heads instead of now.
        document: the document again, when it may be diffed (no transaction
            is open): used to resolve a timestamp in a repeated local hour.
    """

    def __init__(
        self,
        source: Source,
        index: SpecialIndex,
        *,
        heads: list[bytes] | None = None,
        document: am.Document | None = None,
    ) -> None:
        self.source = source
        self.index = index
        self.heads = heads
        self.document = document

    @classmethod
    def of(cls, doc: am.Document) -> Reader:
        """A reader of ``doc`` as it is now (it must have no open transaction)."""
        return cls(doc, Tracker(doc).current(), document=doc)

    # -- single values

    def get(self, obj: bytes, prop: Prop) -> Any:
        """The value at ``prop`` of ``obj``.

        Objects come back as :class:`ObjectRef`, counters as :class:`Counter`,
        everything else as plain Python.

        Raises:
            KeyError: no such key (``prop`` a ``str``).
            IndexError: no such index (``prop`` an ``int``; negative indices
                are the caller's to resolve).
        """
        if self.index:
            special = self.index.lookup(obj_key(obj), prop)
            if special is not None:
                return _from_index(special)
        if isinstance(prop, int) and not 0 <= prop < self.length(obj):
            # The binding panics on a negative index; check both ends here.
            raise IndexError(f"list index {prop} out of range")
        item = self._binding_get(obj, prop)
        if item is None:
            raise KeyError(prop) if isinstance(prop, str) else IndexError(prop)
        value, item_id = item
        return self._convert(obj, prop, value, item_id)

    def _binding_get(self, obj: bytes, prop: Prop) -> Any:
        try:
            return self.source.get(obj, prop, self.heads)
        except BaseException as exc:
            # Only reached if the index missed a counter: turn the binding's
            # panic (a BaseException) into an ordinary, catchable error.
            if not is_panic(exc):
                raise
            raise UnreadableValue(f"the automerge binding cannot read {prop!r}") from None

    def _convert(self, obj: bytes, prop: Prop, value: Any, item_id: bytes) -> Any:
        # The binding gives ObjType for objects, (ScalarType, value) for scalars.
        if isinstance(value, am.ObjType):
            return ObjectRef(value, item_id)
        kind, payload = value
        if kind == am.ScalarType.Bytes:
            return bytes_from_binding(payload)
        if kind == am.ScalarType.Timestamp:
            return self._timestamp(obj, prop, payload)
        return payload

    def _timestamp(self, obj: bytes, prop: Prop, value: dt.datetime) -> dt.datetime:
        instant, ambiguous = utc_from_binding(value)
        if not ambiguous or self.document is None:
            return instant
        # A local time in a repeated hour (daylight saving ends): only the
        # patches say which of its two instants it is.
        return exact_timestamp(self.document, obj, prop) or instant

    def has(self, obj: bytes, key: str) -> bool:
        """Whether map ``obj`` has ``key``."""
        if self.index and self.index.lookup(obj_key(obj), key) is not None:
            return True
        return self._binding_get(obj, key) is not None

    def keys(self, obj: bytes) -> list[str]:
        """The keys of map ``obj``, in the document's (sorted) order."""
        return list(self.source.keys(obj, self.heads))

    def length(self, obj: bytes) -> int:
        """The number of elements of list or text ``obj``, or keys of map ``obj``."""
        return self.source.length(obj, self.heads)

    def text(self, obj: bytes) -> str:
        """The content of text ``obj``."""
        return self.source.text(obj, self.heads)

    def object_type(self, obj: bytes) -> am.ObjType:
        """Whether ``obj`` is a map, a list or a text."""
        return self.source.object_type(obj)

    # -- whole trees

    def to_py(self, obj: bytes = am.ROOT, kind: am.ObjType = am.ObjType.Map) -> Any:
        """``obj`` and everything under it as plain Python (counters as ``int``)."""
        if kind == am.ObjType.Text:
            return self.text(obj)
        if kind == am.ObjType.Map:
            keys = self.keys(obj)
            items = self._items(obj, keys)
            return {key: self._plain(item) for key, item in zip(keys, items, strict=True)}
        return [self._plain(item) for item in self._items(obj, None)]

    def _items(self, obj: bytes, keys: list[str] | None) -> list[Any]:
        props: list[Prop] = list(keys) if keys is not None else list(range(self.length(obj)))
        if self.index and self.index.holds_any(obj_key(obj)):
            return [self.get(obj, prop) for prop in props]
        # No counter here: one call for all values (map values come in key order).
        try:
            values = self.source.values(obj, self.heads)
        except BaseException as exc:
            if not is_panic(exc):
                raise
            raise UnreadableValue("the automerge binding cannot read a value here") from None
        return [
            self._convert(obj, prop, value, item_id)
            for prop, (value, item_id) in zip(props, values, strict=True)
        ]

    def _plain(self, item: Any) -> Any:
        if isinstance(item, ObjectRef):
            return self.to_py(item.id, item.kind)
        if isinstance(item, Counter):
            return int(item)
        return item


def _from_index(special: Any) -> Any:
    if isinstance(special, _IndexedCounter):
        return Counter(special.value)
    return special


def to_py(doc: am.Document) -> dict[str, Any]:
    """Return a whole document as plain Python (dicts, lists, str, numbers…).

    Counters come back as ``int``, timestamps as aware UTC ``datetime``, byte
    arrays as ``bytes``.
    """
    result = Reader.of(doc).to_py()
    assert isinstance(result, dict)
    return result
