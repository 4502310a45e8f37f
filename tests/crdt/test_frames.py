"""Lists of maps as pandas data frames, and frames written back as the fewest edits."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from typing import Any

import pytest

from autosync_jupyter import Document, Patch
from tests.ci import skip_or_fail
from tests.crdt.test_document import js_fixture

try:
    import pandas as pd
except ImportError:  # an optional dependency; the test extra installs it
    pd = None


@pytest.fixture(autouse=True)
def _require_pandas() -> None:
    """Skip (locally) or fail (in CI) when pandas is not installed."""
    skip_or_fail(None if pd is not None else "pandas is not installed: pip install -e '.[test]'")


UTC = dt.timezone.utc
WHEN = dt.datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)


def table(rows: int = 5) -> Document:
    """A document with ``rows`` rows of every column type under ``data.rows``."""
    return Document(
        {
            "data": {
                "rows": [
                    {
                        "id": i,
                        "name": f"row {i}",
                        "score": i / 2,
                        "ok": i % 2 == 0,
                        "when": WHEN + dt.timedelta(days=i),
                    }
                    for i in range(rows)
                ]
            }
        }
    )


def last_change_ops(doc: Document, changes_before: int) -> int:
    """The op count of the one change made since the history had ``changes_before``."""
    history = doc.history()
    assert len(history) == changes_before + 1, "expected exactly one new change"
    return history[-1].ops


# -- to a frame -----------------------------------------------------------------------------


def test_to_pandas_keeps_the_types() -> None:
    """ints, floats, bools, strings and timestamps become int64, float64, bool, string, UTC."""
    frame = table().to_pandas("data.rows")
    assert list(frame.columns) == ["id", "name", "ok", "score", "when"]
    assert str(frame["id"].dtype) == "int64"
    assert str(frame["score"].dtype) == "float64"
    assert str(frame["ok"].dtype) == "bool"
    assert str(frame["name"].dtype) == "string"
    assert str(frame["when"].dtype) == "datetime64[ns, UTC]"
    assert frame["when"][2] == pd.Timestamp(WHEN + dt.timedelta(days=2))
    assert frame["name"].tolist() == [f"row {i}" for i in range(5)]
    assert frame["score"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_missing_keys_are_missing_values_in_nullable_columns() -> None:
    """A key some rows lack (or hold null) gives NA in Int64, Float64, boolean, string, NaT."""
    doc = Document(
        {
            "rows": [
                {"id": 1, "n": 1, "x": 1.5, "flag": True, "s": "a", "t": WHEN, "mix": [1]},
                {"id": 2, "n": None},
                {"id": 3, "mix": "text"},
            ]
        }
    )
    frame = doc.to_pandas(("rows",))
    assert str(frame["n"].dtype) == "Int64" and frame["n"].isna().tolist() == [False, True, True]
    assert str(frame["x"].dtype) == "Float64" and frame["x"].isna().sum() == 2
    assert str(frame["flag"].dtype) == "boolean"
    assert frame["flag"].isna().tolist() == [False, True, True]
    assert str(frame["s"].dtype) == "string" and frame["s"].isna().sum() == 2
    assert frame["t"].isna().tolist() == [False, True, True]
    assert str(frame["t"].dtype) == "datetime64[ns, UTC]"
    assert frame["mix"].dtype == object and frame["mix"].tolist() == [[1], None, "text"]


def test_paths_are_dotted_or_tuples_and_reach_into_lists() -> None:
    """'a.b', ('a', 'b') and a list position in the path all work."""
    doc = Document({"sheets": [{"rows": [{"id": 1}]}, {"rows": [{"id": 2}, {"id": 3}]}]})
    assert doc.to_pandas("sheets.1.rows")["id"].tolist() == [2, 3]
    assert doc.to_pandas(("sheets", 0, "rows"))["id"].tolist() == [1]


def test_to_pandas_says_what_is_wrong_with_the_path() -> None:
    """A missing path and a non-list are KeyErrors; a row that is not a map a TypeError."""
    doc = Document({"rows": [{"id": 1}, 5], "n": 1})
    with pytest.raises(KeyError, match="nope"):
        doc.to_pandas("nope")
    with pytest.raises(KeyError, match="not a list"):
        doc.to_pandas("n")
    with pytest.raises(TypeError, match="row 1"):
        doc.to_pandas("rows")
    with pytest.raises(ValueError, match="path"):
        doc.to_pandas("")


def test_an_empty_list_is_an_empty_frame() -> None:
    """No rows: a frame with no rows and no columns."""
    frame = Document({"rows": []}).to_pandas("rows")
    assert frame.shape == (0, 0)


# -- pandas stays optional --------------------------------------------------------------------


def test_importing_the_package_does_not_import_pandas() -> None:
    """`import autosync_jupyter` leaves pandas unimported (it is optional)."""
    code = "import sys, autosync_jupyter; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_pandas_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pandas missing, to_pandas and update_from_pandas raise ImportError naming the extra."""
    doc = table(2)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"autosync-jupyter\[pandas\]"):
        doc.to_pandas("data.rows")
    with pytest.raises(ImportError, match="pandas"), doc.change() as d:
        d.update_from_pandas("data.rows", object())
    assert len(doc.history()) == 1


