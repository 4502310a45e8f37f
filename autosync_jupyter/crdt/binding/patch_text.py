"""Patches read from their ``repr``: the only way to see counters without a panic.

Works around: ``automerge`` 1.0.0rc1 panics (``pyo3_runtime.PanicException``,
with a Rust backtrace on stderr) when it converts a counter, or a value of a
type newer than itself, into Python, and it returns patches
(``Document.diff``) as opaque objects. Only the conversion panics: a patch's
``repr`` is the core's ``Debug`` text and describes the same values::

    Patch { obj: Root, path: [], action: PutMap { key: "hits",
        value: (Scalar(Counter(Counter { start: 115, current: 115 })), Id(4, ...)), ... } }

This module turns that text into :data:`PatchEdit` values, which say which
property of which object changed and how, and carry only the scalars the
binding cannot convert (or converts lossily: timestamps, see
:func:`.conversions.utc_from_binding`). Delete it when the binding converts
counters and unknown values, and returns timestamps as instants.

Two readers: :func:`read_action` reads the common shapes with regular
expressions (ten to twenty times faster than the parser); whatever does not
match exactly goes to :func:`read_patch`, which uses the full ``Debug``
parser. String literals are matched whole (escapes included), so text inside
keys and strings cannot pass for structure.

Measured with Python 3.11 and ``automerge`` 1.0.0rc1 (core 0.5.7): in
``Counter { start, current }`` both fields carry the value after all
increments, for snapshots, loaded change logs, synced and merged documents.
We read ``current``. tests/crdt/test_binding.py pins every shape read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .debug_text import DebugCall, DebugStruct, parse_debug, unescape
from .ids import ROOT_KEY, ObjKey

__all__ = [
    "COUNTER_MARKERS",
    "TIMESTAMP_MARKERS",
    "CounterValue",
    "Delete",
    "Increment",
    "Insert",
    "PatchEdit",
    "PatchScalar",
    "Put",
    "TimestampValue",
    "UnknownValue",
    "Unmoved",
    "insert_values",
    "patch_object",
    "read_action",
    "read_patch",
]

Prop: TypeAlias = "str | int"


# -- what a patch can tell ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter, with its value after all increments."""

    current: int


@dataclass(frozen=True, slots=True)
class TimestampValue:
    """A timestamp, in milliseconds since the epoch (exact, unlike the binding's reading)."""

    millis: int


@dataclass(frozen=True, slots=True)
class UnknownValue:
    """A value of a type the core does not know: the type's code and its raw bytes."""

    type_code: int
    data: bytes


#: The scalars a patch carries that the binding cannot convert faithfully.
PatchScalar: TypeAlias = "CounterValue | TimestampValue | UnknownValue"


@dataclass(frozen=True, slots=True)
class Put:
    """``prop`` of ``obj`` now holds ``value`` (``None``: any other value)."""

    obj: ObjKey
    prop: Prop
    value: PatchScalar | None


@dataclass(frozen=True, slots=True)
class Insert:
    """``len(values)`` elements were inserted into list ``obj`` at ``index``."""

    obj: ObjKey
    index: int
    values: list[PatchScalar | None]


@dataclass(frozen=True, slots=True)
class Delete:
    """``prop`` of ``obj`` was deleted (``length`` elements from a list index)."""

    obj: ObjKey
    prop: Prop
    length: int = 1


@dataclass(frozen=True, slots=True)
class Increment:
    """The counter at ``prop`` of ``obj`` was incremented by ``by``."""

    obj: ObjKey
    prop: Prop
    by: int


@dataclass(frozen=True, slots=True)
class Unmoved:
    """A patch that writes no value and moves none (a conflict, text splice, mark...)."""

    obj: ObjKey


PatchEdit: TypeAlias = "Put | Insert | Delete | Increment | Unmoved"

#: Text that a patch holding a counter or an unknown value contains.
COUNTER_MARKERS: Final = ("Counter(Counter {", "Unknown {")
#: Text that a patch holding a timestamp contains.
TIMESTAMP_MARKERS: Final = ("Timestamp(",)


# -- the common shapes, by regular expression -----------------------------------------

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


def patch_object(text: str) -> tuple[ObjKey, int] | None:
    """The object a patch (its ``repr``) is about, and where its action starts.

    ``None`` when the start of the patch is not the common shape (then use
    :func:`read_patch`).
    """
    match = _HEAD.match(text)
    if match is None:
        return None
    if match.group(1) is None:
        return ROOT_KEY, match.end()
    return (int(match.group(1)), bytes.fromhex(match.group(2))), match.end()


def _scalar_text(value: str) -> PatchScalar | None:
    """The scalar of a ``Scalar(...)`` or ``Object(...)`` text, if it is one this module keeps."""
    match = _COUNTER_VALUE.fullmatch(value)
    if match:
        return CounterValue(int(match.group(1)))
    match = _TIMESTAMP_VALUE.fullmatch(value)
    if match:
        return TimestampValue(int(match.group(1)))
    if value.startswith("Scalar(Unknown {"):
        return _scalar_node((parse_debug(value),))
    return None


