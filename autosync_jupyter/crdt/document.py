"""The Python face of an Automerge document: read it like a dict, edit it in a ``with`` block.

A :class:`Document` wraps a binding document (``automerge.core.Document``)
and reads like nested dicts and lists; every edit happens inside
``with doc.change() as d:``, which is one Automerge change (all or nothing):

>>> doc = Document({"title": "Shopping", "items": ["eggs"], "done": False})
>>> with doc.change() as d:
...     d["items"].append("milk")
...     d["title"].splice(0, 0, "My ")   # edits the text, keeping others' edits
...     d["done"] = True
>>> doc["items"][1], doc["title"], doc["done"]
('milk', 'My Shopping', True)
>>> doc.to_py()
{'done': True, 'items': ['eggs', 'milk'], 'title': 'My Shopping'}

Types map one to one, in both directions: ``dict`` and map, ``list`` and
list, ``str`` and text (a JavaScript string), ``bool`` and boolean (never the
integer 1), ``int`` and a 64-bit integer, ``float`` and a float64 (``2.0``
stays a float), ``None`` and null, ``bytes`` and a byte array, ``datetime``
and a timestamp (milliseconds; read back as aware UTC, and a naive
``datetime`` is written as UTC). Scalar strings from JavaScript's
``ImmutableString`` read as ``str`` too.

Counters: the ``automerge`` binding (1.0.0rc1) cannot convert a counter and
corrupts a document that creates one. This module reads counters from the
document's patches instead, never asking the binding (so no panic, and no
Rust backtrace on stderr), and increments counters JavaScript peers made
(``d.increment("hits")``); creating one from Python raises
:class:`~autosync_jupyter.errors.CounterNotSupported`.

Text positions count code points, as Python's ``str`` does; JavaScript counts
UTF-16 units, so positions after an emoji differ between the two (merges are
still right).

A :class:`Document` is not thread-safe: use it from one thread at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import logging
import operator
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import automerge.core as am

from ..errors import CounterNotSupported, DocumentError
from ..ids import encode_heads
from .binding import insert_text, obj_key
from .frames import Path, frame_of, walk, write_frame
from .history import History, Patch, diff, parse_heads
from .patches import SpecialIndex, Tracker
from .patches import _Counter as _IndexedCounter
from .stamp import Stamper, stamp_new
from .values import (
    COUNTER_CREATION_MESSAGE,
    Counter,
    ObjectRef,
    Reader,
    check_int,
    check_key,
    check_value,
    new_document,
    put_value,
)

__all__ = [
    "ChangeEvent",
    "Counter",
    "Document",
    "ListView",
    "MapView",
    "MutableCounter",
    "MutableList",
    "MutableMap",
    "MutableText",
]

logger = logging.getLogger("autosync_jupyter.document")

Origin = Literal["local", "remote"]
Listener = Callable[["ChangeEvent"], object]


@dataclass(frozen=True, eq=False)
class ChangeEvent:
    """What a listener of a :class:`Document` is told after the document changed.

    ``origin`` is ``"local"`` for changes made in this process
    (:meth:`Document.change`, :meth:`Document.merge`), which a connection
    should send on, and ``"remote"`` for changes that arrived from a peer
    (reported through :meth:`Document.notify`).
    """

    document: Document = field(repr=False)
    origin: Origin
    heads_before: list[bytes]
    heads_after: list[bytes]


# -- reading ----------------------------------------------------------------------------


def _view(document: Document, item: Any) -> Any:
    """What a read of the document returns for ``item`` (a :class:`Reader` result)."""
    if isinstance(item, ObjectRef):
        if item.kind == am.ObjType.Map:
            return MapView(document, item.id)
        if item.kind == am.ObjType.List:
            return ListView(document, item.id)
        return document._reader().text(item.id)
    return item


def _list_index(index: Any, length: int) -> int:
    """``index`` as a position in ``[0, length)`` (negative counts from the end)."""
    if isinstance(index, bool):
        raise TypeError("list indices must be integers, not bool")
    try:
        position: int = operator.index(index)
    except TypeError:
        raise TypeError(
            f"list indices must be integers or slices, not {type(index).__name__}"
        ) from None
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError("list index out of range")
    return position


def _map_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"map keys are strings, not {type(key).__name__}")
    return key


class MapView(Mapping[str, Any]):
    """A map inside a :class:`Document`, read-only and read lazily (always current).

    Nested maps and lists come back as views too, text as ``str``, counters
    as :class:`Counter`. Compare it with a ``dict``, or copy it out with
    :meth:`to_py`.
    """

    __slots__ = ("_document", "_obj")

    def __init__(self, document: Document, obj: bytes) -> None:
        self._document = document
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        return _view(self._document, self._document._reader().get(self._obj, _map_key(key)))

    def __iter__(self) -> Iterator[str]:
        return iter(self._document._reader().keys(self._obj))

    def __len__(self) -> int:
        return len(self._document._reader().keys(self._obj))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._document._reader().has(self._obj, key)

    def to_py(self) -> dict[str, Any]:
        """This map and everything under it as plain Python."""
        result: dict[str, Any] = self._document._reader().to_py(self._obj, am.ObjType.Map)
        return result

    def __repr__(self) -> str:
        return f"MapView({_one_line(self._document._reader(), self._obj, am.ObjType.Map)})"

    def _repr_html_(self) -> str:
        reader = self._document._reader()
        return _html(reader, self._obj, am.ObjType.Map, "MapView")


class ListView(Sequence[Any]):
    """A list inside a :class:`Document`, read-only and read lazily (always current).

    Supports ``len``, indexing (negative too), slices (a ``list``), iteration
    and ``==`` with any sequence; :meth:`to_py` copies it out.
    """

    __slots__ = ("_document", "_obj")

    def __init__(self, document: Document, obj: bytes) -> None:
        self._document = document
        self._obj = obj

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        reader = self._document._reader()
        length = reader.length(self._obj)
        if isinstance(index, slice):
            positions = range(*index.indices(length))
            return [_view(self._document, reader.get(self._obj, i)) for i in positions]
        return _view(self._document, reader.get(self._obj, _list_index(index, length)))

    def __len__(self) -> int:
        return self._document._reader().length(self._obj)

    def __iter__(self) -> Iterator[Any]:
        reader = self._document._reader()
        for position in range(reader.length(self._obj)):
            yield _view(self._document, reader.get(self._obj, position))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes, bytearray)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_py(self) -> list[Any]:
        """This list and everything under it as plain Python."""
        result: list[Any] = self._document._reader().to_py(self._obj, am.ObjType.List)
        return result

    def __repr__(self) -> str:
        return f"ListView({_one_line(self._document._reader(), self._obj, am.ObjType.List)})"

    def _repr_html_(self) -> str:
        reader = self._document._reader()
        return _html(reader, self._obj, am.ObjType.List, "ListView")


# -- editing ----------------------------------------------------------------------------


class _Edit:
    """One open change: its transaction, and where its counters are as it goes."""

    __slots__ = ("base_index", "heads_before", "index", "open", "reader", "tx")

    def __init__(self, tx: am.Transaction, base_index: SpecialIndex, heads: list[bytes]) -> None:
        self.tx = tx
        self.heads_before = heads
        self.base_index = base_index
        # The transaction's own copy, edited along with the document so reads
        # inside the change never ask the binding for a counter.
        self.index = base_index.copy()
        self.reader = Reader(tx, self.index)
        self.open = True

    def check(self) -> None:
        if not self.open:
            raise DocumentError(
                "this change is over: edit the document in a new `with doc.change() as d:` block"
            )

    def put(self, obj: bytes, prop: str | int, value: Any, *, insert: bool = False) -> None:
        value = _storable(value)
        # Refuse a bad value before writing any of it: a caller that catches
        # the error inside the change must not be left with half a value.
        check_value(value)
        put_value(self.tx, obj, prop, value, insert=insert)
        key = obj_key(obj)
        if insert:
            assert isinstance(prop, int)
            self.index.insert(key, prop, [None])
        else:
            self.index.put(key, prop, None)

    def delete(self, obj: bytes, prop: str | int) -> None:
        self.tx.delete(obj, prop)
        self.index.delete(obj_key(obj), prop)

    def increment(self, obj: bytes, prop: str | int, by: int) -> None:
        if isinstance(by, bool) or not isinstance(by, int):
            raise TypeError(f"increment by an int, not {type(by).__name__}")
        check_int(by)
        key = obj_key(obj)
        if not isinstance(self.index.lookup(key, prop), _IndexedCounter):
            raise TypeError(
                f"{prop!r} is not a counter: only counters can be incremented, and only "
                "JavaScript peers can create them (the automerge binding cannot)"
            )
        self.tx.increment(obj, prop, by)
        self.index.increment(key, prop, by)

    def splice_text(self, text: bytes, index: int, delete: int, insert: str) -> None:
        if not isinstance(insert, str):
            raise TypeError(f"insert a str, not {type(insert).__name__}")
        length = self.reader.length(text)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= length:
            raise IndexError(f"text position {index!r} is outside 0..{length}")
        if isinstance(delete, bool) or not isinstance(delete, int) or delete < 0:
            raise ValueError(f"delete a number of characters >= 0, not {delete!r}")
        if index + delete > length:
            raise IndexError(f"cannot delete {delete} characters at {index} of {length}")
        remove = self.tx.delete
        for _ in range(delete):
            remove(text, index)
        insert_text(self.tx, text, index, insert)

    def wrap(self, item: Any, obj: bytes, prop: str | int) -> Any:
        """What a read inside a change returns for ``item``."""
        if isinstance(item, ObjectRef):
            if item.kind == am.ObjType.Map:
                return MutableMap(self, item.id)
            if item.kind == am.ObjType.List:
                return MutableList(self, item.id)
            return MutableText(self, item.id)
        if isinstance(item, Counter):
            return MutableCounter(self, obj, prop)
        return item

    def text_of(self, obj: bytes, prop: str | int) -> bytes:
        item = self.reader.get(obj, prop)
        if not (isinstance(item, ObjectRef) and item.kind == am.ObjType.Text):
            raise TypeError(
                f"{prop!r} is not text (it is {type(self.wrap(item, obj, prop)).__name__}); "
                "assign a str to make it text"
            )
        return item.id


def _storable(value: Any) -> Any:
    """``value`` with every view and proxy replaced by plain Python, ready to write.

    Copying a map or list out of a document copies its current content
    (counters as integers); a counter by itself cannot be copied, as that
    would create a new counter.
    """
    if isinstance(value, MutableCounter):
        raise CounterNotSupported(COUNTER_CREATION_MESSAGE)
    if isinstance(value, MutableText):
        return str(value)
    if isinstance(value, (MapView, ListView, MutableMap, MutableList, Document)):
        return value.to_py()
    if isinstance(value, Mapping):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(item) for item in value]
    return value


class MutableMap(MutableMapping[str, Any]):
    """A map inside an open change: read and write it like a ``dict``.

    ``d[key] = value`` writes any supported value (a ``str`` becomes new text);
    ``del d[key]`` deletes. Nested maps, lists and texts come back as
    :class:`MutableMap`, :class:`MutableList` and :class:`MutableText`,
    counters as :class:`MutableCounter`.
    """

    __slots__ = ("_edit", "_obj")

    def __init__(self, edit: _Edit, obj: bytes) -> None:
        self._edit = edit
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        self._edit.check()
        key = _map_key(key)
        return self._edit.wrap(self._edit.reader.get(self._obj, key), self._obj, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._edit.check()
        self._edit.put(self._obj, check_key(key), value)

    def __delitem__(self, key: str) -> None:
        self._edit.check()
        if key not in self:
            raise KeyError(key)
        self._edit.delete(self._obj, key)

    def __iter__(self) -> Iterator[str]:
        self._edit.check()
        return iter(self._edit.reader.keys(self._obj))

    def __len__(self) -> int:
        self._edit.check()
        return len(self._edit.reader.keys(self._obj))

    def __contains__(self, key: object) -> bool:
        self._edit.check()
        return isinstance(key, str) and self._edit.reader.has(self._obj, key)

    def pop(self, key: str, *default: Any) -> Any:
        """Delete ``key`` and return its value as plain Python (or ``default``)."""
        self._edit.check()
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = _plain(self._edit.reader, self._edit.reader.get(self._obj, key))
        self._edit.delete(self._obj, key)
        return value

    def increment(self, key: str, by: int = 1) -> None:
        """Add ``by`` to the counter at ``key`` (a counter a JavaScript peer made)."""
        self._edit.check()
        self._edit.increment(self._obj, _map_key(key), by)

    def splice_text(self, key: str, index: int, delete: int = 0, insert: str = "") -> None:
        """Splice the text at ``key``: delete ``delete`` characters at ``index``, insert ``insert``.

        Edits the existing text, so concurrent edits by others are kept
        (assigning a new ``str`` would replace the whole text).
        """
        self._edit.check()
        text = self._edit.text_of(self._obj, _map_key(key))
        self._edit.splice_text(text, index, delete, insert)

    def to_py(self) -> dict[str, Any]:
        """This map, as it is inside the change, as plain Python."""
        self._edit.check()
        result: dict[str, Any] = self._edit.reader.to_py(self._obj, am.ObjType.Map)
        return result

    def update_from_pandas(self, path: Path, frame: Any, *, key: str = "id") -> None:
        """Write a pandas DataFrame into the list of maps at ``path`` with the fewest edits.

        Rows are matched by their ``key`` column: only cells whose value
        changed are written, rows with a new key are appended, rows whose
        key the frame lacks are deleted; nothing else is touched, so others'
        concurrent edits to other cells merge. ``path`` is dotted
        (``"data.rows"``) or a tuple; a missing list is made. See
        :mod:`autosync_jupyter.crdt.frames` for types and missing values.

        Raises:
            KeyError: ``path`` is not a list, or the frame lacks ``key``.
            ValueError: a key is missing or repeated.
            ImportError: pandas is not installed
                (``pip install 'autosync-jupyter[pandas]'``).
        """
        self._edit.check()
        write_frame(self, path, frame, key=key)

    def __repr__(self) -> str:
        self._edit.check()
        return f"MutableMap({_one_line(self._edit.reader, self._obj, am.ObjType.Map)})"


class MutableList(MutableSequence[Any]):
    """A list inside an open change: read and write it like a ``list``.

    Indexing, ``append``, ``insert``, ``extend``, ``pop``, ``remove``,
    ``del l[i]`` and ``l[i] = value`` work as for lists (slices can be read
    and deleted, not assigned).
    """

    __slots__ = ("_edit", "_obj")

    def __init__(self, edit: _Edit, obj: bytes) -> None:
        self._edit = edit
        self._obj = obj

    def __len__(self) -> int:
        self._edit.check()
        return self._edit.reader.length(self._obj)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        length = len(self)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(length))]
        position = _list_index(index, length)
        return self._edit.wrap(self._edit.reader.get(self._obj, position), self._obj, position)

    @overload
    def __setitem__(self, index: int, value: Any) -> None: ...

    @overload
    def __setitem__(self, index: slice, value: Any) -> None: ...

    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            raise TypeError("slice assignment is not supported: use del, insert or extend")
        self._edit.put(self._obj, _list_index(index, len(self)), value)

    @overload
    def __delitem__(self, index: int) -> None: ...

    @overload
    def __delitem__(self, index: slice) -> None: ...

    def __delitem__(self, index: int | slice) -> None:
        length = len(self)
        if isinstance(index, slice):
            # From the back, so the positions still to delete do not move.
            for position in sorted(range(*index.indices(length)), reverse=True):
                self._edit.delete(self._obj, position)
            return
        self._edit.delete(self._obj, _list_index(index, length))

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index`` (clamped to the list, as ``list.insert`` does)."""
        length = len(self)
        position = operator.index(index)
        if position < 0:
            position = max(0, position + length)
        self._edit.put(self._obj, min(position, length), value, insert=True)

    def pop(self, index: int = -1) -> Any:
        """Delete the element at ``index`` and return it as plain Python."""
        position = _list_index(index, len(self))
        value = _plain(self._edit.reader, self._edit.reader.get(self._obj, position))
        self._edit.delete(self._obj, position)
        return value

    def increment(self, index: int, by: int = 1) -> None:
        """Add ``by`` to the counter at ``index`` (a counter a JavaScript peer made)."""
        self._edit.increment(self._obj, _list_index(index, len(self)), by)

    def splice_text(self, index: int, position: int, delete: int = 0, insert: str = "") -> None:
        """Splice the text at list ``index`` (see :meth:`MutableMap.splice_text`)."""
        item = _list_index(index, len(self))
        self._edit.splice_text(self._edit.text_of(self._obj, item), position, delete, insert)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes, bytearray)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def to_py(self) -> list[Any]:
        """This list, as it is inside the change, as plain Python."""
        self._edit.check()
        result: list[Any] = self._edit.reader.to_py(self._obj, am.ObjType.List)
        return result

    def __repr__(self) -> str:
        self._edit.check()
        return f"MutableList({_one_line(self._edit.reader, self._obj, am.ObjType.List)})"