# -- back from a frame: the fewest edits --------------------------------------------------------


def test_an_unchanged_frame_writes_nothing() -> None:
    """Writing back the frame as read makes no change at all."""
    doc = table(20)
    frame = doc.to_pandas("data.rows")
    with doc.change() as d:
        d.update_from_pandas("data.rows", frame)
    assert len(doc.history()) == 1


def test_only_changed_cells_are_written() -> None:
    """Three changed cells of a 100-row frame are a change of exactly three operations."""
    doc = table(100)
    frame = doc.to_pandas("data.rows")
    frame.loc[frame["id"] == 7, "score"] = 99.5
    frame.loc[frame["id"] == 41, "ok"] = True  # was False
    frame.loc[frame["id"] == 91, "when"] = pd.Timestamp("2030-01-01T00:00:00Z")
    start, changes = doc.heads, len(doc.history())
    with doc.change() as d:
        d.update_from_pandas("data.rows", frame, key="id")
    assert last_change_ops(doc, changes) == 3
    assert sorted(doc.diff(start), key=lambda p: p.path) == [
        Patch(("data", "rows", 7, "score"), "put", 99.5),
        Patch(("data", "rows", 41, "ok"), "put", True),
        Patch(("data", "rows", 91, "when"), "put", dt.datetime(2030, 1, 1, tzinfo=UTC)),
    ]
    assert doc.to_pandas("data.rows").equals(frame)


def test_rows_are_added_and_removed_by_key() -> None:
    """A row with a new key is appended, a row whose key is gone deleted; others untouched."""
    doc = table(5)
    frame = doc.to_pandas("data.rows")
    frame = frame[frame["id"] != 2]
    new = pd.DataFrame({"id": [10], "score": [1.25]})
    frame = pd.concat([frame, new], ignore_index=True)
    changes = len(doc.history())
    with doc.change() as d:
        d.update_from_pandas("data.rows", frame)
    # delete one row; make one map, put id and score (missing cells are left out)
    assert last_change_ops(doc, changes) == 4
    rows = doc["data"]["rows"].to_py()
    assert [row["id"] for row in rows] == [0, 1, 3, 4, 10]
    assert rows[-1] == {"id": 10, "score": 1.25}


def test_a_missing_value_deletes_the_key() -> None:
    """NA in a cell that had a value deletes the key; NA where the key is absent does nothing."""
    doc = Document({"rows": [{"id": 1, "n": 5}, {"id": 2}]})
    frame = doc.to_pandas("rows")
    frame.loc[0, "n"] = pd.NA
    changes = len(doc.history())
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert last_change_ops(doc, changes) == 1
    assert doc.to_py() == {"rows": [{"id": 1}, {"id": 2}]}


def test_numbers_equal_in_value_are_not_rewritten() -> None:
    """An int read back as a float (a column with gaps or floats) is not a change."""
    doc = Document({"rows": [{"id": 1, "v": 1}, {"id": 2, "v": 2.5}]})
    frame = doc.to_pandas("rows")
    assert str(frame["v"].dtype) == "float64"
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert len(doc.history()) == 1
    assert type(doc["rows"][0]["v"]) is int


def test_keys_the_frame_does_not_have_are_left_alone() -> None:
    """Columns missing from the frame and rows without the key are kept as they are."""
    doc = Document({"rows": [{"id": 1, "a": 1, "b": 2}, {"note": "no id"}]})
    frame = doc.to_pandas("rows").drop(columns=["b", "note"]).dropna(subset=["id"])
    frame["a"] = 5
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert doc.to_py() == {"rows": [{"id": 1, "a": 5, "b": 2}, {"note": "no id"}]}


