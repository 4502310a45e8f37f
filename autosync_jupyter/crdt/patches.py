"""Where the values the binding cannot read are, recovered without a panic.

``automerge==1.0.0rc1`` panics when it converts a counter, or a value of a
type newer than itself, into Python; the document's patches describe the same
values (:mod:`.binding.patch_text` reads them). This module keeps, per
document, an index of every such value: which property of which object holds
it, and its value. Readers look a property up here before they ask the
binding, and never ask the binding for an indexed one. Three measures keep it
cheap:

* Most documents never hold a counter. Whether one might is decided from the
  changes' own bytes (the value-type column of each change,
  :func:`~.changes.change_value_types`), new changes only, so a counter-free
  document is never diffed.
* Once a document may hold one, the index is built from ``diff([], heads)``
  and then moved forward with ``diff(old_heads, new_heads)``: the patches are
  replayed (inserts shift list positions, deletes and overwrites drop
  entries, increments add), which is exactly how Automerge's JS front end
  keeps its own view up to date.
* Only patches that mention such a value, or touch an object already in the
  index, are read: the common shapes with regular expressions, anything else
  with the full parser of Rust's ``Debug`` text. Objects are keyed by their
  op id (counter, actor), which never changes, not by their path, which does.

The binding's ``diff([], heads)`` itself grows faster than linearly with the
number of objects in lists (about 0.5 s for 5,000 maps in a list, measured),
so documents with counters *and* many objects pay that once, when first read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import automerge.core as am

from .binding import ObjKey, obj_key
from .binding.patch_text import (
    COUNTER_MARKERS,
    TIMESTAMP_MARKERS,
    CounterValue,
    Delete,
    Increment,
    Insert,
    PatchEdit,
    PatchScalar,
    Put,
    TimestampValue,
    UnknownValue,
    patch_object,
    read_action,
    read_patch,
)
from .changes import VALUE_COUNTER, VALUE_FIRST_UNKNOWN, change_value_types

__all__ = [
    "SpecialIndex",
    "Tracker",
    "Unknown",
    "exact_timestamp",
    "may_hold_special_values",
]

logger = logging.getLogger("autosync_jupyter.document")

Prop = str | int


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


def may_hold_special_values(changes: Iterable[bytes]) -> bool:
    """Whether any of these changes writes a counter or an unknown type.

    Errs on the side of yes: a change this parser does not understand counts
    as one that might.
    """
    for raw in changes:
        try:
            types = change_value_types(raw)
        except (IndexError, ValueError):  # ChangeRejected among them
            return True
        if VALUE_COUNTER in types or any(t >= VALUE_FIRST_UNKNOWN for t in types):
            return True
    return False


# -- the index ------------------------------------------------------------------------


def _epoch_millis(millis: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=millis)


class SpecialIndex:
    """Which properties hold a value the binding cannot convert, and that value.

    Maps are indexed by key, lists by position (kept right as elements are
    inserted and deleted before them).
    """

    def __init__(self, *, timestamps: bool = False) -> None:
        self.maps: dict[ObjKey, dict[str, _Special]] = {}
        self.lists: dict[ObjKey, dict[int, _Special]] = {}
        self._timestamps = timestamps
        self._markers = TIMESTAMP_MARKERS if timestamps else COUNTER_MARKERS

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
        head = patch_object(patch)
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
        edit = read_action(obj, action)
        if edit is None:
            return False
        self._replay(edit)
        return True

    def _apply_parsed(self, patch: str, only: ObjKey | None) -> None:
        edit = read_patch(patch, only=only)
        if edit is not None:
            self._replay(edit)

    def _replay(self, edit: PatchEdit) -> None:
        if isinstance(edit, Put):
            self.put(edit.obj, edit.prop, self._special(edit.value))
        elif isinstance(edit, Insert):
            self.insert(edit.obj, edit.index, [self._special(value) for value in edit.values])
        elif isinstance(edit, Delete):
            self.delete(edit.obj, edit.prop, edit.length)
        elif isinstance(edit, Increment):
            self.increment(edit.obj, edit.prop, edit.by)
        # Unmoved: a conflict, text splice or mark changes no indexed value.

    def _special(self, value: PatchScalar | None) -> _Special | None:
        """What this index keeps of a patch's scalar (``None``: nothing)."""
        if self._timestamps:
            return _epoch_millis(value.millis) if isinstance(value, TimestampValue) else None
        if isinstance(value, CounterValue):
            return _Counter(value.current)
        if isinstance(value, UnknownValue):
            return Unknown(value.type_code, value.data)
        return None


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
