"""Lists of maps as pandas data frames, and frames written back as the fewest edits.

A list of maps (rows) is a table: ``Document.to_pandas("path.to.list")``
makes it a ``DataFrame`` with one column per key, and
``d.update_from_pandas("path.to.list", df, key="id")`` (inside
``with doc.change() as d:``) writes a frame back. Writing back puts only the
cells whose value changed, appends the rows whose key is new and deletes the
rows whose key is gone; everything else is left alone, so what others
change concurrently in other cells (or in keys the frame does not have)
merges instead of being overwritten. A changed text is spliced where it
differs (one operation per character deleted or inserted), a changed
counter incremented by the difference.

Types survive the round trip: a column of ints is ``int64``, of floats
``float64``, of booleans ``bool``, of strings ``string``, of timestamps
``datetime64[ns, UTC]``; a column where some rows lack the key (or hold
null) uses the nullable dtype (``Int64``, ``Float64``, ``boolean``, ``NaT``
for timestamps), and a missing value written back leaves the key absent
(deleting it if it had a value). Anything else (nested maps and lists,
bytes, mixed types) is an ``object`` column of plain Python values.

pandas is optional (``pip install 'autosync-jupyter[pandas]'``): it is
imported only when a frame is made or written.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any, Final

__all__ = ["frame_of", "path_parts", "walk", "write_frame"]

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_UTC: Final = dt.timezone.utc
_MISSING: Final = object()

Path = str | Sequence[str | int]


def pandas() -> Any:
    """The ``pandas`` module, or an ImportError that says how to get it."""
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise ImportError(
            "data frames need pandas, an optional dependency: "
            "pip install 'autosync-jupyter[pandas]' (or pip install pandas)"
        ) from None


# -- paths --------------------------------------------------------------------------------


def path_parts(path: Path) -> tuple[str | int, ...]:
    """``"a.b.0"`` or ``("a", "b", 0)`` as a tuple of steps.

    Steps of a dotted path are strings; a step into a list is read as an
    index when the walk gets there.
    """
    if isinstance(path, str):
        if not path:
            raise ValueError("give a path to a list: 'rows' or 'data.rows' or ('data', 'rows')")
        return tuple(path.split("."))
    parts = tuple(path)
    if not parts:
        raise ValueError("give a path to a list: 'rows' or 'data.rows' or ('data', 'rows')")
    return parts


def _step(node: Any, part: str | int, done: tuple[str | int, ...]) -> Any:
    where = ".".join(str(p) for p in (*done, part))
    if isinstance(node, Mapping):
        try:
            return node[str(part)]
        except KeyError:
            raise KeyError(f"no {where!r} in the document") from None
    if isinstance(node, Sequence) and not isinstance(node, str):
        try:
            return node[int(part)]
        except (ValueError, IndexError):
            raise KeyError(f"no {where!r} in the document (a list has positions)") from None
    raise KeyError(f"{'.'.join(map(str, done))!r} holds a value, not a map or list")


def walk(root: Any, path: Path) -> Any:
    """What ``path`` leads to from ``root`` (a map view or a map inside a change).

    Raises:
        KeyError: a step of the path is not there.
    """
    parts = path_parts(path)
    node = root
    for done, part in enumerate(parts):
        node = _step(node, part, parts[:done])
    return node


# -- to a frame ---------------------------------------------------------------------------


def _column(pd: Any, values: list[Any]) -> Any:
    """A Series of ``values`` (``_MISSING`` where a row lacks the key) with a kept type."""
    present = [v for v in values if v is not _MISSING and v is not None]
    gaps = len(present) != len(values)
    plain = [None if v is _MISSING else v for v in values]
    if not present:
        return pd.Series(plain, dtype=object)
    kinds = {type(v) for v in present}
    if kinds == {bool}:
        return pd.Series(plain, dtype="boolean" if gaps else bool)
    if not kinds - {int, float} and bool not in kinds:
        if kinds == {int} and all(-(2**63) <= v < 2**63 for v in present):
            return pd.Series(plain, dtype="Int64" if gaps else "int64")
        numbers = [None if v is None else float(v) for v in plain]
        return pd.Series(numbers, dtype="Float64" if gaps else "float64")
    if kinds == {str}:
        return pd.Series(plain, dtype="string")
    if all(issubclass(kind, dt.datetime) for kind in kinds):
        # A document's timestamps read as aware UTC already; naive ones count as UTC.
        return pd.Series(pd.to_datetime(plain, utc=True)).astype("datetime64[ns, UTC]")
    return pd.Series(plain, dtype=object)


def frame_of(rows: Sequence[Any], *, where: str = "the list") -> Any:
    """A DataFrame of ``rows`` (maps as plain Python): one column per key, types kept.

    Columns come in the order their keys first appear.

    Raises:
        TypeError: a row is not a map.
        ImportError: pandas is not installed.
    """
    pd = pandas()
    order: dict[str, None] = {}
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"row {number} of {where} is a {type(row).__name__}, not a map: "
                "a data frame needs a list of maps"
            )
        order.update(dict.fromkeys(row))
    columns = {name: _column(pd, [row.get(name, _MISSING) for row in rows]) for name in order}
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))


# -- from a frame -------------------------------------------------------------------------


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` as aware UTC in whole milliseconds, what a document stores."""
    value = value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _python(pd: Any, value: Any) -> Any:
    """A cell of a frame as the plain Python value a document stores (or ``_MISSING``)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return _MISSING
    if isinstance(value, pd.Timestamp):
        # .value is nanoseconds since the epoch in UTC (naive: taken as UTC).
        stamp = value if value.tzinfo is None else value.tz_convert("UTC")
        return _EPOCH + dt.timedelta(milliseconds=int(stamp.value) // 1_000_000)
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # numpy's int64, float64, bool_ as int, float, bool
    if isinstance(value, float) and math.isnan(value):
        return _MISSING
    if isinstance(value, dt.datetime):
        return _utc(value)
    return value


def _same(old: Any, new: Any) -> bool:
    """Whether writing ``new`` over ``old`` would change nothing a reader sees."""
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new) and old == new
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        both_nan = isinstance(old, float) and isinstance(new, float)
        return old == new or (both_nan and math.isnan(old) and math.isnan(new))
    if isinstance(old, dt.datetime) and isinstance(new, dt.datetime):
        return _utc(old) == _utc(new)
    return type(old) is type(new) and bool(old == new)


def _key_of(value: Any, what: str) -> Any:
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"{what} is a {type(value).__name__}, which cannot be a key") from None
    return value


def write_frame(root: MutableMapping[str, Any], path: Path, frame: Any, *, key: str) -> None:
    """Write ``frame`` into the list of maps at ``path`` of ``root`` with the fewest edits.

    ``root`` is a map inside an open change (a ``MutableMap``). Rows are
    matched by their ``key`` column: a changed cell is put (a counter is
    incremented by the difference, a text spliced where it differs), a
    missing value deletes the key, a row
    with a new key is appended (in frame order), a row whose key the frame
    lacks is deleted. Cells, keys and rows the frame does not mention are
    not touched; rows of the list without ``key`` are kept as they are.
    The list is made (empty, then filled) if ``path`` ends at a missing key.

    Raises:
        KeyError: the path does not lead to a list, or the frame has no
            ``key`` column.
        ValueError: a key is missing or repeated, in the frame or the list.
        ImportError: pandas is not installed.
    """
    pd = pandas()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"write a pandas DataFrame, not {type(frame).__name__}")
    columns = [str(name) for name in frame.columns]
    if len(set(columns)) != len(columns):
        raise ValueError("the frame has repeated column names")
    if key not in columns:
        raise KeyError(f"the frame has no {key!r} column to match rows by (key={key!r})")
    parts = path_parts(path)
    parent = walk(root, parts[:-1]) if len(parts) > 1 else root
    last = parts[-1]
    if isinstance(parent, MutableMapping) and str(last) not in parent:
        parent[str(last)] = []
    rows = _step(parent, last, parts[:-1])
    if not isinstance(rows, MutableSequence):
        raise KeyError(f"{'.'.join(map(str, parts))!r} is not a list")

    old_rows: list[Any] = rows.to_py() if hasattr(rows, "to_py") else list(rows)
    positions: dict[Any, int] = {}
    for position, row in enumerate(old_rows):
        if isinstance(row, Mapping) and key in row:
            found = _key_of(row[key], f"the {key!r} of row {position} of the list")
            if found in positions:
                raise ValueError(f"the list holds two rows with {key}={found!r}")
            positions[found] = position

    records = [
        {name: _python(pd, value) for name, value in zip(columns, values, strict=True)}
        for values in frame.itertuples(index=False, name=None)
    ]
    # Every key checked before the first edit: a refused frame writes nothing.
    keys: list[Any] = []
    for number, record in enumerate(records):
        if record[key] is _MISSING:
            raise ValueError(f"row {number} of the frame has no {key!r}")
        keys.append(_key_of(record[key], f"the {key!r} of row {number} of the frame"))
    seen: set[Any] = set()
    for found in keys:
        if found in seen:
            raise ValueError(f"the frame holds two rows with {key}={found!r}")
        seen.add(found)
    added: list[dict[str, Any]] = []
    for found, record in zip(keys, records, strict=True):
        at = positions.get(found)
        if at is None:
            added.append({name: v for name, v in record.items() if v is not _MISSING})
        else:
            _update_row(rows, at, old_rows[at], record)
    # From the back, so the positions still to delete do not move.
    for position in sorted((p for k, p in positions.items() if k not in seen), reverse=True):
        del rows[position]
    rows.extend(added)


def _update_row(
    rows: MutableSequence[Any], position: int, old: Mapping[str, Any], record: dict[str, Any]
) -> None:
    target: Any = None
    for name, new in record.items():
        present = name in old
        before = old.get(name)
        if new is _MISSING:
            if present and before is not None:
                target = rows[position] if target is None else target
                del target[name]
            continue
        if present and _same(before, new):
            continue
        target = rows[position] if target is None else target
        current: Any = target.get(name) if present else None
        if (
            hasattr(current, "increment")
            and isinstance(new, int)
            and not isinstance(new, bool)
            and isinstance(before, int)
        ):
            # A counter: add the difference, so others' increments still count.
            current.increment(new - before)
        elif hasattr(current, "splice") and isinstance(new, str) and isinstance(before, str):
            # Text: splice only the part that differs, so concurrent edits to
            # the rest of it merge, and the change holds one op per character.
            current.update(new)
        else:
            target[name] = new
