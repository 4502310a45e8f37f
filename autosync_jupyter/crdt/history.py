"""A document's history: its changes as records, its versions by heads, what changed.

Every Automerge change carries its author (actor), its place among that
author's changes (``seq``), the changes it follows (``deps``), a time and an
optional message. :class:`History` lists them in the core's causal order
without reading any of them up front; :class:`ChangeRecord` is one of them,
ready to print.

>>> from autosync_jupyter import Document
>>> doc = Document({"n": 1})
>>> with doc.change(message="count up") as d:
...     d["n"] = 2
>>> history = doc.history()
>>> len(history), history[-1].message, history[-1].ops, history[-1].time is not None
(2, 'count up', 1, True)

Changes made from Python carry a time and, with ``doc.change(message=...)``,
a message, as JavaScript's do (:mod:`.stamp` says how, and what it costs);
a change whose time is unknown (time 0, as older Python changes have) has
``time=None``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, overload

import automerge.core as am

from ..ids import decode_heads, parse_automerge_url
from .binding import object_id
from .binding.debug_text import DebugCall, DebugStruct, parse_debug
from .binding.patch_text import insert_values
from .columns import ColumnError, read_sleb, read_uleb
from .patches import Unknown
from .values import Counter

__all__ = [
    "ChangeRecord",
    "History",
    "Patch",
    "change_time",
    "diff",
    "parse_heads",
    "readable_patch",
]

logger = logging.getLogger("autosync_jupyter.document")

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# JavaScript's change() writes whole seconds; a writer that used milliseconds
# gives numbers no second count reaches before the year 5138.
_MILLISECONDS_FROM: Final = 10**11


# -- records ------------------------------------------------------------------------------


def change_time(seconds: int) -> dt.datetime | None:
    """The instant a change's header time stands for (``None`` for 0: unknown).

    >>> change_time(1700000000)
    datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)
    >>> change_time(0) is None
    True
    """
    if seconds == 0:
        return None
    try:
        if abs(seconds) >= _MILLISECONDS_FROM:
            return _EPOCH + dt.timedelta(milliseconds=seconds)
        return _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:  # a peer's nonsense: no instant
        return None


def _header_time(raw: bytes) -> int:
    """The time field of an uncompressed change chunk (0 if it cannot be read)."""
    try:
        _, pos = read_uleb(raw, 9)  # after magic, checksum and chunk type: the length
        count, pos = read_uleb(raw, pos)
        actor_length, pos = read_uleb(raw, pos + 32 * count)
        _, pos = read_uleb(raw, pos + actor_length)  # sequence number
        _, pos = read_uleb(raw, pos)  # start op
        seconds, _ = read_sleb(raw, pos)
    except (ColumnError, IndexError):
        return 0
    return seconds


@dataclass(frozen=True)
class ChangeRecord:
    """One change of a document's history.

    Attributes:
        hash: the change's hash (hex), what heads and ``deps`` name.
        actor: its author's actor id (hex); one actor per document copy.
        seq: its place among its author's changes (1, 2, ...).
        time: when it was made (aware UTC), or ``None`` when unknown (the
            change carries time 0).
        message: the message its author gave, if any.
        deps: the hashes (hex) of the changes it follows.
        ops: how many operations it holds.
    """

    hash: str
    actor: str
    seq: int
    time: dt.datetime | None
    message: str | None
    deps: tuple[str, ...]
    ops: int

    @classmethod
    def of(cls, change: Any) -> ChangeRecord:
        """The record of a binding ``Change`` (from ``get_changes``)."""
        return cls(
            hash=bytes(change.hash).hex(),
            actor=bytes(change.actor_id).hex(),
            seq=int(change.seq),
            time=change_time(_header_time(change.raw_bytes)),
            message=change.message or None,
            deps=tuple(bytes(dep).hex() for dep in change.deps),
            ops=max(0, int(change.max_op) - int(change.start_op) + 1),
        )

    @property
    def when(self) -> str:
        """The time as a short text: ``2024-05-01 12:00:00 UTC``, or ``time unknown``."""
        return "time unknown" if self.time is None else f"{self.time:%Y-%m-%d %H:%M:%S} UTC"

    def __str__(self) -> str:
        said = f"  {self.message!r}" if self.message else ""
        count = f"{self.ops} op{'s' * (self.ops != 1)}"
        return f"{self.when}  {self.actor[:8]} #{self.seq}  {count}{said}  {self.hash[:12]}"


class History(Sequence[ChangeRecord]):
    """A document's changes, oldest first in causal order, read lazily.

    Supports ``len``, indexing (negative too), slices (a list) and
    iteration; a record is built only when it is read, so ``history[-20:]``
    of a long history costs little. It is a snapshot: changes made later
    are not in it (call :meth:`Document.history` again).
    """

    __slots__ = ("_changes",)

    def __init__(self, changes: Sequence[Any]) -> None:
        self._changes = changes

    def __len__(self) -> int:
        return len(self._changes)

    @overload
    def __getitem__(self, index: int) -> ChangeRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[ChangeRecord]: ...

    def __getitem__(self, index: int | slice) -> ChangeRecord | list[ChangeRecord]:
        if isinstance(index, slice):
            return [ChangeRecord.of(change) for change in self._changes[index]]
        return ChangeRecord.of(self._changes[index])

    def __iter__(self) -> Iterator[ChangeRecord]:
        for change in self._changes:
            yield ChangeRecord.of(change)

    def __repr__(self) -> str:
        count = len(self)
        lines = [f"History({count} change{'s' * (count != 1)})"]
        shown = range(max(0, count - 10), count)
        if shown.start:
            lines.append(f"  … {shown.start} earlier")
        lines += [f"  {self[i]}" for i in shown]
        return "\n".join(lines)


# -- versions ------------------------------------------------------------------------------


def parse_heads(heads: Any) -> list[bytes]:
    """Change hashes from what a user has at hand.

    ``heads`` is an ``automerge:`` URL with heads (``automerge:<id>#<heads>``)
    or an iterable of heads, each 32 bytes, 64 hex digits or a bs58check
    string (as URLs and JavaScript's ``encodeHeads`` write them).

    Raises:
        ValueError: something that is not a head.
    """
    if isinstance(heads, str):
        if not heads.startswith("automerge:"):
            raise ValueError(
                "give heads as a list (bytes, hex or bs58 strings) or an automerge: URL "
                f"with #heads, not the string {heads[:80]!r}"
            )
        _, pinned = parse_automerge_url(heads)
        if not pinned:
            raise ValueError(f"the URL {heads[:80]!r} names no heads (…#<heads>)")
        return pinned
    found: list[bytes] = []
    for head in heads:
        if isinstance(head, (bytes, bytearray, memoryview)) and len(head) == 32:
            found.append(bytes(head))
        elif isinstance(head, str) and len(head) == 64:
            try:
                found.append(bytes.fromhex(head))
            except ValueError:
                raise ValueError(f"{head!r} is not a change hash") from None
        elif isinstance(head, str):
            found.extend(decode_heads([head]))
        else:
            raise ValueError(f"{head!r} is not a change hash (32 bytes, hex or bs58)")
    return found


# -- differences --------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One step from one version of a document to another.

    Attributes:
        path: where, from the root: map keys and list (or text) positions,
            ending with the key or position changed.
        action: ``"put"`` (``value`` is the new value; a new map, list or
            text shows as ``{}``, ``[]`` or ``""``, its content in the
            patches after it), ``"insert"`` (``value`` is the list of values
            inserted at the position), ``"splice"`` (text inserted: a
            ``str``), ``"delete"`` (``value`` is how many list elements or
            characters, ``None`` for a map key), ``"increment"`` (``value``
            is the amount added to a counter), ``"conflict"`` (concurrent
            values at ``path``; the winner is shown by its own patch),
            ``"mark"`` (rich-text marks: a list of ``{"name", "value",
            "start", "end"}``), ``"unknown"`` (a patch of a shape not read
            here: ``value`` is the binding's text of it).
        value: see ``action``.
    """

    path: tuple[str | int, ...]
    action: str
    value: Any = None

    def __str__(self) -> str:
        where = "/".join(str(part) for part in self.path) or "(root)"
        if self.action == "delete" and self.value is None:
            return f"delete {where}"
        return f"{self.action} {where}: {self.value!r}"


def _scalar(node: Any) -> Any:
    """The Python value of a ``Scalar(...)`` or ``Object(...)`` node of a patch."""
    if not isinstance(node, DebugCall) or not node.args:
        return node
    inner = node.args[0]
    if node.name == "Object":
        kind = inner.name if isinstance(inner, DebugCall) else str(inner)
        return {"Map": {}, "Table": {}, "List": []}.get(kind, "")
    if isinstance(inner, DebugStruct) and inner.name == "Unknown":
        return Unknown(int(inner.fields["type_code"]), bytes(inner.fields["bytes"]))
    if not isinstance(inner, DebugCall):
        return inner
    name, args = inner.name, inner.args
    if name == "Null" or not args:
        return None
    value = args[0]
    if name == "Bytes":
        return bytes(value)
    if name == "Timestamp":
        return _EPOCH + dt.timedelta(milliseconds=int(value))
    if name == "Counter":
        return Counter(int(value.fields["current"])) if isinstance(value, DebugStruct) else value
    if name == "F64":
        return float(value)
    return value


def _prop(node: Any) -> str | int:
    # Map("key") or Seq(3)
    if isinstance(node, DebugCall) and node.args:
        value = node.args[0]
        return int(value) if node.name == "Seq" else str(value)
    raise ValueError(f"not a property: {node!r}")


def _is_text(core: am.Document, obj: Any) -> bool:
    if not (isinstance(obj, DebugCall) and obj.name == "Id" and len(obj.args) == 3):
        return False
    counter, actor, _ = obj.args
    try:
        found = core.object_type(object_id(bytes.fromhex(actor.args[0]), int(counter)))
    except Exception:  # an object the core no longer knows: then it is no text we show
        return False
    return bool(found == am.ObjType.Text)


def readable_patch(core: am.Document, text: str) -> Patch:
    """A :class:`Patch` from the ``repr`` of one of ``core.diff()``'s patches.

    Reads the ``repr`` because the binding gives nothing else (and converting
    a counter would panic); ``core`` tells text from lists.

    Raises:
        ValueError: the text is not a patch of a shape read here.
    """
    parsed = parse_debug(text)
    if not isinstance(parsed, DebugStruct) or parsed.name != "Patch":
        raise ValueError("not a patch")
    path = tuple(_prop(step[1]) for step in parsed.fields["path"])
    action = parsed.fields["action"]
    name = action.name if isinstance(action, (DebugStruct, DebugCall)) else str(action)
    fields: dict[str, Any] = action.fields if isinstance(action, DebugStruct) else {}
    if name == "PutMap":
        return Patch((*path, str(fields["key"])), "put", _scalar(fields["value"][0]))
    if name == "PutSeq":
        return Patch((*path, int(fields["index"])), "put", _scalar(fields["value"][0]))
    if name == "Insert":
        values = [_scalar(element[0]) for element in insert_values(fields["values"])]
        where = (*path, int(fields["index"]))
        if (
            values
            and all(isinstance(v, str) for v in values)
            and _is_text(core, parsed.fields["obj"])
        ):
            return Patch(where, "splice", "".join(values))
        return Patch(where, "insert", values)
    if name == "SpliceText":
        return Patch((*path, int(fields["index"])), "splice", str(fields["value"]))
    if name == "DeleteMap":
        return Patch((*path, str(fields["key"])), "delete", None)
    if name == "DeleteSeq":
        return Patch((*path, int(fields["index"])), "delete", int(fields["length"]))
    if name == "Increment":
        return Patch((*path, _prop(fields["prop"])), "increment", int(fields["value"]))
    if name == "Conflict":
        return Patch((*path, _prop(fields["prop"])), "conflict", None)
    if name == "Mark":
        marks = [
            {
                "name": mark.fields.get("name"),
                "value": _scalar(mark.fields.get("value")),
                "start": mark.fields.get("start"),
                "end": mark.fields.get("end"),
            }
            for mark in fields.get("marks", [])
            if isinstance(mark, DebugStruct)
        ]
        return Patch(path, "mark", marks)
    return Patch(path, name.lower(), fields or None)


def diff(core: am.Document, before: list[bytes], after: list[bytes]) -> list[Patch]:
    """What changed between two versions of ``core``, as :class:`Patch` es.

    Raises:
        KeyError: a head names a change ``core`` does not have (the binding
            would take it for the empty document without a word).
    """
    current = set(core.get_heads())
    if not current.issuperset(before) or not current.issuperset(after):
        known = {bytes(change.hash) for change in core.get_changes([])}
        unknown = [head.hex()[:12] for head in (*before, *after) if head not in known]
        if unknown:
            raise KeyError(f"this document has no change {', '.join(unknown)}")
    patches = []
    for patch in core.diff(before, after):
        text = repr(patch)
        try:
            patches.append(readable_patch(core, text))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A shape this reader does not know (a newer core): shown, not lost.
            logger.warning("cannot read a patch: %.200s", text, exc_info=True)
            patches.append(Patch((), "unknown", text))
    return patches
