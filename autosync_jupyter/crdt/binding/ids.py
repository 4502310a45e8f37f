"""The binding's object ids: opaque bytes we still have to read and write.

Works around: ``automerge`` 1.0.0rc1 hands out an object's id only as the
core's serialized ``ExId`` bytes (``tag, len(actor), actor, actor index,
counter``, LEB128), with no accessor for the op id (counter, actor) that
names the object in patches and in change bytes. Delete this module when the
binding exposes object ids as (counter, actor) or accepts them.

>>> key = obj_key(object_id(b"\\xaa" * 16, 7))
>>> key == (7, b"\\xaa" * 16)
True
>>> obj_key(ROOT_ID)
'root'
"""

from __future__ import annotations

from typing import Final, TypeAlias

from ..columns import ColumnError, read_uleb, uleb

__all__ = ["ROOT_ID", "ROOT_KEY", "ObjKey", "obj_key", "object_id"]

#: An object's identity: ``"root"`` or its creating op's (counter, actor).
ObjKey: TypeAlias = "str | tuple[int, bytes]"
#: The identity of the root map.
ROOT_KEY: Final = "root"
#: The binding's id of the root map (``automerge.core.ROOT``).
ROOT_ID: Final = b"\x00"
# The tag of an id that is not the root's.
_ID_TAG: Final = b"\x10"


def obj_key(obj_id: bytes) -> ObjKey:
    """The identity of an object from the binding's object id bytes.

    The actor index in the bytes is private to one document (it differs
    between forks), so it is left out. Bytes that are not such an id give a
    key no patch can match.
    """
    if obj_id == ROOT_ID:
        return ROOT_KEY
    try:
        size, pos = read_uleb(obj_id, 1)
        actor = bytes(obj_id[pos : pos + size])
        _, pos = read_uleb(obj_id, pos + size)
        counter, _ = read_uleb(obj_id, pos)
    except (IndexError, ColumnError):
        return "?" + bytes(obj_id).hex()
    return (counter, actor)


def object_id(actor: bytes, counter: int) -> bytes:
    """The binding's id bytes of the object that op (``counter``, ``actor``) made.

    The actor index is written as 0: the binding takes it as a hint only
    and looks the actor up by its bytes.
    """
    return _ID_TAG + uleb(len(actor)) + actor + b"\x00" + uleb(counter)