class MutableText:
    """A text inside an open change; :meth:`splice` edits it in place.

    ``str(t)`` is its content; it compares equal to that ``str``.
    """

    __slots__ = ("_edit", "_obj")

    def __init__(self, edit: _Edit, obj: bytes) -> None:
        self._edit = edit
        self._obj = obj

    def splice(self, index: int, delete: int = 0, insert: str = "") -> None:
        """Delete ``delete`` characters from ``index``, then insert ``insert`` there.

        Positions count code points. Others' concurrent edits elsewhere in the
        text are kept when the changes merge.
        """
        self._edit.check()
        self._edit.splice_text(self._obj, index, delete, insert)

    def update(self, new: str) -> None:
        """Make the text ``new`` by splicing only what differs.

        The common start and end are kept, so concurrent edits there merge
        (rather than the whole text being replaced).

        >>> doc = Document({"t": "hello world"})
        >>> with doc.change() as d:
        ...     d["t"].update("hello there world")
        >>> doc["t"]
        'hello there world'
        """
        old = str(self)
        if old == new:
            return
        limit = min(len(old), len(new))
        start = 0
        while start < limit and old[start] == new[start]:
            start += 1
        end = 0
        while end < limit - start and old[-1 - end] == new[-1 - end]:
            end += 1
        self.splice(start, len(old) - start - end, new[start : len(new) - end])

    def __str__(self) -> str:
        self._edit.check()
        return self._edit.reader.text(self._obj)

    def __len__(self) -> int:
        self._edit.check()
        return self._edit.reader.length(self._obj)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, MutableText)):
            return str(self) == str(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MutableText({str(self)!r})"


class MutableCounter:
    """A counter inside an open change: :meth:`increment` it, or read it as an ``int``."""

    __slots__ = ("_edit", "_obj", "_prop")

    def __init__(self, edit: _Edit, obj: bytes, prop: str | int) -> None:
        self._edit = edit
        self._obj = obj
        self._prop = prop

    @property
    def value(self) -> int:
        """The counter's value, including increments made in this change."""
        self._edit.check()
        return int(self._edit.reader.get(self._obj, self._prop))

    def increment(self, by: int = 1) -> None:
        """Add ``by`` (which may be negative) to the counter."""
        self._edit.check()
        self._edit.increment(self._obj, self._prop, by)

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MutableCounter):
            return self.value == other.value
        if isinstance(other, int):
            return self.value == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MutableCounter({self.value})"