def _tree_text(text: str) -> list[PatchScalar | None] | None:
    """The kept scalars of a ``SequenceTreeNode`` text, in list order.

    ``None`` when the text is not exactly the expected shape.
    """
    # Each frame: (its elements, its children's flattened values).
    stack: list[tuple[list[PatchScalar | None], list[list[PatchScalar | None]]]] = []
    result: list[PatchScalar | None] | None = None
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
            flat: list[PatchScalar | None] = []
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
            stack[-1][0].append(_scalar_text(match.group(4)))
    if pos != len(text) or stack:
        return None
    return result


def read_action(obj: ObjKey, action: str) -> PatchEdit | None:
    """Read the common actions from their text (what follows :func:`patch_object`).

    ``None`` if this is another action, or not exactly the expected shape.
    """
    if match := _PUT_MAP.fullmatch(action):
        return Put(obj, unescape(match.group(1)), _scalar_text(match.group(2)))
    if match := _PUT_SEQ.fullmatch(action):
        return Put(obj, int(match.group(1)), _scalar_text(match.group(2)))
    if match := _INSERT.fullmatch(action):
        if match.group(2) is None:
            return Insert(obj, int(match.group(1)), [])
        values = _tree_text(match.group(2))
        return None if values is None else Insert(obj, int(match.group(1)), values)
    if match := _DELETE_MAP.fullmatch(action):
        return Delete(obj, unescape(match.group(1)))
    if match := _DELETE_SEQ.fullmatch(action):
        return Delete(obj, int(match.group(1)), int(match.group(2)))
    if match := _INCREMENT.fullmatch(action):
        key, index, by = match.groups()
        return Increment(obj, unescape(key) if key is not None else int(index), int(by))
    if _CONFLICT.fullmatch(action):
        return Unmoved(obj)
    return None


# -- any shape, by the parser ---------------------------------------------------------


def _debug_obj_key(node: Any) -> ObjKey:
    # Root, or Id(counter, ActorID("hex"), actor index)
    if isinstance(node, DebugCall) and node.name == "Id":
        counter, actor, _index = node.args
        return (int(counter), bytes.fromhex(actor.args[0]))
    return ROOT_KEY


def _scalar_node(value: Any) -> PatchScalar | None:
    """The kept scalar of a parsed ``(Scalar(...), Id(...))`` pair, if it is one."""
    if not isinstance(value, tuple) or not value:
        return None
    head = value[0]
    if not isinstance(head, DebugCall) or head.name != "Scalar" or not head.args:
        return None
    scalar = head.args[0]
    if isinstance(scalar, DebugCall) and scalar.name == "Timestamp":
        return TimestampValue(int(scalar.args[0]))
    if isinstance(scalar, DebugCall) and scalar.name == "Counter":
        counter = scalar.args[0]
        if isinstance(counter, DebugStruct):
            return CounterValue(int(counter.fields["current"]))
    if isinstance(scalar, DebugStruct) and scalar.name == "Unknown":
        return UnknownValue(int(scalar.fields["type_code"]), bytes(scalar.fields["bytes"]))
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


def insert_values(values: Any) -> list[Any]:
    # SequenceTreeInternal { root_node: Some(SequenceTreeNode { ... }) | None }
    if isinstance(values, list):
        return values
    root = values.fields.get("root_node") if isinstance(values, DebugStruct) else None
    out: list[Any] = []
    if isinstance(root, DebugCall) and root.name == "Some" and root.args:
        _tree_elements(root.args[0], out)
    return out


def read_patch(text: str, *, only: ObjKey | None = None) -> PatchEdit | None:
    """Read any patch (its ``repr``) with the full ``Debug`` parser.

    ``None`` if ``only`` is given and the patch is about another object (its
    action is then not read at all).

    Raises:
        ValueError: the text is not a patch.
        IndexError, KeyError, TypeError: the patch is not of a shape read here.
    """
    parsed = parse_debug(text)
    if not isinstance(parsed, DebugStruct) or parsed.name != "Patch":
        raise ValueError("not a patch")
    key = _debug_obj_key(parsed.fields["obj"])
    if only is not None and key != only:
        return None
    action = parsed.fields["action"]
    if not isinstance(action, DebugStruct):
        return Unmoved(key)
    name, fields = action.name, action.fields
    if name == "PutMap":
        return Put(key, fields["key"], _scalar_node(fields["value"]))
    if name == "PutSeq":
        return Put(key, int(fields["index"]), _scalar_node(fields["value"]))
    if name == "Insert":
        elements = insert_values(fields["values"])
        return Insert(key, int(fields["index"]), [_scalar_node(e) for e in elements])
    if name == "DeleteMap":
        return Delete(key, fields["key"])
    if name == "DeleteSeq":
        return Delete(key, int(fields["index"]), int(fields["length"]))
    if name == "Increment":
        prop = fields["prop"]
        if isinstance(prop, DebugCall) and prop.args:
            return Increment(key, prop.args[0], int(fields["value"]))
    # SpliceText (text has no counters), Conflict and Mark change no kept value.
    return Unmoved(key)