def test_concurrent_edits_to_other_cells_merge() -> None:
    """A peer's edit to another cell, made meanwhile, survives the frame being written."""
    doc = table(10)
    peer = doc.fork()
    frame = doc.to_pandas("data.rows")
    with peer.change(message="peer renames row 3") as d:
        d["data"]["rows"][3]["name"] = "renamed"
    frame.loc[frame["id"] == 5, "score"] = -1.0
    with doc.change(message="frame") as d:
        d.update_from_pandas("data.rows", frame)
    doc.merge(peer)
    rows = doc["data"]["rows"]
    assert rows[3]["name"] == "renamed" and rows[5]["score"] == -1.0


def test_a_counter_cell_is_incremented_by_the_difference(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A JS counter in a row is incremented, so concurrent increments still add up."""
    doc, _ = js_fixture("js_counters")
    with doc.change() as d:
        d["nested"]["deeper"][0]["id"] = 1
    peer = doc.fork()
    frame = doc.to_pandas("nested.deeper")
    assert frame["c"].tolist() == [-3]
    frame.loc[0, "c"] = 10
    start = doc.heads
    with doc.change() as d:
        d.update_from_pandas("nested.deeper", frame)
    assert doc.diff(start) == [Patch(("nested", "deeper", 0, "c"), "increment", 13)]
    with peer.change() as d:
        d["nested"]["deeper"][0]["c"].increment(100)
    doc.merge(peer)
    assert doc["nested"]["deeper"][0]["c"] == 110
    assert "panicked" not in capfd.readouterr().err


def test_a_missing_list_is_made() -> None:
    """Writing a frame to a key that does not exist yet makes the list."""
    doc = Document({"title": "t"})
    with doc.change() as d:
        d.update_from_pandas("rows", pd.DataFrame({"id": [1, 2], "v": [True, False]}))
    assert doc.to_py() == {"title": "t", "rows": [{"id": 1, "v": True}, {"id": 2, "v": False}]}


def test_timestamps_are_written_in_milliseconds_and_compared_so() -> None:
    """Nanoseconds a document cannot hold are dropped, and are no change on their own."""
    doc = Document({"rows": [{"id": 1, "t": WHEN}]})
    frame = doc.to_pandas("rows")
    frame.loc[0, "t"] = frame.loc[0, "t"] + pd.Timedelta(nanoseconds=999)
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert len(doc.history()) == 1
    frame["t"] = [pd.Timestamp("2025-01-01 10:00:00.5")]  # a naive column: taken as UTC
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert doc["rows"][0]["t"] == dt.datetime(2025, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("frame", "error", "match"),
    [
        ({"name": ["a"]}, KeyError, "no 'id' column"),
        ({"id": [1, 1]}, ValueError, "two rows with id=1"),
        ({"id": [1.0, None]}, ValueError, "row 1 of the frame has no 'id'"),
    ],
)
def test_bad_frames_are_refused_before_any_edit(
    frame: dict[str, Any], error: type[Exception], match: str
) -> None:
    """No key column, repeated keys or a row without a key: refused, nothing written."""
    doc = table(3)
    with pytest.raises(error, match=match), doc.change() as d:
        d.update_from_pandas("data.rows", pd.DataFrame(frame))
    assert len(doc.history()) == 1


def test_repeated_keys_in_the_document_are_refused() -> None:
    """Two rows of the list with one key cannot be matched: a ValueError."""
    doc = Document({"rows": [{"id": 1}, {"id": 1}]})
    with pytest.raises(ValueError, match="list holds two rows"), doc.change() as d:
        d.update_from_pandas("rows", pd.DataFrame({"id": [1]}))


def test_a_changed_text_is_spliced_where_it_differs() -> None:
    """A text cell is edited in place (one op per character) and merges with others' edits."""
    doc = Document({"rows": [{"id": 1, "name": "grey cat"}]})
    peer = doc.fork()
    frame = doc.to_pandas("rows")
    frame.loc[0, "name"] = "grey dog"
    changes = len(doc.history())
    with doc.change() as d:
        d.update_from_pandas("rows", frame)
    assert last_change_ops(doc, changes) == 6  # three characters out, three in
    with peer.change() as d:
        d["rows"][0]["name"].splice(0, 0, "big ")
    doc.merge(peer)
    assert doc["rows"][0]["name"] == "big grey dog"
