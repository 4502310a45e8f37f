"""The Document object: reads, edits, every Automerge type, counters, listeners, display."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autosync_jupyter.crdt.document import (
    ChangeEvent,
    Counter,
    Document,
    ListView,
    MapView,
    MutableCounter,
    MutableList,
    MutableMap,
    MutableText,
)
from autosync_jupyter.crdt.values import new_document, to_py
from autosync_jupyter.errors import (
    AutosyncError,
    CounterNotSupported,
    DocumentError,
    UnreadableValue,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
UTC = dt.timezone.utc


def js_fixture(name: str) -> tuple[Document, dict[str, Any]]:
    """A document made by JavaScript (tests/fixtures/make_js_fixtures.mjs) and what JS reads."""
    data = (FIXTURES / f"{name}.automerge").read_bytes()
    return Document.load(data), from_js_json(json.loads((FIXTURES / f"{name}.json").read_text()))


def from_js_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes(value["$bytes"])
        if set(value) == {"$date"}:
            return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=value["$date"])
        return {key: from_js_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_js_json(item) for item in value]
    return value


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True is not 1, 2.0 is not 2)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process in New York time (the binding reads timestamps as local time)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


EVERY_TYPE: dict[str, Any] = {
    "yes": True,
    "no": False,
    "int": 7,
    "negative": -(2**63),
    "big": 2**63 - 1,
    "float": 2.0,
    "fraction": -0.25,
    "none": None,
    "bytes": b"\x00\xffdata",
    "when": dt.datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC),
    "text": "héllo 🌍",
    "empty_text": "",
    "list": [1, "two", 3.0, None, False, [], {}],
    "map": {"nested": {"deeper": [{"k": "v"}]}},
}


# -- types -------------------------------------------------------------------------------


def test_every_type_round_trips() -> None:
    """Each Python type comes back as the same type and value (bool stays bool, 2.0 a float)."""
    doc = Document(EVERY_TYPE)
    assert same(doc.to_py(), EVERY_TYPE)
    assert same(Document.load(doc.save()).to_py(), EVERY_TYPE)


def test_every_type_round_trips_through_change() -> None:
    """Values written inside change() read back exactly, with their types."""
    doc = Document()
    with doc.change() as d:
        for key, value in EVERY_TYPE.items():
            d[key] = value
    assert same(doc.to_py(), EVERY_TYPE)
    assert doc["yes"] is True and type(doc["int"]) is int and type(doc["float"]) is float


def test_timestamps_read_back_aware_utc_in_any_local_zone(local_zone: None) -> None:
    """The binding's naive local times come back as the right aware UTC instant."""
    when = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    doc = Document({"when": when, "offset": when.astimezone(dt.timezone(dt.timedelta(hours=5)))})
    assert doc["when"] == when and doc["when"].tzinfo is UTC
    assert doc["offset"] == when