def _plain(reader: Reader, item: Any) -> Any:
    if isinstance(item, ObjectRef):
        return reader.to_py(item.id, item.kind)
    if isinstance(item, Counter):
        return int(item)
    return item


# -- the document -----------------------------------------------------------------------


class Document(Mapping[str, Any]):
    """An Automerge document: read it like a ``dict``, edit it with :meth:`change`.

    Args:
        initial: content for a new document, written as its first change.
            Without it the document is empty, but still has one (empty)
            change, so it has heads and can be announced to peers.
        core: wrap an existing ``automerge.core.Document`` as it is (for
            example one received from a peer) instead of making a new one.

    Reading returns live, read-only views for nested maps and lists
    (:class:`MapView`, :class:`ListView`), ``str`` for text and
    :class:`Counter` for counters; :meth:`to_py` copies everything out as
    plain Python. ``doc == other_doc`` compares heads; ``doc == {...}``
    compares content.
    """

    def __init__(
        self, initial: Mapping[str, Any] | None = None, *, core: am.Document | None = None
    ) -> None:
        if core is not None:
            if initial is not None:
                raise TypeError("give a Document either initial content or core=, not both")
            if not isinstance(core, am.Document):
                raise TypeError(
                    f"core must be an automerge.core.Document, not {type(core).__name__}"
                )
            self._core = core
        else:
            if initial is not None and not isinstance(initial, Mapping):
                raise TypeError(f"a document's content is a mapping, not {type(initial).__name__}")
            self._core = stamp_new(new_document(_storable(initial) if initial else None))
        self._tracker = Tracker(self._core)
        self._stamper = Stamper(self._core)
        self._listeners: list[Listener] = []
        self._edit: _Edit | None = None
        # Why this document cannot be changed (a past version), or None.
        self._read_only: str | None = None

    # -- the binding document

    @property
    def core(self) -> am.Document:
        """The wrapped ``automerge.core.Document``.

        For sync code: apply sync messages to it, then call :meth:`notify` so
        listeners hear of it. Never read values from it directly (counters
        make the binding panic); read through this object.
        """
        return self._core

    @classmethod
    def load(cls, data: bytes) -> Document:
        """A document from the bytes of :meth:`save` (or a snapshot plus change chunks).

        Raises:
            DocumentError: ``data`` is not an Automerge document.
        """
        try:
            core = am.Document.load(bytes(data))
        except Exception as exc:
            raise DocumentError(f"these bytes are not an Automerge document: {exc}") from None
        return cls(core=core)

    def save(self) -> bytes:
        """The whole document (its full history), compacted, as bytes."""
        self._check_no_change("save")
        return self._core.save()

    @property
    def heads(self) -> list[bytes]:
        """The hashes of the latest changes: the document's version."""
        return self._core.get_heads()

    def fork(self, heads: Iterable[bytes] | None = None) -> Document:
        """An independent copy (with its own actor) that can be edited and merged back.

        With ``heads`` (change hashes, e.g. from ``parse_automerge_url``) the
        copy is the document as it was at that version.

        >>> doc = Document({"v": 1})
        >>> first = doc.heads
        >>> with doc.change() as d:
        ...     d["v"] = 2
        >>> doc.fork(first).to_py(), doc.to_py()
        ({'v': 1}, {'v': 2})

        Raises:
            KeyError: ``heads`` names a change this document does not have.
        """
        self._check_no_change("fork")
        if heads is None:
            return Document(core=self._core.fork())
        wanted = [bytes(head) for head in heads]
        try:
            return Document(core=self._core.fork(wanted))
        except Exception:  # the binding says "invalid hash ..." for an unknown change
            shown = ", ".join(encode_heads(wanted)) if all(len(h) == 32 for h in wanted) else "?"
            raise KeyError(f"this document has no change with the heads {shown}") from None

    def merge(self, other: Document) -> None:
        """Add ``other``'s changes to this document (listeners hear ``origin="local"``)."""
        if not isinstance(other, Document):
            raise TypeError(f"merge a Document, not {type(other).__name__}")
        if other is self:
            return
        if self._read_only is not None:
            raise DocumentError(self._read_only)
        self._check_no_change("merge")
        other._check_no_change("merge")
        before = self.heads
        self._core.merge(other._core)
        self.notify("local", before)

    # -- reading

    def _reader(self) -> Reader:
        edit = self._edit
        if edit is not None:
            # Inside a change, the document reads as it was before it: the
            # binding cannot list changes (or diff) while a transaction is open.
            return Reader(self._core, edit.base_index, heads=edit.heads_before)
        return Reader(self._core, self._tracker.current(), document=self._core)

    def __getitem__(self, key: str) -> Any:
        return _view(self, self._reader().get(am.ROOT, _map_key(key)))

    def __iter__(self) -> Iterator[str]:
        return iter(self._reader().keys(am.ROOT))

    def __len__(self) -> int:
        return len(self._reader().keys(am.ROOT))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._reader().has(am.ROOT, key)

    def to_py(self) -> dict[str, Any]:
        """The whole document as plain Python (a new ``dict``).

        Counters come back as ``int``, text as ``str``, timestamps as aware
        UTC ``datetime``, byte arrays as ``bytes``.
        """
        result: dict[str, Any] = self._reader().to_py()
        return result

    def to_pandas(self, path: Path) -> Any:
        """The list of maps at ``path`` as a pandas DataFrame (one column per key).

        ``path`` is dotted (``"data.rows"``) or a tuple (``("data", "rows")``).
        Types are kept: ints, floats, booleans, strings, timestamps
        (``datetime64[ns, UTC]``); rows lacking a key give missing values in
        a nullable column. Write a frame back with
        :meth:`MutableMap.update_from_pandas`.

        Raises:
            KeyError: ``path`` does not lead to a list.
            TypeError: a row is not a map.
            ImportError: pandas is not installed
                (``pip install 'autosync-jupyter[pandas]'``).
        """
        rows = walk(self, path)
        if not isinstance(rows, ListView):
            raise KeyError(f"{path!r} is not a list of maps (it is a {type(rows).__name__})")
        return frame_of(rows.to_py(), where=repr(path))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Document):
            return sorted(self.heads) == sorted(other.heads)
        if isinstance(other, Mapping):
            return self.to_py() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- editing

    @contextlib.contextmanager
    def change(self, message: str | None = None) -> Iterator[MutableMap]:
        """Edit the document: one ``with`` block is one Automerge change.

        >>> doc = Document({"n": 1})
        >>> with doc.change() as d:
        ...     d["n"] += 1
        ...     d["tags"] = ["a"]
        >>> doc.to_py()
        {'n': 2, 'tags': ['a']}

        If the block raises, nothing of it is kept (the exception goes on).
        A block that changes nothing makes no change. After the block,
        listeners hear of the change with ``origin="local"``.

        The change records the time it was made and ``message``, as
        JavaScript's ``change(doc, {message}, fn)`` does, for
        :meth:`history` and for every peer (see :mod:`.stamp`: in a document
        beyond :attr:`stamp_limit` operations, only a change with a message
        gets its time).

        Args:
            message: what the change is about (shown in histories).

        Raises:
            DocumentError: a change of this document is already open, or
                this is a past version (:meth:`at`).
        """
        if self._read_only is not None:
            raise DocumentError(self._read_only)
        if self._edit is not None:
            raise DocumentError(
                "a change of this document is already open: make all edits in one "
                "`with doc.change() as d:` block"
            )
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a change message is a str, not {type(message).__name__}")
        base = self._tracker.current()
        before = self._core.get_heads()
        # Stamped changes are made on a copy (see .stamp); a panic inside the
        # block then harms only the copy.
        workspace = self._stamper.workspace() if self._stamper.wanted(message) else None
        tx = (workspace if workspace is not None else self._core).transaction()
        edit = self._edit = _Edit(tx, base, before)
        try:
            yield MutableMap(edit, am.ROOT)
        except BaseException as exc:
            edit.open = False
            self._edit = None
            tx.__exit__(type(exc), exc, exc.__traceback__)  # rolls back
            raise
        edit.open = False
        self._edit = None
        tx.__exit__(None, None, None)  # commits
        if workspace is not None:
            self._stamper.apply(workspace, before, message)
        self.notify("local", before)

    @property
    def stamp_limit(self) -> int | None:
        """Up to how many operations every change of this document gets its time.

        Beyond it only changes with a message do (stamping copies the
        document, see :mod:`.stamp`); ``None`` stamps every change.
        """
        return self._stamper.limit

    @stamp_limit.setter
    def stamp_limit(self, limit: int | None) -> None:
        self._stamper.limit = limit

    # -- history

    def history(self) -> History:
        """The document's changes, oldest first (causal order), as :class:`ChangeRecord` s.

        Lazy: records are read as they are used, so ``doc.history()[-20:]``
        is cheap even for a long history.

        >>> doc = Document({"n": 1})
        >>> with doc.change(message="n is 2") as d:
        ...     d["n"] = 2
        >>> [record.message for record in doc.history()]
        [None, 'n is 2']
        """
        self._check_no_change("read the history")
        return History(self._core.get_changes([]))

    def at(self, heads: Any) -> Document:
        """The document as it was at ``heads``: a read-only copy.

        ``heads`` is a list of change hashes (32 bytes, hex or bs58 strings,
        e.g. :attr:`ChangeRecord.hash <autosync_jupyter.ChangeRecord>`) or an
        ``automerge:<id>#<heads>`` URL. To go back to that version, write its
        content in a new change (history is never rewritten); to edit from
        there, use :meth:`fork`.

        >>> doc = Document({"v": 1})
        >>> first = doc.history()[-1].hash
        >>> with doc.change() as d:
        ...     d["v"] = 2
        >>> doc.at([first])["v"], doc["v"]
        (1, 2)

        Raises:
            KeyError: a head names a change this document does not have.
            ValueError: ``heads`` holds something that is not a change hash.
        """
        wanted = parse_heads(heads)
        past = self.fork(wanted)
        shown = ", ".join(head.hex()[:12] for head in wanted) or "the start"
        past._read_only = (
            f"this is the document as it was at {shown}, a past version, and cannot be "
            "changed: change the document itself (or a doc.fork(heads) to edit from there)"
        )
        return past

    def diff(self, from_heads: Any, to_heads: Any = None) -> list[Patch]:
        """What changed from version ``from_heads`` to ``to_heads`` (default: now), as patches.

        Versions are given as for :meth:`at` (``[]`` is the empty document);
        each :class:`Patch` has a path, an action and a value. A patch that
        cannot be read comes as action ``"unknown"``, the binding's text of it
        as the value.

        >>> doc = Document({"n": 1})
        >>> start = doc.heads
        >>> with doc.change() as d:
        ...     d["n"] = 2
        ...     d["tags"] = ["a"]
        >>> for patch in doc.diff(start):
        ...     print(patch)
        put n: 2
        put tags: []
        insert tags/0: ['']
        splice tags/0/0: 'a'

        (Strings are text: a new one is inserted empty, then filled.)

        Raises:
            KeyError: a head names a change this document does not have.
            ValueError: a version holds something that is not a change hash.
        """
        self._check_no_change("diff")
        start = parse_heads(from_heads)
        end = self._core.get_heads() if to_heads is None else parse_heads(to_heads)
        return diff(self._core, start, end)

    def _check_no_change(self, action: str) -> None:
        if self._edit is not None:
            raise DocumentError(f"cannot {action} while a change is open: finish the `with` block")

    # -- listeners

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` after every change; returns a function that stops it.

        A listener that raises is logged (``autosync_jupyter.document``) and
        does not stop the others.

        >>> doc = Document()
        >>> stop = doc.add_listener(lambda event: print(event.origin))
        >>> with doc.change() as d:
        ...     d["x"] = 1
        local
        >>> stop()
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, origin: Origin, before: list[bytes]) -> None:
        """Tell listeners the document moved on from heads ``before``, if it did.

        Whoever changes :attr:`core` directly calls this afterwards (a
        connection after applying sync messages, with ``origin="remote"``).
        """
        if origin not in ("local", "remote"):
            raise ValueError(f"origin is 'local' or 'remote', not {origin!r}")
        after = self.heads
        if after == before:
            return
        event = ChangeEvent(self, origin, list(before), after)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a listener of a document failed")

    # -- display

    def __repr__(self) -> str:
        if self._edit is None and not self._core.get_heads():
            return "Document(no changes)"
        reader = self._reader()
        count = len(self.heads)
        lines = _tree_lines(reader, am.ROOT, am.ObjType.Map)
        heads = f"{count} head{'s' * (count != 1)}"
        lines.insert(0, f"Document({heads})" if lines else f"Document({heads}, empty)")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if not cycle else "Document(...)")

    def _repr_html_(self) -> str:
        count = len(self.heads)
        return _html(
            self._reader(), am.ROOT, am.ObjType.Map, f"Document · {count} head{'s' * (count != 1)}"
        )


# -- display helpers ----------------------------------------------------------------------

_PREVIEW_LINES = 30
_PREVIEW_ITEMS = 5
_PREVIEW_DEPTH = 4
_PREVIEW_WIDTH = 60
_ONE_LINE_WIDTH = 200
_HTML_ITEMS = 100
_HTML_NODES = 1000


#: Longest title :func:`document_title` gives.
TITLE_LENGTH = 200


def document_title(core: am.Document) -> str | None:
    """What a person calls a document: its top-level ``title`` (else ``name``) text.

    A string or a text object counts (cut to 200 characters); anything else,
    or neither key, gives None.

    >>> doc = Document({"name": "draft", "n": 1})
    >>> document_title(doc.core), document_title(Document({"title": 5}).core)
    ('draft', None)
    """
    for key in ("title", "name"):
        found = core.get(am.ROOT, key)
        if found is None:
            continue
        value, obj = found
        if value == am.ObjType.Text:
            text: str = core.text(obj)
            return text[:TITLE_LENGTH]
        if isinstance(value, tuple) and value[0] == am.ScalarType.Str:
            return str(value[1])[:TITLE_LENGTH]
    return None


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _label(prop: str | int) -> str:
    if isinstance(prop, int):
        return f"[{prop}]"
    return prop if prop.isprintable() and prop and ":" not in prop else repr(prop)


def _describe_value(reader: Reader, item: Any) -> str:
    """One value, in a few words."""
    if isinstance(item, ObjectRef):
        if item.kind == am.ObjType.Map:
            size = len(reader.keys(item.id))
            return f"map ({size} key{'s' * (size != 1)})"
        if item.kind == am.ObjType.List:
            size = reader.length(item.id)
            return f"list ({size} item{'s' * (size != 1)})"
        return _shorten(repr(reader.text(item.id)), _PREVIEW_WIDTH) + " (text)"
    if isinstance(item, dt.datetime):
        return item.isoformat()
    return _shorten(repr(item), _PREVIEW_WIDTH)


def _props(reader: Reader, obj: bytes, kind: am.ObjType) -> list[str | int]:
    if kind == am.ObjType.Map:
        return list(reader.keys(obj))
    return list(range(reader.length(obj)))


def _tree_lines(reader: Reader, obj: bytes, kind: am.ObjType) -> list[str]:
    """An indented outline of ``obj``: at most :data:`_PREVIEW_LINES` lines, and a
    few items of each nested map or list, so every top-level key shows."""
    lines: list[str] = []

    def walk(obj: bytes, kind: am.ObjType, depth: int) -> None:
        props = _props(reader, obj, kind)
        shown = len(props) if depth == 1 else min(len(props), _PREVIEW_ITEMS)
        for done, prop in enumerate(props[:shown]):
            if len(lines) >= _PREVIEW_LINES:
                shown = done
                break
            item = reader.get(obj, prop)
            lines.append("  " * depth + f"{_label(prop)}: {_describe_value(reader, item)}")
            nested = isinstance(item, ObjectRef) and item.kind != am.ObjType.Text
            if nested and depth < _PREVIEW_DEPTH:
                walk(item.id, item.kind, depth + 1)
        if shown < len(props):
            lines.append("  " * depth + f"… ({len(props) - shown} more)")

    walk(obj, kind, 1)
    return lines


def _one_line(reader: Reader, obj: bytes, kind: am.ObjType) -> str:
    """A ``repr`` of ``obj``'s plain value, cut to one readable line."""
    parts: list[str] = []
    width = 0
    opening, closing = ("{", "}") if kind == am.ObjType.Map else ("[", "]")
    for prop in _props(reader, obj, kind):
        item = reader.get(obj, prop)
        if not isinstance(item, ObjectRef):
            value = repr(item)
        elif item.kind == am.ObjType.Text:
            value = repr(reader.text(item.id))
        else:
            value = _describe_value(reader, item)
        part = f"{prop!r}: {value}" if isinstance(prop, str) else value
        if width + len(part) > _ONE_LINE_WIDTH:
            parts.append("…")
            break
        parts.append(part)
        width += len(part) + 2
    return opening + ", ".join(parts) + closing


def _html(reader: Reader, obj: bytes, kind: am.ObjType, title: str) -> str:
    """A collapsible tree (``<details>``), self-contained: no scripts, no stylesheets."""
    nodes = 0
    out: list[str] = []
    ul = '<ul style="list-style:none;margin:0;padding-left:1.2em">'

    def summary(item: ObjectRef) -> str:
        return html.escape(_describe_value(reader, item))

    def walk(obj: bytes, kind: am.ObjType) -> None:
        nonlocal nodes
        out.append(ul)
        props = _props(reader, obj, kind)
        for done, prop in enumerate(props):
            if done >= _HTML_ITEMS or nodes >= _HTML_NODES:
                out.append(f"<li>… {len(props) - done} more</li>")
                break
            nodes += 1
            item = reader.get(obj, prop)
            label = f"<b>{html.escape(_label(prop))}</b>: "
            if isinstance(item, ObjectRef) and item.kind != am.ObjType.Text:
                out.append(f"<li><details><summary>{label}{summary(item)}</summary>")
                walk(item.id, item.kind)
                out.append("</details></li>")
            else:
                value = reader.text(item.id) if isinstance(item, ObjectRef) else item
                kind_note = " <small>text</small>" if isinstance(item, ObjectRef) else ""
                if isinstance(item, Counter):
                    kind_note = " <small>counter</small>"
                out.append(f"<li>{label}<code>{html.escape(repr(value))}</code>{kind_note}</li>")
        out.append("</ul>")

    out.append(f"<details open><summary>{html.escape(title)}</summary>")
    walk(obj, kind)
    out.append("</details>")
    return '<div class="autosync-document">' + "".join(out) + "</div>"
