"""Documents as JSON-able trees, for the widgets' front ends.

A widget's state travels to the browser as JSON, which has no bytes, dates,
counters, NaN or integers beyond 2**53. :func:`document_tree` and
:func:`to_tree` keep those apart with one-key marker objects that the
front end shows distinctly:

======================  ==========================================
Python value            tree value
======================  ==========================================
``bytes``               ``{"$bytes": "<base64>"}``
``datetime``            ``{"$date": "<ISO 8601, UTC>"}``
:class:`Counter`        ``{"$counter": n}``
``int`` beyond 2**53    ``{"$int": "<decimal digits>"}``
NaN, ±infinity          ``{"$float": "NaN" | "Infinity" | "-Infinity"}``
a map with a ``$`` key  ``{"$map": {...}}`` (so it is never mistaken for a marker)
======================  ==========================================

Text, strings, numbers, booleans, null, maps and lists stay as they are
(map keys in the document's order).

>>> import datetime as dt
>>> to_tree({"b": b"hi", "t": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)})
{'b': {'$bytes': 'aGk='}, 't': {'$date': '2024-01-02T00:00:00+00:00'}}
>>> to_tree({"$bytes": "just a string", "n": 2**60})
{'$map': {'$bytes': 'just a string', 'n': {'$int': '1152921504606846976'}}}
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import automerge.core as am

from ..ids import encode_heads
from .document import Document
from .values import Counter, ObjectRef, Reader

__all__ = ["document_tree", "short_heads", "to_tree"]

#: Integers beyond this lose precision as JavaScript numbers.
_MAX_SAFE_INT = 2**53 - 1
#: Characters shown per head: enough to tell versions apart by eye.
SHORT_HEAD = 8


def short_heads(heads: Sequence[bytes | str]) -> list[str]:
    """The first characters of each head in its URL form (bs58check), sorted, for display.

    Heads given as text are taken to be in that form already.

    >>> short_heads([bytes.fromhex("ab" * 32)])
    ['2Jc6VooH']
    """
    return sorted((encode_heads([h])[0] if isinstance(h, bytes) else h)[:SHORT_HEAD] for h in heads)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Counter):
        return {"$counter": _number(int(value))}
    if isinstance(value, int):
        return _number(value)
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "NaN"}
        if math.isinf(value):
            return {"$float": "Infinity" if value > 0 else "-Infinity"}
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        return {"$date": when.astimezone(dt.timezone.utc).isoformat()}
    # Anything else (a value type newer than this package) is shown, not lost.
    return {"$unknown": repr(value)}


def _number(value: int) -> Any:
    return value if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT else {"$int": str(value)}


def _map(items: dict[str, Any]) -> dict[str, Any]:
    # A user's map may itself look like a marker; wrapping keeps them apart.
    if any(key.startswith("$") for key in items):
        return {"$map": items}
    return items


def to_tree(value: Any) -> Any:
    """Turn plain Python values (as ``Document.to_py()`` returns) into a JSON-able tree.

    Mappings become objects (their keys as strings), other sequences (not
    ``str`` or ``bytes``) become lists; scalars become themselves or a
    marker (see the module's table).
    """
    if isinstance(value, Document):
        return document_tree(value)
    if isinstance(value, Mapping):
        return _map({str(key): to_tree(item) for key, item in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [to_tree(item) for item in value]
    return _scalar(value)


def document_tree(doc: Document) -> dict[str, Any]:
    """The whole of ``doc`` as a JSON-able tree, counters kept apart from integers.

    Reads the document once, as it is now; call it from the thread that
    owns the document (or under the lock that guards it).

    >>> document_tree(Document({"title": "hi", "n": [1, 2.5]}))
    {'n': [1, 2.5], 'title': 'hi'}
    """
    # Document.to_py() turns counters into ints; the reader keeps them apart.
    reader = doc._reader()
    tree = _walk(reader, am.ROOT, am.ObjType.Map)
    assert isinstance(tree, dict)
    return tree


def _walk(reader: Reader, obj: bytes, kind: am.ObjType) -> Any:
    if kind == am.ObjType.Text:
        return reader.text(obj)
    if kind == am.ObjType.Map:
        keys = reader.keys(obj)
        items = reader._items(obj, keys)
        return _map({key: _item(reader, item) for key, item in zip(keys, items, strict=True)})
    return [_item(reader, item) for item in reader._items(obj, None)]


def _item(reader: Reader, item: Any) -> Any:
    if isinstance(item, ObjectRef):
        return _walk(reader, item.id, item.kind)
    return _scalar(item)