def test_timestamps_in_a_repeated_local_hour_are_exact(local_zone: None) -> None:
    """Both instants that share the local time 01:30 on the day DST ends read back exactly."""
    first = dt.datetime(2023, 11, 5, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = dt.datetime(2023, 11, 5, 6, 30, tzinfo=UTC)  # 01:30 EST
    doc = Document({"first": first, "second": second, "list": [second]})
    assert doc.to_py() == {"first": first, "second": second, "list": [second]}


def test_naive_datetime_is_written_as_utc() -> None:
    """A datetime without a zone is taken as UTC (and milliseconds are kept)."""
    doc = Document({"when": dt.datetime(2024, 1, 1, 8, 0, 0, 456789)})
    assert doc["when"] == dt.datetime(2024, 1, 1, 8, 0, 0, 456000, tzinfo=UTC)


def test_unsupported_values_are_refused_before_anything_is_written() -> None:
    """A bad value anywhere in a structure raises, and the change writes nothing."""
    doc = Document({"a": 1})
    heads = doc.heads
    with doc.change() as d:
        with pytest.raises(TypeError, match="set"):
            d["x"] = {"ok": 1, "bad": {1, 2}}
        with pytest.raises(TypeError, match="keys"):
            d["y"] = {1: "one"}
        with pytest.raises(ValueError, match="64 bits"):
            d["z"] = [2**64]
        with pytest.raises(ValueError, match="empty"):
            d["w"] = {"": 1}
        with pytest.raises(ValueError, match="empty"):
            d[""] = 1
    assert doc.heads == heads
    assert doc.to_py() == {"a": 1}


def test_js_types_read_as_python() -> None:
    """A JS document reads as JS sees it: ImmutableString as str, 2.0 as int, bytes, dates."""
    doc, expected = js_fixture("js_counters")
    assert doc["label"] == "immutable" and doc["title"] == "hello"
    assert doc["raw"] == b"\x00\x01\xff" and doc["when"] == expected["when"]
    assert doc["flag"] is True and doc["whole"] == 2 and type(doc["whole"]) is int


# -- reading -----------------------------------------------------------------------------


def test_reads_like_dicts_and_lists() -> None:
    """Indexing, len, iteration, in, get, keys/values/items, slices and == all work."""
    doc = Document({"items": [1, {"k": "v"}, "t"], "name": "x"})
    assert len(doc) == 2 and list(doc) == ["items", "name"] and "name" in doc
    assert "nope" not in doc and 3 not in doc  # type: ignore[comparison-overlap]
    assert doc.get("nope", 5) == 5 and list(doc.keys()) == ["items", "name"]
    items = doc["items"]
    assert isinstance(items, ListView) and isinstance(items[1], MapView)
    assert items[0] == 1 and items[-1] == "t" and items[1]["k"] == "v"
    assert items[0:2] == [1, {"k": "v"}] and len(items) == 3
    assert items == [1, {"k": "v"}, "t"] and items != [1]
    assert dict(doc.items())["name"] == "x" and list(doc.values())[1] == "x"
    assert doc["items"][1].to_py() == {"k": "v"} and items.to_py() == [1, {"k": "v"}, "t"]
    with pytest.raises(KeyError):
        doc["missing"]
    with pytest.raises(IndexError):
        items[3]
    with pytest.raises(IndexError):
        items[-4]
    with pytest.raises(TypeError):
        items["0"]  # type: ignore[call-overload]


def test_views_are_live() -> None:
    """A view read before a change shows the document after it."""
    doc = Document({"items": [1]})
    items = doc["items"]
    with doc.change() as d:
        d["items"].append(2)
    assert items == [1, 2]


def test_reading_during_a_change_shows_the_committed_state() -> None:
    """Inside a change, the document reads as before it; the proxy shows the edits."""
    doc = Document({"n": 1})
    with doc.change() as d:
        d["n"] = 2
        assert doc["n"] == 1 and d["n"] == 2
        assert doc.to_py() == {"n": 1}
    assert doc["n"] == 2


# -- editing -----------------------------------------------------------------------------


def test_change_edits_nested_maps_and_lists() -> None:
    """Nested assignment, deletion, insert, extend, pop and slices edit in place."""
    doc = Document({"items": [1, 2, 3], "m": {"a": 1, "b": 2}})
    with doc.change() as d:
        assert isinstance(d, MutableMap)
        items = d["items"]
        assert isinstance(items, MutableList)
        items.append(4)
        items.insert(0, 0)
        items.insert(-1, 3.5)
        items.extend(["x", "y"])
        assert items.pop() == "y"
        items[1] = "one"
        del items[2]
        del items[-2:]
        d["m"]["c"] = {"deep": [True]}
        del d["m"]["a"]
        assert d["m"].pop("b") == 2 and d["m"].pop("zz", None) is None
        d["m"]["c"]["deep"].append(None)
    assert doc.to_py() == {"items": [0, "one", 3, 3.5], "m": {"c": {"deep": [True, None]}}}


def test_list_edit_errors() -> None:
    """Bad positions and slice assignment raise Python's usual errors, and nothing panics."""
    doc = Document({"items": [1]})
    with doc.change() as d:
        with pytest.raises(IndexError):
            d["items"][5] = 1
        with pytest.raises(IndexError):
            del d["items"][-2]
        with pytest.raises(TypeError):
            d["items"][0:1] = [1]
        with pytest.raises(KeyError):
            del d["missing"]
        with pytest.raises(TypeError):
            d[1] = "x"  # type: ignore[index]
    assert doc.to_py() == {"items": [1]}


def test_exception_in_change_rolls_everything_back() -> None:
    """An exception inside the block keeps none of its edits, and propagates."""
    doc = Document({"n": 1})
    heads = doc.heads
    events: list[ChangeEvent] = []
    doc.add_listener(events.append)
    with pytest.raises(RuntimeError, match="boom"), doc.change() as d:
        d["n"] = 2
        d["new"] = ["x"]
        raise RuntimeError("boom")
    assert doc.heads == heads and doc.to_py() == {"n": 1} and events == []
    with doc.change() as d:
        d["n"] = 3
    assert doc["n"] == 3


def test_proxy_is_unusable_after_its_change() -> None:
    """Using the change's proxy after the block raises a clear DocumentError."""
    doc = Document()
    with doc.change() as d:
        d["x"] = 1
    with pytest.raises(DocumentError, match=r"new `with doc\.change\(\) as d:` block"):
        d["y"] = 2


def test_nested_change_and_save_during_change_are_refused() -> None:
    """A second change, save or fork while a change is open raises DocumentError."""
    doc = Document()
    with doc.change():
        with pytest.raises(DocumentError), doc.change():
            pass
        with pytest.raises(DocumentError):
            doc.save()
        with pytest.raises(DocumentError):
            doc.fork()


def test_empty_change_makes_no_change() -> None:
    """A block that edits nothing leaves the heads alone and tells no listener."""
    doc = Document({"a": 1})
    heads = doc.heads
    events: list[ChangeEvent] = []
    doc.add_listener(events.append)
    with doc.change():
        pass
    assert doc.heads == heads and events == []


def test_new_document_has_heads() -> None:
    """An empty Document still has one change, so it can be announced."""
    doc = Document()
    assert len(doc.heads) == 1 and doc.to_py() == {} and len(doc) == 0


def test_wrapping_a_core_document_keeps_it() -> None:
    """core= wraps a binding document as it is, and .core gives it back."""
    core = new_document({"a": 1})
    doc = Document(core=core)
    assert doc.core is core and doc == {"a": 1}
    with pytest.raises(TypeError):
        Document({"a": 1}, core=core)
    with pytest.raises(TypeError):
        Document(["not", "a", "map"])  # type: ignore[arg-type]


def test_copying_values_out_of_a_document() -> None:
    """Assigning a view or proxy copies its plain content into the new place."""
    doc = Document({"m": {"t": "text", "l": [1]}})
    with doc.change() as d:
        d["copy"] = d["m"]
        d["title"] = d["m"]["t"]
        d["view"] = doc["m"]
    assert doc["copy"] == {"t": "text", "l": [1]} and doc["title"] == "text"
    assert doc["view"] == {"t": "text", "l": [1]}
    assert Document(doc).to_py() == doc.to_py()


# -- text --------------------------------------------------------------------------------


def test_splice_edits_existing_text() -> None:
    """splice() deletes and inserts inside the text; both forms of it work."""
    doc = Document({"title": "Hello world", "notes": ["abc"]})
    with doc.change() as d:
        title = d["title"]
        assert isinstance(title, MutableText) and title == "Hello world" and len(title) == 11
        title.splice(6, 5, "there")
        d.splice_text("title", 0, 0, ">> ")
        d["notes"].splice_text(0, 3, 0, "d")
        assert str(d["title"]) == ">> Hello there"
    assert doc["title"] == ">> Hello there" and doc["notes"] == ["abcd"]


def test_concurrent_splices_are_both_kept() -> None:
    """Two forks splice the same text; after merging, both edits are there."""
    doc = Document({"text": "The cat sat."})
    other = doc.fork()
    with doc.change() as d:
        d["text"].splice(4, 3, "dog")
    with other.change() as d:
        d["text"].splice(11, 0, " on the mat")
    doc.merge(other)
    assert doc["text"] == "The dog sat on the mat."


def test_assigning_a_str_replaces_the_text() -> None:
    """Assigning a str makes a new text, so a concurrent splice of the old one is lost."""
    doc = Document({"text": "abc"})
    other = doc.fork()
    with doc.change() as d:
        d["text"] = "xyz"
    with other.change() as d:
        d["text"].splice(3, 0, "d")
    doc.merge(other)
    assert doc["text"] in ("xyz", "abcd")


def test_splice_positions_count_code_points() -> None:
    """Positions count Python characters (code points), emoji included."""
    doc = Document({"t": "a🌍b"})
    with doc.change() as d:
        d["t"].splice(2, 1, "c🎉")
    assert doc["t"] == "a🌍c🎉"


def test_splice_errors() -> None:
    """Splicing outside the text, or something that is not text, raises."""
    doc = Document({"t": "abc", "n": 1, "s": ["x"]})
    with doc.change() as d:
        with pytest.raises(IndexError):
            d["t"].splice(4, 0, "x")
        with pytest.raises(IndexError):
            d["t"].splice(2, 2)
        with pytest.raises(ValueError):
            d["t"].splice(0, -1)
        with pytest.raises(TypeError):
            d["t"].splice(0, 0, 5)
        with pytest.raises(TypeError, match="not text"):
            d.splice_text("n", 0, 0, "x")
    assert doc.to_py() == {"t": "abc", "n": 1, "s": ["x"]}


# -- counters ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["js_counters", "js_counters_more"])
def test_js_counters_read_as_javascript_does(name: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Counters JS made (nested, in lists, conflicting, concurrently incremented) read right."""
    doc, expected = js_fixture(name)
    assert doc.to_py() == expected
    assert doc["hits"] == expected["hits"] and isinstance(doc["hits"], Counter)
    assert doc["nested"]["deeper"][0]["c"] == -3
    assert list(doc["many"]) == expected["many"]
    assert to_py(doc.core) == expected  # the server's reader
    assert capfd.readouterr().err == ""


def test_counter_index_follows_new_changes(capfd: pytest.CaptureFixture[str]) -> None:
    """After reading, merged JS changes that insert and delete around counters read right."""
    doc, _ = js_fixture("js_counters")
    assert doc["list"] == [13, 5, -5]
    more, expected = js_fixture("js_counters_more")
    doc.merge(more)
    assert doc.to_py() == expected
    assert capfd.readouterr().err == ""


def test_js_counters_increment(capfd: pytest.CaptureFixture[str]) -> None:
    """Counters JS made are incremented from Python, in maps and lists, and read right."""
    doc, expected = js_fixture("js_counters")
    with doc.change() as d:
        d.increment("hits", 2)
        counter = d["hits"]
        assert isinstance(counter, MutableCounter) and counter == 117
        counter.increment(-7)
        d["nested"]["hits"].increment()
        d["list"].insert(0, "new")  # the counters move one place on
        d["list"].increment(1, 100)
        assert d["list"][1] == 113 and d["list"][3] == -5 and int(counter) == 110
    assert doc["hits"] == expected["hits"] - 5
    assert doc["nested"]["hits"] == 4
    assert doc["list"] == ["new", 113, 5, -5]
    assert Document.load(doc.save()).to_py() == doc.to_py()
    assert capfd.readouterr().err == ""


def test_increments_merge_with_concurrent_increments() -> None:
    """Concurrent increments on two forks add up when merged."""
    doc, expected = js_fixture("js_counters")
    other = doc.fork()
    with doc.change() as d:
        d.increment("hits", 10)
    with other.change() as d:
        d.increment("hits", 1)
        d["many"].increment(0, 5)
    doc.merge(other)
    assert doc["hits"] == expected["hits"] + 11 and doc["many"][0] == 5


def test_creating_a_counter_from_python_raises_a_clear_error() -> None:
    """Writing a counter raises CounterNotSupported (an AutosyncError) and harms nothing."""
    doc, expected = js_fixture("js_counters")
    heads = doc.heads
    with doc.change() as d:
        with pytest.raises(CounterNotSupported, match="JavaScript") as info:
            d["new"] = Counter(1)
        assert isinstance(info.value, AutosyncError)
        assert isinstance(info.value, NotImplementedError)
        with pytest.raises(CounterNotSupported):
            d["copy"] = d["hits"]
        with pytest.raises(CounterNotSupported):
            d["list"].append(doc["hits"])
    with pytest.raises(CounterNotSupported):
        Document({"c": Counter(0)})
    assert doc.heads == heads and doc.to_py() == expected


def test_incrementing_something_else_raises() -> None:
    """Incrementing a number, a missing key or by a non-int raises TypeError."""
    doc, _ = js_fixture("js_counters")
    with doc.change() as d:
        with pytest.raises(TypeError, match="not a counter"):
            d.increment("n")
        with pytest.raises(TypeError, match="not a counter"):
            d.increment("missing")
        with pytest.raises(TypeError):
            d.increment("hits", 1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            d["hits"].increment(True)
        d["hits"] = 5  # now a plain int: no longer incrementable
        with pytest.raises(TypeError, match="not a counter"):
            d.increment("hits")
        assert d["hits"] == 5


def test_no_panic_or_backtrace_in_normal_reads(capfd: pytest.CaptureFixture[str]) -> None:
    """Every way of reading a document with counters stays silent on stderr."""
    doc, _ = js_fixture("js_counters_more")
    repr(doc)
    doc._repr_html_()
    repr(doc["list"])
    repr(doc["nested"])
    list(doc.items())
    [list(doc[key]) for key in ("list", "many")]
    with doc.change() as d:
        repr(d)
        d.to_py()
        list(d["many"])
    assert capfd.readouterr().err == ""


def test_a_missed_counter_is_an_error_not_a_panic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the index ever miss a counter, the binding's panic becomes UnreadableValue."""
    from autosync_jupyter.crdt import patches as _patches

    doc, _ = js_fixture("js_counters")
    monkeypatch.setattr(_patches.Tracker, "current", lambda self: _patches.SpecialIndex())
    with pytest.raises(UnreadableValue):
        doc["hits"]
    with pytest.raises(UnreadableValue):
        doc.to_py()
    assert len(doc.heads) == 2  # the document itself is fine


def test_a_counter_free_document_is_never_diffed() -> None:
    """Documents whose changes write no counter skip the patch reading entirely."""
    doc = Document(EVERY_TYPE)
    doc.to_py()
    assert doc._tracker._maybe is False
    js, _ = js_fixture("js_counters")
    js.to_py()
    assert js._tracker._maybe is True


@pytest.mark.parametrize("name", ["js_counters", "js_counters_more"])
def test_patch_shortcuts_agree_with_the_full_parser(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regex reading of common patches finds what the full parser finds."""
    from autosync_jupyter.crdt import patches as _patches

    def unused(self: Any, patch: str, only: Any) -> None:
        raise AssertionError(f"the parser was needed for {patch[:100]}")

    core = js_fixture(name)[0].core
    patches = [repr(patch) for patch in core.diff([], core.get_heads())]
    with monkeypatch.context() as patched:
        patched.setattr(_patches.SpecialIndex, "_apply_parsed", unused)
        fast = _patches.SpecialIndex()
        for patch in patches:
            fast.apply(patch)
    monkeypatch.setattr(_patches.SpecialIndex, "_apply_common", lambda self, obj, action: False)
    parsed = _patches.SpecialIndex()
    for patch in patches:
        parsed.apply(patch)
    assert fast.maps == parsed.maps and fast.lists == parsed.lists and fast


def test_change_scan_finds_counters_and_errs_on_the_safe_side() -> None:
    """Change bytes reveal counters; bytes the scanner cannot read count as maybe."""
    from autosync_jupyter.crdt.patches import may_hold_special_values

    python_made = Document(EVERY_TYPE).core.get_changes([])
    js_made = js_fixture("js_counters")[0].core.get_changes([])
    assert not may_hold_special_values(change.raw_bytes for change in python_made)
    assert may_hold_special_values(change.raw_bytes for change in js_made)
    assert may_hold_special_values([b"garbage"])


# -- listeners ---------------------------------------------------------------------------


def test_listeners_hear_local_changes() -> None:
    """change() tells listeners origin="local" with the heads before and after."""
    doc = Document()
    events: list[ChangeEvent] = []
    doc.add_listener(events.append)
    before = doc.heads
    with doc.change() as d:
        d["x"] = 1
    (event,) = events
    assert event.document is doc and event.origin == "local"
    assert event.heads_before == before and event.heads_after == doc.heads


def test_notify_reports_remote_changes_once() -> None:
    """notify() after the core changed fires origin="remote"; without a change it is silent."""
    doc = Document({"a": 1})
    other = doc.fork()
    with other.change() as d:
        d["a"] = 2
    events: list[ChangeEvent] = []
    doc.add_listener(events.append)
    before = doc.heads
    doc.core.merge(other.core)
    doc.notify("remote", before)
    doc.notify("remote", doc.heads)
    assert [e.origin for e in events] == ["remote"] and doc["a"] == 2
    with pytest.raises(ValueError):
        doc.notify("elsewhere", before)  # type: ignore[arg-type]


def test_unsubscribe_and_failing_listeners(caplog: pytest.LogCaptureFixture) -> None:
    """The returned function stops a listener; a listener that raises is logged, others run."""
    doc = Document()
    seen: list[str] = []

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener bug")

    doc.add_listener(broken)
    stop = doc.add_listener(lambda e: seen.append(e.origin))
    with caplog.at_level(logging.ERROR, logger="autosync_jupyter.document"), doc.change() as d:
        d["x"] = 1
    assert seen == ["local"] and "listener" in caplog.text
    stop()
    stop()  # twice is harmless
    with doc.change() as d:
        d["x"] = 2
    assert seen == ["local"]


# -- fork, merge, save, load, equality ---------------------------------------------------


def test_fork_and_merge() -> None:
    """A fork is independent until merged; merge brings its changes and tells listeners."""
    doc = Document({"a": 1})
    fork = doc.fork()
    assert fork == doc and fork.core.get_actor() != doc.core.get_actor()
    with fork.change() as d:
        d["b"] = 2
    assert "b" not in doc and fork != doc
    events: list[ChangeEvent] = []
    doc.add_listener(events.append)
    doc.merge(fork)
    doc.merge(doc)
    assert doc == {"a": 1, "b": 2} and doc == fork and [e.origin for e in events] == ["local"]


def test_fork_at_heads() -> None:
    """fork(heads) is the document at that version, editable; unknown heads are a KeyError."""
    doc = Document({"a": 1})
    first = doc.heads
    with doc.change() as d:
        d["a"] = 2
        d["b"] = [1]
    old = doc.fork(first)
    assert old == {"a": 1} and old.heads == first and doc == {"a": 2, "b": [1]}
    with old.change() as d:
        d["c"] = 3
    doc.merge(old)
    assert doc == {"a": 2, "b": [1], "c": 3}
    assert doc.fork([]) == {}
    with pytest.raises(KeyError, match="no change with the heads"):
        doc.fork([bytes(32)])
    assert doc == {"a": 2, "b": [1], "c": 3}  # still usable


def test_save_and_load() -> None:
    """save() and load() round-trip the document and its history."""
    doc = Document({"a": [1, 2]})
    with doc.change() as d:
        d["a"].append(3)
    loaded = Document.load(doc.save())
    assert loaded == doc and loaded.to_py() == {"a": [1, 2, 3]}
    with pytest.raises(DocumentError):
        Document.load(b"not an automerge document")


def test_equality() -> None:
    """== compares heads with a Document, content with a mapping, else is not equal."""
    doc = Document({"a": {"b": [1]}})
    assert doc == {"a": {"b": [1]}} and doc != {"a": {}}
    assert doc == Document.load(doc.save()) and doc != Document({"a": {"b": [1]}})
    assert doc != [1] and doc["a"] == {"b": [1]}


# -- display -----------------------------------------------------------------------------


def test_repr_is_a_short_tree() -> None:
    """repr shows the type, the heads count and a truncated outline."""
    doc = Document({"title": "x" * 500, "items": list(range(100)), "m": {"k": True}})
    text = repr(doc)
    assert text.startswith("Document(1 head)")
    assert "items: list (100 items)" in text and "… (95 more)" in text
    assert "m: map (1 key)" in text and "k: True" in text
    assert len(text) < 2000 and "x" * 100 not in text
    assert repr(Document()) == "Document(1 head, empty)"
    assert repr(doc["m"]) == "MapView({'k': True})"


def test_html_repr_escapes_and_collapses() -> None:
    """_repr_html_ is a <details> tree with keys and values escaped."""
    doc = Document({"<script>alert(1)</script>": "<script>x</script>", "m": {"l": [1]}})
    page = doc._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<details") == 3 and "<summary>" in page
    assert "<style" not in page and "src=" not in page
    assert "<details" in doc["m"]._repr_html_()


def test_ipython_pretty_repr() -> None:
    """IPython's pretty printer shows the same text as repr."""
    doc = Document({"a": 1})

    class Printer:
        def __init__(self) -> None:
            self.out = ""

        def text(self, text: str) -> None:
            self.out += text

    printer = Printer()
    doc._repr_pretty_(printer, False)
    assert printer.out == repr(doc)


# -- properties --------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=10)  # Automerge forbids empty keys
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
json_documents = st.dictionaries(keys, json_values, max_size=6)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents)
def test_any_json_like_value_round_trips(value: dict[str, Any]) -> None:
    """Any JSON-like value written through change() reads back the same, also after load."""
    doc = Document()
    with doc.change() as d:
        for key, item in value.items():
            d[key] = item
    assert same(doc.to_py(), value)
    assert same(Document.load(doc.save()).to_py(), value)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=15), st.data())
