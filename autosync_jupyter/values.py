"""Plain Python values in and out of Automerge documents (``automerge.core``).

Writing follows what JavaScript peers expect: ``dict`` becomes a map,
``list``/``tuple`` a list, ``str`` collaborative text (what
``@automerge/automerge`` makes of a JS string), ``bool`` a boolean (never the
integer 1), ``int`` an integer, ``float`` a float64, ``None`` null, ``bytes``
a byte array and ``datetime`` a timestamp.

Reading never lets a panic of the binding escape: counters (which this
binding cannot read directly) are recovered from the document's patches.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import automerge.core as am

__all__ = ["new_document", "put_value", "to_py", "write_root"]

_MIN_INT64 = -(2**63)
_MAX_INT64 = 2**63 - 1

Prop = str | int


def _scalar(value: Any) -> tuple[Any, Any]:
    if value is None:
        return am.ScalarType.Null, None
    if isinstance(value, bool):
        return am.ScalarType.Boolean, value
    if isinstance(value, int):
        if not _MIN_INT64 <= value <= _MAX_INT64:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return am.ScalarType.Int, value
    if isinstance(value, float):
        return am.ScalarType.F64, value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return am.ScalarType.Bytes, bytes(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return am.ScalarType.Timestamp, value
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a document")


def put_value(
    tx: am.Transaction, obj: Any, prop: Prop, value: Any, *, insert: bool = False
) -> None:
    """Write ``value`` at ``prop`` of ``obj`` (a map key, or a list index).

    With ``insert=True`` the value is inserted before list index ``prop``
    instead of replacing the element there.
    """
    if isinstance(value, Mapping):
        kind = am.ObjType.Map
    elif isinstance(value, str):
        kind = am.ObjType.Text
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        kind = am.ObjType.List
    else:
        scalar_type, scalar = _scalar(value)
        if insert:
            assert isinstance(prop, int), "insert needs a list index"
            tx.insert(obj, prop, scalar_type, scalar)
        else:
            tx.put(obj, prop, scalar_type, scalar)
        return
    if insert:
        assert isinstance(prop, int), "insert needs a list index"
        child = tx.insert_object(obj, prop, kind)
    else:
        child = tx.put_object(obj, prop, kind)
    if kind == am.ObjType.Map:
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"map keys must be strings, not {type(key).__name__}")
            put_value(tx, child, key, item)
    elif kind == am.ObjType.Text:
        # The binding has no multi-character splice: one element per character.
        for index, char in enumerate(value):
            tx.insert(child, index, am.ScalarType.Str, char)
    else:
        for index, item in enumerate(value):
            put_value(tx, child, index, item, insert=True)


def write_root(tx: am.Transaction, initial: Mapping[str, Any]) -> None:
    """Write every key of ``initial`` into the root map."""
    if not isinstance(initial, Mapping):
        raise TypeError(f"a document's root must be a mapping, not {type(initial).__name__}")
    for key, value in initial.items():
        if not isinstance(key, str):
            raise TypeError(f"map keys must be strings, not {type(key).__name__}")
        put_value(tx, am.ROOT, key, value)


def new_document(initial: Mapping[str, Any] | None = None) -> am.Document:
    """Make a document holding ``initial``, with at least one change.

    A document without changes has no heads, and on the wire that cannot be
    told apart from "I do not have it" (protocol §4.4), so an empty
    ``initial`` still gets an (empty) first change.
    """
    document = am.Document()
    with document.transaction() as tx:
        if initial:
            write_root(tx, initial)
        else:
            tx.put(am.ROOT, "_", am.ScalarType.Null, None)
            tx.delete(am.ROOT, "_")
    return document


_COUNTER_RE = re.compile(r"Counter\s*\{\s*start:\s*(-?\d+),\s*current:\s*(-?\d+)")


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


def _convert(doc: am.Document, value: Any, obj_id: Any, path: tuple[Prop, ...]) -> Any:
    # The binding returns (ObjType, id) for objects, ((ScalarType, v), id) for scalars.
    if isinstance(value, am.ObjType):
        return _read(doc, obj_id, value, path)
    kind, payload = value
    if kind == am.ScalarType.Bytes:
        return bytes(payload)
    if kind == am.ScalarType.Timestamp and isinstance(payload, dt.datetime):
        return payload.replace(tzinfo=dt.timezone.utc) if payload.tzinfo is None else payload
    return payload


def _read(doc: am.Document, obj: Any, kind: Any, path: tuple[Prop, ...]) -> Any:
    if kind == am.ObjType.Text:
        return doc.text(obj)
    if kind == am.ObjType.Map:
        out: dict[str, Any] = {}
        for key in doc.keys(obj):
            out[key] = _get(doc, obj, key, (*path, key))
        return out
    return [_get(doc, obj, i, (*path, i)) for i in range(doc.length(obj))]


def _get(doc: am.Document, obj: Any, prop: Prop, path: tuple[Prop, ...]) -> Any:
    try:
        item = doc.get(obj, prop)
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        return _counter_value(doc, path)
    if item is None:
        return None
    value, obj_id = item
    return _convert(doc, value, obj_id, path)


def _counter_value(doc: am.Document, path: tuple[Prop, ...]) -> int | None:
    """Recover a counter's value from the patches that rebuild the document."""
    try:
        patches = doc.diff([], doc.get_heads())
    except BaseException as exc:
        if not _is_panic(exc):
            raise
        return None
    wanted = list(path)
    value: int | None = None
    for patch in patches:
        text = repr(patch)
        match = _COUNTER_RE.search(text)
        if match and _patch_path(patch) == wanted:
            value = int(match.group(2))
    return value


def _patch_path(patch: Any) -> list[Prop]:
    # Each patch knows the path of its object and the property it touches.
    path = [prop for _obj, prop in getattr(patch, "path", [])]
    action = getattr(patch, "action", None)
    for attr in ("key", "index"):
        if hasattr(action, attr):
            path.append(getattr(action, attr))
            break
    return path


def to_py(doc: am.Document) -> dict[str, Any]:
    """Return a whole document as plain Python (dicts, lists, str, numbers…)."""
    result = _read(doc, am.ROOT, am.ObjType.Map, ())
    assert isinstance(result, dict)
    return result
