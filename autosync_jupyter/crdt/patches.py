"""Where the values the binding cannot read are, recovered without a panic.

``automerge==1.0.0rc1`` panics (``pyo3_runtime.PanicException``, with a Rust
backtrace on stderr) when it converts a counter, or a value of a type newer
than itself, into Python. Only the conversion panics: the document's patches
(``Document.diff``) describe the same values in their ``repr``, which is Rust's
``Debug`` text::

    Patch { obj: Root, path: [], action: PutMap { key: "hits",
        value: (Scalar(Counter(Counter { start: 115, current: 115 })), Id(4, ...)), ... } }

This module keeps, per document, an index of every such value: which
property of which object holds it, and its value. Readers look a property up
here before they ask the binding, and never ask the binding for an indexed
one. Three measures keep it cheap:

* Most documents never hold a counter. Whether one might is decided from the
  changes' own bytes (the value-type column of each change), new changes
  only, so a counter-free document is never diffed.
* Once a document may hold one, the index is built from ``diff([], heads)``
  and then moved forward with ``diff(old_heads, new_heads)``: the patches are
  replayed (inserts shift list positions, deletes and overwrites drop
  entries, increments add), which is exactly how Automerge's JS front end
  keeps its own view up to date.
* Only patches that mention such a value, or touch an object already in the
  index, are read: the common shapes with regular expressions, anything else
  with a small parser of Rust's ``Debug`` text. Objects are keyed by their op
  id (counter, actor), which never changes, not by their path, which does.

The binding's ``diff([], heads)`` itself grows faster than linearly with the
number of objects in lists (about 0.5 s for 5,000 maps in a list, measured),
so documents with counters *and* many objects pay that once, when first read.

Measured with Python 3.11 and ``automerge`` 1.0.0rc1 (core 0.5.7): in
``Counter { start, current }`` both fields carry the value after all
increments, for snapshots, loaded change logs, synced and merged documents.
We read ``current``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import automerge.core as am

from .chunks import ChunkRejected, inflate_bounded
from .columns import ColumnError, read_sleb
from .columns import read_uleb as read_uleb128

__all__ = [
    "SpecialIndex",
    "Tracker",
    "Unknown",
    "exact_timestamp",
    "may_hold_special_values",
    "obj_key",
]

logger = logging.getLogger("autosync_jupyter.document")

Prop = str | int
#: An object's identity: ``"root"`` or its creating op's (counter, actor).
ObjKey = str | tuple[int, bytes]
_ROOT_KEY = "root"


@dataclass(frozen=True)
class Unknown:
    """A value of a type this version of Automerge does not know.

    Newer peers may write value types an older library cannot interpret; they
    are kept (and synced) as they are, and read back as this: the type's code
    and the value's raw bytes. They cannot be written back.
    """

    type_code: int
    data: bytes


@dataclass(frozen=True)
class _Counter:
    value: int


_Special = _Counter | Unknown | dt.datetime


# -- the changes' bytes: may this document hold a counter at all? -------------------

_MAGIC = b"\x85\x6f\x4a\x83"
_CHUNK_CHANGE = 1
_CHUNK_COMPRESSED_CHANGE = 2
_COLUMN_DEFLATE = 0x08
#: Column 5 (the value), type 6 (value metadata): ``(length << 4) | type``.
_VALUE_META_COLUMN = 0x56
_TYPE_COUNTER = 8
# The changes read here are the document's own; still, never inflate without a bound.
_MAX_INFLATED = 1 << 30
_FIRST_UNKNOWN_TYPE = 10


def _value_types(column: bytes) -> set[int]:
    """The value types in a run-length encoded value-metadata column."""
    types: set[int] = set()
    pos = 0
    while pos < len(column):
        count, pos = read_sleb(column, pos)
        if count > 0:  # a run: one value, repeated
            meta, pos = read_uleb128(column, pos)
            types.add(meta & 0x0F)
        elif count < 0:  # -count literal values
            for _ in range(-count):
                meta, pos = read_uleb128(column, pos)
                types.add(meta & 0x0F)
        else:  # a run of nulls
            _, pos = read_uleb128(column, pos)
    return types


def _change_value_types(raw: bytes) -> set[int]:
    if raw[:4] != _MAGIC:
        raise ValueError("not an Automerge chunk")
    kind = raw[8]
    length, pos = read_uleb128(raw, 9)
    body = raw[pos : pos + length]
    if kind == _CHUNK_COMPRESSED_CHANGE:
        body = inflate_bounded(body, _MAX_INFLATED)
    elif kind != _CHUNK_CHANGE:
        raise ValueError(f"chunk type {kind} is not a change")
    pos = 0
    deps, pos = read_uleb128(body, pos)
    pos += 32 * deps
    size, pos = read_uleb128(body, pos)  # actor
    pos += size
    _, pos = read_uleb128(body, pos)  # sequence number
    _, pos = read_uleb128(body, pos)  # start op
    _, pos = read_sleb(body, pos)  # time
    size, pos = read_uleb128(body, pos)  # message
    pos += size
    actors, pos = read_uleb128(body, pos)
    for _ in range(actors):
        size, pos = read_uleb128(body, pos)
        pos += size
    ncolumns, pos = read_uleb128(body, pos)
    columns = []
    for _ in range(ncolumns):
        spec, pos = read_uleb128(body, pos)
        size, pos = read_uleb128(body, pos)
        columns.append((spec, size))
    for spec, size in columns:
        data = body[pos : pos + size]
        pos += size
        if spec & ~_COLUMN_DEFLATE == _VALUE_META_COLUMN:
            if spec & _COLUMN_DEFLATE:
                data = inflate_bounded(data, _MAX_INFLATED)
            return _value_types(data)
    if pos > len(body):
        raise ValueError("truncated change")
    return set()


def may_hold_special_values(changes: Iterable[bytes]) -> bool:
    """Whether any of these (uncompressed) changes writes a counter or an unknown type.

    Errs on the side of yes: a change this parser does not understand counts
    as one that might.
    """
    for raw in changes:
        try:
            types = _change_value_types(raw)
        except (IndexError, ValueError, ColumnError, ChunkRejected):
            return True
        if _TYPE_COUNTER in types or any(t >= _FIRST_UNKNOWN_TYPE for t in types):
            return True
    return False


# -- Rust Debug text ------------------------------------------------------------------


@dataclass(frozen=True)
class _Struct:
    """``Name { field: value, ... }``"""

    name: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class _Call:
    """``Name(value, ...)``, or a bare ``Name`` (no arguments)."""

    name: str
    args: list[Any]


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>-?inf\b|NaN\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[{}()\[\],:])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]+\}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def _unescape(literal: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(one, literal[1:-1])


class _Parser:
    """A recursive-descent reader of the ``Debug`` text of the binding's patches."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        end = len(text.rstrip())
        while pos < end:
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise ValueError(f"unexpected text at {pos}: {text[pos : pos + 20]!r}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def parse(self) -> Any:
        value = self.value()
        if self.pos != len(self.tokens):
            raise ValueError("trailing text after a value")
        return value

    def next(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def expect(self, punct: str) -> None:
        kind, text = self.next()
        if kind != "punct" or text != punct:
            raise ValueError(f"expected {punct!r}, found {text!r}")

    def sequence(self, close: str) -> list[Any]:
        items: list[Any] = []
        while self.peek() != close:
            items.append(self.value())
            if self.peek() == ",":
                self.pos += 1
        self.pos += 1
        return items

    def value(self) -> Any:
        kind, text = self.next()
        if kind == "str":
            return _unescape(text)
        if kind == "num":
            if text in ("inf", "-inf", "NaN") or any(c in text for c in ".eE"):
                return float(text)
            return int(text)
        if kind == "punct":
            if text == "[":
                return self.sequence("]")
            if text == "(":
                return tuple(self.sequence(")"))
            raise ValueError(f"unexpected {text!r}")
        if text in ("true", "false"):
            return text == "true"
        if self.peek() == "(":
            self.pos += 1
            return _Call(text, self.sequence(")"))
        if self.peek() == "{":
            self.pos += 1
            fields: dict[str, Any] = {}
            while self.peek() != "}":
                field_kind, name = self.next()
                if field_kind != "name":
                    raise ValueError(f"expected a field name, found {name!r}")
                self.expect(":")
                fields[name] = self.value()
                if self.peek() == ",":
                    self.pos += 1
            self.pos += 1
            return _Struct(text, fields)
        return _Call(text, [])


def _parse(text: str) -> Any:
    return _Parser(text).parse()


# -- object ids -----------------------------------------------------------------------


def obj_key(obj_id: bytes) -> ObjKey:
    """The identity of an object from the binding's object id bytes.

    The bytes are ``tag, len(actor), actor, actor index, counter`` (LEB128);
    the actor index is private to one document (it differs between forks), so
    it is left out.
    """
    if obj_id == am.ROOT:
        return _ROOT_KEY
    try:
        size, pos = read_uleb128(obj_id, 1)
        actor = bytes(obj_id[pos : pos + size])
        _, pos = read_uleb128(obj_id, pos + size)
        counter, _ = read_uleb128(obj_id, pos)
    except (IndexError, ValueError):
        # Not an id this module understands: a key no patch can match.
        return "?" + bytes(obj_id).hex()
    return (counter, actor)


def _debug_obj_key(node: Any) -> ObjKey:
    # Root, or Id(counter, ActorID("hex"), actor index)
    if isinstance(node, _Call) and node.name == "Id":
        counter, actor, _index = node.args
        return (int(counter), bytes.fromhex(actor.args[0]))
    return _ROOT_KEY


# The common patches, read with regular expressions instead of the parser
# (ten to twenty times faster). String literals are matched whole ("...",
# escapes included), so text inside keys and strings cannot pass for
# structure; whatever does not match exactly goes to the parser.
_STR = r'"(?:[^"\\]|\\.)*"'
#: A value: ``Object(Map)``, or a scalar nesting at most two more parentheses
#: (``Scalar(Counter(Counter { start: 1, current: 1 }))``, ``Scalar(Str("…"))``).
_VALUE = (
    r'(?:Object\(\w+\)|Scalar\((?:[^"()]|'
    + _STR
    + r'|\((?:[^"()]|'
    + _STR
    + r'|\([^"()]*\))*\))*\))'
)
_ID = r'Id\(\d+, ActorID\("[0-9a-fA-F]*"\), \d+\)'
_HEAD = re.compile(
    r'Patch \{ obj: (?:Root|Id\((\d+), ActorID\("([0-9a-fA-F]*)"\), \d+\)), '
    r"path: \[(?:[^\"\]]|" + _STR + r")*\], action: ",
    re.DOTALL,
)
_PUT_MAP = re.compile(
    r"PutMap \{ key: ("
    + _STR
    + r"), value: \(("
    + _VALUE
    + r"), "
    + _ID
    + r"\), conflict: (?:true|false) \} \}",
    re.DOTALL,
)
_PUT_SEQ = re.compile(
    r"PutSeq \{ index: (\d+), value: \(("
    + _VALUE
    + r"), "
    + _ID
    + r"\), conflict: (?:true|false) \} \}",
    re.DOTALL,
)
_INSERT = re.compile(
    r"Insert \{ index: (\d+), values: SequenceTreeInternal \{ root_node: (?:None|Some\((.*)\)) \}"
    r", marks: None \} \}",
    re.DOTALL,
)
_TREE_TOKEN = re.compile(
    r"(SequenceTreeNode \{ elements: \[)"  # 1: a node starts (its elements first)
    r"|(\], children: \[)"  # 2: then its child nodes
    r"|(\], length: \d+ \})"  # 3: the node ends
    r"|\((" + _VALUE + r"), " + _ID + r", (?:true|false)\)"  # 4: one element
    r"|(, )",  # 5: between elements or nodes
    re.DOTALL,
)
_DELETE_MAP = re.compile(r"DeleteMap \{ key: (" + _STR + r") \} \}", re.DOTALL)
_DELETE_SEQ = re.compile(r"DeleteSeq \{ index: (\d+), length: (\d+) \} \}")
_INCREMENT = re.compile(
    r"Increment \{ prop: (?:Map\((" + _STR + r")\)|Seq\((\d+)\)), value: (-?\d+) \} \}",
    re.DOTALL,
)
_CONFLICT = re.compile(r"Conflict \{ prop: (?:Map\(" + _STR + r"\)|Seq\(\d+\)) \} \}", re.DOTALL)
_COUNTER_VALUE = re.compile(r"Scalar\(Counter\(Counter \{ start: -?\d+, current: (-?\d+) \}\)\)")
_TIMESTAMP_VALUE = re.compile(r"Scalar\(Timestamp\((-?\d+)\)\)")


def _head(text: str) -> tuple[ObjKey, int] | None:
    """The object a patch is about, and where its action starts."""
    match = _HEAD.match(text)
    if match is None:
        return None
    if match.group(1) is None:
        return _ROOT_KEY, match.end()
    return (int(match.group(1)), bytes.fromhex(match.group(2))), match.end()


# -- the index ------------------------------------------------------------------------

_COUNTER_MARKERS = ("Counter(Counter {", "Unknown {")
_TIMESTAMP_MARKERS = ("Timestamp(",)


def _epoch_millis(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=millis)


def _special_text(value: str, *, timestamps: bool) -> _Special | None:
    """The indexed value of a ``Scalar(...)`` or ``Object(...)`` text, if it is one."""
    if timestamps:
        match = _TIMESTAMP_VALUE.fullmatch(value)
        return _epoch_millis(int(match.group(1))) if match else None
    match = _COUNTER_VALUE.fullmatch(value)
    if match:
        return _Counter(int(match.group(1)))
    if value.startswith("Scalar(Unknown {"):
        return _special((_parse(value),), timestamps=False)
    return None


def _tree_text(text: str, *, timestamps: bool) -> list[_Special | None] | None:
    """The indexed values of a ``SequenceTreeNode`` text, in list order.

    ``None`` when the text is not exactly the expected shape (the caller then
    uses the parser).
    """
    # Each frame: (its elements, its children's flattened values).
    stack: list[tuple[list[_Special | None], list[list[_Special | None]]]] = []
    result: list[_Special | None] | None = None
    pos = 0
    for match in _TREE_TOKEN.finditer(text):
        if match.start() != pos or result is not None:
            return None
        pos = match.end()
        kind = match.lastindex
        if kind == 1:
            stack.append(([], []))
        elif kind == 3:
            if not stack:
                return None
            elements, children = stack.pop()
            flat: list[_Special | None] = []
            if children:  # a B-tree node: child 0, element 0, child 1, ...
                for position, child in enumerate(children):
                    flat.extend(child)
                    if position < len(elements):
                        flat.append(elements[position])
            else:
                flat = elements
            if stack:
                stack[-1][1].append(flat)
            else:
                result = flat
        elif kind == 4:
            if not stack:
                return None
            stack[-1][0].append(_special_text(match.group(4), timestamps=timestamps))
    if pos != len(text) or stack:
        return None
    return result


def _special(value: Any, *, timestamps: bool) -> _Special | None:
    """The indexed value of a patch's ``(Scalar(...), Id(...))`` pair, if it is one."""
    if not isinstance(value, tuple) or not value:
        return None
    head = value[0]
    if not isinstance(head, _Call) or head.name != "Scalar" or not head.args:
        return None
    scalar = head.args[0]
    if timestamps:
        if isinstance(scalar, _Call) and scalar.name == "Timestamp":
            return _epoch_millis(int(scalar.args[0]))
        return None
    if isinstance(scalar, _Call) and scalar.name == "Counter":
        counter = scalar.args[0]
        if isinstance(counter, _Struct):
            return _Counter(int(counter.fields["current"]))
    if isinstance(scalar, _Struct) and scalar.name == "Unknown":
        return Unknown(int(scalar.fields["type_code"]), bytes(scalar.fields["bytes"]))
    return None


def _tree_elements(node: Any, out: list[Any]) -> None:
    """Append the elements of a ``SequenceTreeNode`` to ``out``, in list order."""
    elements = node.fields["elements"]
    children = node.fields["children"]
    if not children:
        out.extend(elements)
        return
    # A B-tree node: child 0, element 0, child 1, element 1, ..., last child.
    for position, child in enumerate(children):
        _tree_elements(child, out)
        if position < len(elements):
            out.append(elements[position])


def _insert_values(values: Any) -> list[Any]:
    # SequenceTreeInternal { root_node: Some(SequenceTreeNode { ... }) | None }
    if isinstance(values, list):
        return values
    root = values.fields.get("root_node") if isinstance(values, _Struct) else None
    out: list[Any] = []
    if isinstance(root, _Call) and root.name == "Some" and root.args:
        _tree_elements(root.args[0], out)
    return out


class SpecialIndex:
    """Which properties hold a value the binding cannot convert, and that value.

    Maps are indexed by key, lists by position (kept right as elements are
    inserted and deleted before them).
    """

    def __init__(self, *, timestamps: bool = False) -> None:
        self.maps: dict[ObjKey, dict[str, _Special]] = {}
        self.lists: dict[ObjKey, dict[int, _Special]] = {}
        self._timestamps = timestamps
        self._markers = _TIMESTAMP_MARKERS if timestamps else _COUNTER_MARKERS

    def __bool__(self) -> bool:
        return bool(self.maps) or bool(self.lists)

    def copy(self) -> SpecialIndex:
        """An independent copy (a transaction edits its own)."""
        other = SpecialIndex(timestamps=self._timestamps)
        other.maps = {key: dict(entries) for key, entries in self.maps.items()}
        other.lists = {key: dict(entries) for key, entries in self.lists.items()}
        return other

    def lookup(self, obj: ObjKey, prop: Prop) -> _Special | None:
        """The indexed value at ``prop`` of ``obj``, or ``None``."""
        entries: dict[Any, _Special] | None = (
            self.maps.get(obj) if isinstance(prop, str) else self.lists.get(obj)
        )
        return entries.get(prop) if entries else None

    def holds_any(self, obj: ObjKey) -> bool:
        """Whether any property of ``obj`` is indexed."""
        return bool(self.maps.get(obj)) or bool(self.lists.get(obj))

    # Edits, named after the document operations they mirror.

    def put(self, obj: ObjKey, prop: Prop, value: _Special | None) -> None:
        """``prop`` of ``obj`` now holds ``value`` (``None``: an ordinary value)."""
        if isinstance(prop, str):
            self._set(self.maps, obj, prop, value)
        else:
            self._set(self.lists, obj, prop, value)

    @staticmethod
    def _set(table: dict[ObjKey, dict[Any, _Special]], obj: ObjKey, prop: Any, value: Any) -> None:
        if value is None:
            entries = table.get(obj)
            if entries is not None:
                entries.pop(prop, None)
                if not entries:
                    del table[obj]
        else:
            table.setdefault(obj, {})[prop] = value

    def insert(self, obj: ObjKey, index: int, values: list[_Special | None]) -> None:
        """``len(values)`` elements were inserted into list ``obj`` at ``index``."""
        entries = self.lists.get(obj)
        shift = len(values)
        if entries:
            self.lists[obj] = {(i + shift if i >= index else i): v for i, v in entries.items()}
        for offset, value in enumerate(values):
            if value is not None:
                self.lists.setdefault(obj, {})[index + offset] = value

    def delete(self, obj: ObjKey, prop: Prop, length: int = 1) -> None:
        """``prop`` of ``obj`` was deleted (``length`` elements, for a list)."""
        if isinstance(prop, str):
            self._set(self.maps, obj, prop, None)
            return
        entries = self.lists.get(obj)
        if not entries:
            return
        moved = {
            (i - length if i >= prop + length else i): v
            for i, v in entries.items()
            if not prop <= i < prop + length
        }
        if moved:
            self.lists[obj] = moved
        else:
            del self.lists[obj]

    def increment(self, obj: ObjKey, prop: Prop, by: int) -> None:
        """The counter at ``prop`` of ``obj`` was incremented by ``by``."""
        current = self.lookup(obj, prop)
        if isinstance(current, _Counter):
            self.put(obj, prop, _Counter(current.value + by))

    # Patches.

    def apply(self, patch: str, *, only: ObjKey | None = None) -> None:
        """Replay one patch (its ``repr``); ``only`` restricts it to one object."""
        head = _head(patch)
        if head is not None:
            obj, action_at = head
            if only is not None and obj != only:
                return
            if not self.holds_any(obj) and not any(m in patch for m in self._markers):
                return  # creates no indexed value and moves none
            if self._apply_common(obj, patch[action_at:]):
                return
        self._apply_parsed(patch, only)

    def _apply_common(self, obj: ObjKey, action: str) -> bool:
        """Replay the common actions from their text; ``False`` if this is another."""
        timestamps = self._timestamps
        if match := _PUT_MAP.fullmatch(action):
            value = _special_text(match.group(2), timestamps=timestamps)
            self.put(obj, _unescape(match.group(1)), value)
        elif match := _PUT_SEQ.fullmatch(action):
            value = _special_text(match.group(2), timestamps=timestamps)
            self.put(obj, int(match.group(1)), value)
        elif match := _INSERT.fullmatch(action):
            if match.group(2) is None:
                return True  # nothing inserted
            values = _tree_text(match.group(2), timestamps=timestamps)
            if values is None:
                return False
            self.insert(obj, int(match.group(1)), values)
        elif match := _DELETE_MAP.fullmatch(action):
            self.delete(obj, _unescape(match.group(1)))
        elif match := _DELETE_SEQ.fullmatch(action):
            self.delete(obj, int(match.group(1)), int(match.group(2)))
        elif match := _INCREMENT.fullmatch(action):
            key, index, by = match.groups()
            self.increment(obj, _unescape(key) if key is not None else int(index), int(by))
        elif not _CONFLICT.fullmatch(action):
            return False
        return True

    def _apply_parsed(self, patch: str, only: ObjKey | None) -> None:
        parsed = _parse(patch)
        if not isinstance(parsed, _Struct) or parsed.name != "Patch":
            raise ValueError("not a patch")
        key = _debug_obj_key(parsed.fields["obj"])
        if only is not None and key != only:
            return
        action = parsed.fields["action"]
        if not isinstance(action, _Struct):
            return
        name, fields = action.name, action.fields
        timestamps = self._timestamps
        if name == "PutMap":
            self.put(key, fields["key"], _special(fields["value"], timestamps=timestamps))
        elif name == "PutSeq":
            self.put(key, int(fields["index"]), _special(fields["value"], timestamps=timestamps))
        elif name == "Insert":
            elements = _insert_values(fields["values"])
            self.insert(
                key,
                int(fields["index"]),
                [_special(element, timestamps=timestamps) for element in elements],
            )
        elif name == "DeleteMap":
            self.delete(key, fields["key"])
        elif name == "DeleteSeq":
            self.delete(key, int(fields["index"]), int(fields["length"]))
        elif name == "Increment":
            prop = fields["prop"]
            if isinstance(prop, _Call) and prop.args:
                self.increment(key, prop.args[0], int(fields["value"]))
        # SpliceText (text has no counters), Conflict and Mark change no indexed value.


class Tracker:
    """The :class:`SpecialIndex` of one binding document, kept current per heads."""

    def __init__(self, doc: am.Document) -> None:
        self._doc = doc
        self._scanned: list[bytes] | None = None  # heads whose changes were scanned
        self._maybe = False  # some change may write a counter or unknown value
        self._index = SpecialIndex()
        self._indexed: list[bytes] | None = None  # heads the index describes

    def current(self) -> SpecialIndex:
        """The index at the document's current heads.

        Must not be called while a transaction is open on the document (the
        binding cannot list changes or diff then); use the last result.
        """
        heads = self._doc.get_heads()
        if heads == self._scanned:
            return self._index
        if not self._maybe:
            changes = self._doc.get_changes(self._scanned or [])
            self._maybe = may_hold_special_values(change.raw_bytes for change in changes)
        if self._maybe:
            if self._indexed is None:
                self._index = SpecialIndex()
            for patch in self._doc.diff(self._indexed or [], heads):
                text = repr(patch)
                try:
                    self._index.apply(text)
                except Exception:  # a patch this parser does not understand
                    # Keep going: every other value stays readable, and a read
                    # of a value this missed is still caught (UnreadableValue).
                    logger.warning("cannot interpret a patch: %.200s", text, exc_info=True)
            self._indexed = heads
        self._scanned = heads
        return self._index


def exact_timestamp(doc: am.Document, obj: bytes, prop: Prop) -> dt.datetime | None:
    """The timestamp at ``prop`` of ``obj``, exactly, from the patches.

    The binding returns timestamps as naive *local* times; in the hour a
    daylight-saving change repeats, one local time stands for two instants.
    This resolves such a reading. ``None`` if the patches hold no timestamp
    there.
    """
    key = obj_key(obj)
    index = SpecialIndex(timestamps=True)
    for patch in doc.diff([], doc.get_heads()):
        index.apply(repr(patch), only=key)
    found = index.lookup(key, prop)
    return found if isinstance(found, dt.datetime) else None
