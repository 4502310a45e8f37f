"""A document's history: change records, stamped times and messages, past versions, diffs."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

import automerge.core as am
import pytest

from autosync_jupyter import ChangeRecord, Counter, Document, DocumentError, History, Patch
from autosync_jupyter.crdt import history as history_module
from autosync_jupyter.crdt.changes import read_change
from autosync_jupyter.crdt.history import change_time, parse_heads
from autosync_jupyter.crdt.stamp import STAMP_LIMIT, Stamper
from autosync_jupyter.ids import document_url, encode_heads, generate_document_id
from tests.crdt.test_document import js_fixture

UTC = dt.timezone.utc


def edited(*messages: str | None) -> Document:
    """A document with one change per message, each setting ``n`` to its number."""
    doc = Document({"n": 0})
    for number, message in enumerate(messages, 1):
        with doc.change(message=message) as d:
            d["n"] = number
    return doc


# -- records --------------------------------------------------------------------------------


def test_a_change_records_its_message_time_author_and_place() -> None:
    """A change made with a message has it, an aware UTC time of now, its actor, seq and deps."""
    doc = Document({"n": 0})
    first = doc.history()[0]
    before = time.time()
    with doc.change(message="count to one") as d:
        d["n"] = 1
        d["tags"] = ["a", "b"]
    after = time.time()
    record = doc.history()[-1]
    assert isinstance(record, ChangeRecord)
    assert record.message == "count to one"
    assert record.time is not None and record.time.tzinfo is UTC
    assert int(before) <= record.time.timestamp() <= after  # whole seconds, as JS writes
    assert record.actor == doc.core.get_actor().hex()
    assert (first.seq, record.seq) == (1, 2)
    assert record.deps == (first.hash,)
    assert [record.hash] == [head.hex() for head in doc.heads]
    assert record.ops == 6  # n; the list; two text objects inserted; a character in each
    assert first.time is not None and first.message is None  # the first change is stamped too


def test_the_op_count_is_the_changes_operations() -> None:
    """``ops`` counts the operations a change holds, as the change bytes say."""
    doc = edited(None)
    with doc.change() as d:
        d["a"] = 1
        d["b"] = 2
        del d["n"]
    change = doc.core.get_changes([])[-1]
    assert doc.history()[-1].ops == read_change(change.bytes).num_ops == 3


def test_records_print_readably() -> None:
    """str() of a record has its time, actor, seq, op count, message and short hash."""
    doc = edited("hello")
    record = doc.history()[-1]
    text = str(record)
    assert record.when in text and record.when.endswith(" UTC")
    assert record.actor[:8] in text and "#2" in text and "1 op" in text
    assert "'hello'" in text and text.endswith(record.hash[:12])
    assert "History(2 changes)" in repr(doc.history())


def test_a_change_made_without_a_time_says_its_time_is_unknown() -> None:
    """A change with time 0 (the binding's own transaction) has time None, shown as unknown."""
    doc = Document({"n": 0})
    with doc.core.transaction() as tx:
        tx.put(am.ROOT, "n", am.ScalarType.Int, 5)
    record = doc.history()[-1]
    assert record.time is None and record.message is None
    assert record.when == "time unknown" and "time unknown" in str(record)


def test_change_times_in_seconds_and_in_milliseconds() -> None:
    """Header times are seconds (JS); numbers only milliseconds reach read as milliseconds."""
    assert change_time(1_700_000_000) == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert change_time(1_700_000_000_123) == dt.datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    assert change_time(0) is None
    assert change_time(2**62) is None  # no instant: no time rather than an error


def test_history_of_a_javascript_document_has_its_times() -> None:
    """Changes JavaScript made carry times that read as instants of their making."""
    doc, _ = js_fixture("js_counters")
    records = list(doc.history())
    assert records and all(r.time is not None for r in records)
    made = min(r.time for r in records if r.time is not None)
    assert dt.datetime(2023, 1, 1, tzinfo=UTC) < made < dt.datetime.now(UTC)


# -- the sequence ------------------------------------------------------------------------------


def test_history_is_a_sequence_in_causal_order() -> None:
    """len, indexes (negative too), slices and iteration agree, oldest first."""
    doc = edited("one", "two", "three")
    history = doc.history()
    assert isinstance(history, History)
    records = list(history)
    assert len(history) == len(records) == 4
    assert history[-1] == records[3] and history[0] == records[0]
    assert history[1:3] == records[1:3] and history[::-1] == records[::-1]
    assert [r.message for r in records] == [None, "one", "two", "three"]
    for earlier, later in itertools.pairwise(records):
        assert later.deps == (earlier.hash,)
    with pytest.raises(IndexError):
        history[4]


def test_history_builds_only_the_records_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the last record of a long history builds one record, not all of them."""
    doc = edited(*[f"change {i}" for i in range(200)])
    built: list[Any] = []
    original = ChangeRecord.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[ChangeRecord], change: Any) -> ChangeRecord:
        built.append(change)
        record: ChangeRecord = original(cls, change)
        return record

    monkeypatch.setattr(history_module.ChangeRecord, "of", classmethod(counting))
    history = doc.history()
    assert len(history) == 201 and built == []
    assert history[-1].message == "change 199"
    assert len(built) == 1
    assert [r.message for r in history[-3:]] == ["change 197", "change 198", "change 199"]
    assert len(built) == 4


def test_history_of_two_peers_editing_concurrently() -> None:
    """Two copies edit at once; merged, the history has both authors, messages and a merge."""
    alice = Document({"title": "plan", "items": []})
    bob = alice.fork()
    with alice.change(message="alice adds milk") as d:
        d["items"].append("milk")
    with bob.change(message="bob adds eggs") as d:
        d["items"].append("eggs")
    alice.merge(bob)
    history = alice.history()
    by_message = {r.message: r for r in history}
    assert by_message["alice adds milk"].actor == alice.core.get_actor().hex()
    assert by_message["bob adds eggs"].actor == bob.core.get_actor().hex()
    assert by_message["alice adds milk"].deps == by_message["bob adds eggs"].deps
    assert len(alice.heads) == 2
    with alice.change(message="alice sorts") as d:
        d["items"].insert(0, "first")
    assert set(alice.history()[-1].deps) == {
        by_message["alice adds milk"].hash,
        by_message["bob adds eggs"].hash,
    }


# -- stamping ----------------------------------------------------------------------------------


def test_stamped_changes_are_canonical_and_survive_save_and_load() -> None:
    """A stamped change passes the strict change reader, and save/load keeps every hash."""
    doc = edited("a message", None, "ünïcödé ✓")
    for change in doc.core.get_changes([]):
        info = read_change(change.bytes)
        assert info.hash == change.hash
    loaded = Document.load(doc.save())
    assert loaded.heads == doc.heads
    assert [r.message for r in loaded.history()] == [None, "a message", None, "ünïcödé ✓"]
    assert [r.time for r in loaded.history()] == [r.time for r in doc.history()]


def test_the_document_never_holds_the_unstamped_change() -> None:
    """Only the stamped change is applied: one change per block, the seq goes up by one."""
    doc = edited("first")
    assert [r.seq for r in doc.history()] == [1, 2]
    assert len(doc.core.get_changes([])) == 2
    with doc.change(message="second") as d:
        d["n"] = 7
    assert [r.seq for r in doc.history()] == [1, 2, 3]
    assert doc["n"] == 7


def test_stamping_uses_the_clock() -> None:
    """The time written is the stamper's clock, in whole seconds."""
    doc = Document({"n": 0})
    doc._stamper._clock = lambda: 1_700_000_000.9
    with doc.change(message="then") as d:
        d["n"] = 1
    assert doc.history()[-1].time == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_beyond_the_limit_only_changes_with_a_message_are_stamped() -> None:
    """Past stamp_limit operations, a change without a message keeps time unknown."""
    doc = Document({"n": 0})
    assert doc.stamp_limit == STAMP_LIMIT
    doc.stamp_limit = 0
    with doc.change() as d:
        d["n"] = 1
    assert doc.history()[-1].time is None
    with doc.change(message="asked for") as d:
        d["n"] = 2
    assert doc.history()[-1].time is not None
    doc.stamp_limit = None
    with doc.change() as d:
        d["n"] = 3
    assert doc.history()[-1].time is not None


def test_the_stampers_size_follows_the_documents_op_counter() -> None:
    """size() is the largest op counter, read incrementally (remote changes too)."""
    doc = Document({f"k{i}": i for i in range(10)})
    stamper = Stamper(doc.core)
    assert stamper.size() == 10
    other = doc.fork()
    with other.change() as d:
        d["more"] = [1, 2, 3]
    doc.merge(other)
    assert stamper.size() == 14


def test_an_empty_block_makes_no_change_and_a_failing_one_keeps_nothing() -> None:
    """No edits: no change; an exception: rolled back, history and document as before."""
    doc = edited("one")
    with doc.change(message="nothing"):
        pass
    assert len(doc.history()) == 2
    with pytest.raises(RuntimeError), doc.change(message="fails") as d:
        d["n"] = 99
        raise RuntimeError("no")
    assert len(doc.history()) == 2 and doc["n"] == 1
    with doc.change(message="works") as d:
        d["n"] = 2
    assert doc.history()[-1].message == "works" and doc["n"] == 2


def test_listeners_hear_the_stamped_change() -> None:
    """A listener is told of the change with the stamped change's hash as the new head."""
    doc = Document({"n": 0})
    events: list[Any] = []
    doc.add_listener(events.append)
    with doc.change(message="heard") as d:
        d["n"] = 1
    assert len(events) == 1 and events[0].origin == "local"
    assert [h.hex() for h in events[0].heads_after] == [doc.history()[-1].hash]


def test_a_change_message_must_be_text() -> None:
    """A message that is not a str is refused before anything is changed."""
    doc = Document({"n": 0})
    with pytest.raises(TypeError, match="str"), doc.change(message=5):  # type: ignore[arg-type]
        pass
    assert len(doc.history()) == 1


# -- past versions ----------------------------------------------------------------------------


def test_at_gives_the_document_at_any_version() -> None:
    """at() by hex hashes, bytes, bs58 heads or an automerge: URL reads the old content."""
    doc = edited("one", "two")
    records = doc.history()
    assert doc.at([records[1].hash])["n"] == 1
    assert doc.at([bytes.fromhex(records[0].hash)])["n"] == 0
    bs58 = encode_heads([bytes.fromhex(records[2].hash)])
    assert doc.at(bs58).to_py() == {"n": 2}
    url = document_url(generate_document_id(), [bytes.fromhex(records[1].hash)])
    assert doc.at(url)["n"] == 1
    assert doc["n"] == 2


def test_a_past_version_is_read_only() -> None:
    """Changing or merging into a past version fails with a message that says what to do."""
    doc = edited("one")
    past = doc.at([doc.history()[0].hash])
    with pytest.raises(DocumentError, match="past version"), past.change() as d:
        d["n"] = 5
    with pytest.raises(DocumentError, match="fork"):
        past.merge(doc)
    assert past["n"] == 0
    editable = doc.fork([bytes.fromhex(doc.history()[0].hash)])
    with editable.change() as d:
        d["n"] = 5
    assert editable["n"] == 5


def test_at_refuses_unknown_and_malformed_heads() -> None:
    """An unknown change is a KeyError, something that is not a head a ValueError."""
    doc = edited()
    with pytest.raises(KeyError, match="no change"):
        doc.at(["00" * 32])
    with pytest.raises(ValueError):
        doc.at(["not a head"])
    with pytest.raises(ValueError, match="list"):
        doc.at("deadbeef")
    with pytest.raises(ValueError, match="no heads"):
        doc.at(document_url(generate_document_id()))
    assert parse_heads([]) == []


def test_restoring_a_past_version_is_a_new_change() -> None:
    """Writing a past version's content back restores it and keeps the whole history."""
    doc = Document({"title": "draft", "items": [1, 2]})
    version = doc.history()[-1].hash
    with doc.change(message="edit") as d:
        d["title"] = "final"
        d["items"].append(3)
        d["extra"] = True
    old = doc.at([version]).to_py()
    with doc.change(message="restore draft") as d:
        for key in list(d):
            if key not in old:
                del d[key]
        d.update(old)
    assert doc.to_py() == {"title": "draft", "items": [1, 2]}
    assert [r.message for r in doc.history()] == [None, "edit", "restore draft"]


# -- differences ------------------------------------------------------------------------------


def test_diff_names_each_edit_by_path_action_and_value() -> None:
    """Puts, deletes, list inserts and deletes, and text splices read as plain patches."""
    doc = Document({"title": "hi", "items": [1, 2, 3], "meta": {"old": True}})
    start = doc.heads
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with doc.change() as d:
        d["meta"]["new"] = 1.5
        del d["meta"]["old"]
        d["items"].insert(1, None)
        del d["items"][3]
        d["title"].splice(2, 0, "!")
        d["when"] = when
        d["raw"] = b"\x00\x01"
    patches = doc.diff(start)
    assert all(isinstance(p, Patch) for p in patches)
    found = {(p.path, p.action): p.value for p in patches}
    assert found[(("meta", "new"), "put")] == 1.5
    assert (("meta", "old"), "delete") in found and found[(("meta", "old"), "delete")] is None
    assert found[(("items", 1), "insert")] == [None]
    assert found[(("items", 3), "delete")] == 1
    assert found[(("title", 2), "splice")] == "!"
    assert found[(("when",), "put")] == when
    assert found[(("raw",), "put")] == b"\x00\x01"
    assert str(Patch(("meta", "old"), "delete")) == "delete meta/old"


def test_diff_between_any_two_versions_and_from_the_start() -> None:
    """diff(a, b) between versions; diff([]) is the whole document built up."""
    doc = edited("one", "two")
    records = doc.history()
    assert doc.diff([records[1].hash], [records[2].hash]) == [Patch(("n",), "put", 2)]
    assert doc.diff([records[2].hash], [records[1].hash]) == [Patch(("n",), "put", 1)]
    assert doc.diff([]) == [Patch(("n",), "put", 2)]
    assert doc.diff(doc.heads) == []


def test_diff_shows_javascript_counters_and_increments(capfd: pytest.CaptureFixture[str]) -> None:
    """Counters read as Counter values and increments as amounts, with no panic."""
    doc, expected = js_fixture("js_counters")
    start = doc.heads
    with doc.change() as d:
        d.increment("hits", 5)
    assert doc.diff(start) == [Patch(("hits",), "increment", 5)]
    whole = {p.path: p.value for p in doc.diff([]) if p.action == "put"}
    assert whole[("hits",)] == Counter(expected["hits"] + 5)
    assert isinstance(whole[("hits",)], Counter)
    assert "panicked" not in capfd.readouterr().err


def test_diff_refuses_unknown_versions() -> None:
    """A head the document lacks is a KeyError (the binding would diff from nothing)."""
    doc = edited("one")
    with pytest.raises(KeyError, match="no change 000000000000"):
        doc.diff(["00" * 32])
    with pytest.raises(KeyError):
        doc.diff(doc.heads, ["11" * 32])
