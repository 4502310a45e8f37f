"""What the widgets' timeline needs: versions by number, their details, restoring one.

A document's *version k* (1-based) is the document made of the first ``k``
changes of :meth:`Document.history` (oldest first, in causal order, so
every prefix is a version some peer could have seen). Restoring a version
never rewrites history: :func:`write_version` makes the document's
content equal to the version's, as one new change on top of the others.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Sequence
from typing import Any

import automerge.core as am

from ..crdt.document import (
    Document,
    MutableCounter,
    MutableList,
    MutableMap,
    MutableText,
)
from ..crdt.history import ChangeRecord
from ..crdt.json_tree import document_tree, short_heads
from ..crdt.values import Counter, ObjectRef, Reader
from ..ids import DocumentId, document_url, encode_heads
from ..runtime.presence import peer_color

__all__ = ["notebook_user", "version_details", "version_heads", "write_version"]

#: Hex digits of an actor id shown as a change's author.
SHORT_ACTOR = 8


def notebook_user() -> str:
    """A name for the notebook's user before (or without) Jupyter's identity.

    JupyterHub tells the kernel its user; elsewhere the login name will do.
    The LiveView's front end replaces it by JupyterLab's identity when it can.
    """
    hub_user = os.environ.get("JUPYTERHUB_USER")
    if hub_user:
        return hub_user
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "notebook"


def version_heads(history: Sequence[ChangeRecord], version: int) -> list[bytes]:
    """The heads of version ``version`` (the first ``version`` changes of ``history``).

    Raises:
        IndexError: ``version`` is not between 1 and ``len(history)``.
    """
    if not 1 <= version <= len(history):
        raise IndexError(f"there is no version {version}: versions go from 1 to {len(history)}")
    heads: dict[str, None] = {}
    for record in history[:version]:
        for dep in record.deps:
            heads.pop(dep, None)
        heads[record.hash] = None
    return [bytes.fromhex(head) for head in heads]


def version_details(
    document: Document, version: int, document_id: DocumentId | None
) -> dict[str, Any]:
    """Everything the timeline shows about one version, JSON-able.

    ``tree`` is the version's content (see :mod:`..crdt.json_tree`),
    ``changed`` the paths its last change touched (against version
    ``version - 1``), and the author, time and message of that change.
    """
    history = document.history()
    heads = version_heads(history, version)
    record = history[version - 1]
    past = document.at(heads)
    before = version_heads(history, version - 1) if version > 1 else []
    try:
        changed = sorted({tuple(patch.path) for patch in document.diff(before, heads)}, key=repr)
    except KeyError:  # a version the binding cannot diff: show it unhighlighted
        changed = []
    return {
        "version": version,
        "versions": len(history),
        "tree": document_tree(past),
        "changed": [list(path) for path in changed],
        "hash": record.hash,
        "heads": short_heads(heads),
        # In full, as URLs write them: what presence tells others we look at.
        "url_heads": sorted(encode_heads(heads)),
        "actor": record.actor[:SHORT_ACTOR],
        "color": peer_color(record.actor),
        "seq": record.seq,
        "time": None if record.time is None else record.time.isoformat(),
        "when": record.when,
        "message": record.message,
        "url": document_url(document_id, heads) if document_id is not None else "",
    }


# -- restoring ---------------------------------------------------------------------------


def write_version(root: MutableMap, past: Document) -> None:
    """Inside a change, make the document's content equal to ``past``'s.

    Only what differs is written: keys and list items that are equal stay
    as they are (so concurrent edits to them still merge), text is spliced
    from its first to its last differing character, and a counter moves by
    an increment. A counter that no longer exists comes back as an integer:
    the binding cannot create counters.
    """
    _sync_map(root, past._reader(), am.ROOT)


_Parent = MutableMap | MutableList


def _same_scalar(current: Any, wanted: Any) -> bool:
    # True == 1 in Python, but a boolean is not an integer in a document.
    return type(current) is type(wanted) and current == wanted


def _sync_item(parent: _Parent, prop: str | int, reader: Reader, item: Any) -> None:
    current = parent[prop]  # type: ignore[index]
    if isinstance(item, ObjectRef):
        if item.kind == am.ObjType.Map and isinstance(current, MutableMap):
            _sync_map(current, reader, item.id)
        elif item.kind == am.ObjType.List and isinstance(current, MutableList):
            _sync_list(current, reader, item.id)
        elif item.kind == am.ObjType.Text and isinstance(current, MutableText):
            current.update(reader.text(item.id))
        else:
            parent[prop] = reader.to_py(item.id, item.kind)  # type: ignore[index]
        return
    if isinstance(item, Counter):
        if isinstance(current, MutableCounter):
            if current.value != int(item):
                current.increment(int(item) - current.value)
            return
        parent[prop] = int(item)  # type: ignore[index]
        return
    if not _same_scalar(current, item):  # a container, text or counter is never the same
        parent[prop] = item  # type: ignore[index]


def _sync_map(current: MutableMap, reader: Reader, obj: bytes) -> None:
    keys = reader.keys(obj)
    wanted = set(keys)
    for key in [k for k in current if k not in wanted]:
        del current[key]
    for key, item in zip(keys, reader._items(obj, keys), strict=True):
        if key in current:
            _sync_item(current, key, reader, item)
        else:
            _put_new(current, key, reader, item)


def _sync_list(current: MutableList, reader: Reader, obj: bytes) -> None:
    items = reader._items(obj, None)
    while len(current) > len(items):
        del current[len(current) - 1]
    for index, item in enumerate(items):
        if index < len(current):
            _sync_item(current, index, reader, item)
        else:
            value = reader.to_py(item.id, item.kind) if isinstance(item, ObjectRef) else item
            current.append(int(value) if isinstance(value, Counter) else value)


def _put_new(parent: MutableMap, key: str, reader: Reader, item: Any) -> None:
    if isinstance(item, ObjectRef):
        parent[key] = reader.to_py(item.id, item.kind)
    else:
        parent[key] = int(item) if isinstance(item, Counter) else item