def test_any_splice_matches_str_slicing(text: str, data: st.DataObject) -> None:
    """A splice anywhere in any text gives what slicing the str gives."""
    doc = Document({"t": text})
    index = data.draw(st.integers(0, len(text)))
    delete = data.draw(st.integers(0, len(text) - index))
    insert = data.draw(st.text(max_size=5))
    with doc.change() as d:
        d["t"].splice(index, delete, insert)
    assert doc["t"] == text[:index] + insert + text[index + delete :]


list_edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "set", "increment", "commit"]),
        st.integers(0, 200),
        st.integers(-50, 50),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(list_edits)
def test_counters_in_lists_stay_right_through_any_edits(edits: list[tuple[str, int, int]]) -> None:
    """Random inserts, deletes, sets and increments around JS counters match a plain model."""
    doc, expected = js_fixture("js_counters")
    model: list[int] = list(expected["many"])
    counter = [i % 3 == 0 for i in range(len(model))]  # where JS put counters
    edits = [*edits, ("commit", 0, 0)]
    while edits:
        with doc.change() as d:
            items = d["many"]
            while edits:
                action, where, amount = edits.pop(0)
                if action == "commit":
                    break
                position = where % (len(model) + (action == "insert")) if model else 0
                if action == "insert":
                    items.insert(position, amount)
                    model.insert(position, amount)
                    counter.insert(position, False)
                elif not model:
                    continue
                elif action == "delete":
                    del items[position]
                    del model[position], counter[position]
                elif action == "set" or not counter[position]:
                    items[position] = amount
                    model[position], counter[position] = amount, False
                else:
                    items.increment(position, amount)
                    model[position] += amount
                if model:  # reads inside the change see the edits so far
                    assert items[position % len(model)] == model[position % len(model)]
        assert doc["many"] == model
    assert Document.load(doc.save())["many"] == model


def test_local_zone_fixture_restores_time_zone() -> None:
    """The tests leave the process's time zone as they found it."""
    assert os.environ.get("TZ") != "America/New_York"
