"""Values the binding converts wrongly or cannot write in one call, put right.

Each function names the binding behaviour it works around and what would let
us delete it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import automerge.core as am

__all__ = ["bytes_from_binding", "insert_text", "utc_from_binding"]

_UTC = dt.timezone.utc


def utc_from_binding(value: dt.datetime) -> tuple[dt.datetime, bool]:
    """The aware UTC instant of a timestamp the binding returned, and whether it is ambiguous.

    Works around: the binding (1.0.0rc1) converts a timestamp (milliseconds
    since the epoch) to a *naive local-time* ``datetime``. In the hour a
    daylight-saving change repeats, one local time stands for two instants;
    then the first is returned with ``True``, and only the document's patches
    (:func:`~autosync_jupyter.crdt.patches.exact_timestamp`) can say which it
    was. Delete when the binding returns aware UTC (or epoch milliseconds).

    >>> utc_from_binding(dt.datetime(2024, 1, 2, tzinfo=_UTC))
    (datetime.datetime(2024, 1, 2, 0, 0, tzinfo=datetime.timezone.utc), False)
    """
    if value.tzinfo is not None:
        return value.astimezone(_UTC), False
    first = value.replace(fold=0).astimezone(_UTC)
    return first, first != value.replace(fold=1).astimezone(_UTC)


def bytes_from_binding(value: Sequence[int] | bytes) -> bytes:
    """A byte array as ``bytes``.

    Works around: the binding (1.0.0rc1) returns byte arrays as
    ``list[int]``. Delete when it returns ``bytes``.

    >>> bytes_from_binding([0, 1, 255])
    b'\\x00\\x01\\xff'
    """
    return bytes(value)


def insert_text(tx: am.Transaction, text_obj: bytes, index: int, text: str) -> None:
    """Insert ``text`` into a text object at ``index`` (a code point position).

    Works around: the binding (1.0.0rc1) has no multi-character splice (a
    ``str`` given to ``insert`` becomes one element), so this inserts one
    character per call, with the method looked up once. Delete when the
    binding has ``splice_text``.
    """
    insert = tx.insert
    kind = am.ScalarType.Str
    for offset, char in enumerate(text):
        insert(text_obj, index + offset, kind, char)
