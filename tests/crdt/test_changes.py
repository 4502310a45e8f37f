"""Reading change chunks: what Automerge writes passes, anything else is refused."""

from __future__ import annotations

import contextlib
import datetime
import random

import automerge.core as am
import pytest
from hostile import (
    ACTOR,
    OTHER,
    body,
    chunk,
    compressed,
    deflate_bomb,
    edit_of,
    op_columns,
    sample_document,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autosync_jupyter.crdt.changes import ChangeRejected, read_change
from autosync_jupyter.crdt.columns import encode_rle, sleb, uleb


def put_title(value: bytes = b"hi") -> list[tuple[int, bytes]]:
    """The columns of one op: put root["title"] = value (a string)."""
    return [
        (0x15, encode_rle([b"title"], "s")),
        (0x34, uleb(1)),  # insert: one False
        (0x42, encode_rle([1], "u")),  # action: put
        (0x56, encode_rle([(len(value) << 4) | 6], "u")),
        (0x57, value),
        (0x70, encode_rle([0], "u")),  # no predecessors
    ]


def test_a_change_built_here_is_what_automerge_writes() -> None:
    """The hand-built reference change is accepted and matches the binding's own bytes."""
    doc = am.Document(ACTOR)
    with doc.transaction() as tx:
        tx.put(am.ROOT, "title", am.ScalarType.Str, "hi")
    (made,) = doc.get_changes([])
    assert chunk(1, body(columns=put_title())) == made.bytes
    info = read_change(made.bytes)
    assert (info.hash, info.seq, info.start_op, info.num_ops) == (made.hash, 1, 1, 1)


@st.composite
def edit_scripts(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    return draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.sampled_from("mlLtTdDxoc"), st.integers(0, 50)),
            min_size=1,
            max_size=25,
        )
    )


def run_script(script: list[tuple[int, str, int]]) -> am.Document:
    """Three authors editing maps, a list and text, merging now and then."""
    docs = [am.Document() for _ in range(3)]
    with docs[0].transaction() as tx:
        tx.put_object(am.ROOT, "list", am.ObjType.List)
        tx.put_object(am.ROOT, "text", am.ObjType.Text)
    for other in docs[1:]:
        other.merge(docs[0])
    for who, what, n in script:
        doc = docs[who]
        with doc.transaction() as tx:
            lst, txt = tx.get(am.ROOT, "list")[1], tx.get(am.ROOT, "text")[1]
            size, tsize = tx.length(lst), tx.length(txt)
            if what == "m":
                tx.put(am.ROOT, f"k{n % 4}", am.ScalarType.Int, n - 25)
            elif what == "l":
                tx.insert(lst, n % (size + 1), am.ScalarType.Str, "é" * (n % 3))
            elif what == "L" and size:
                tx.put(lst, n % size, am.ScalarType.F64, n / 7)
            elif what == "t":
                tx.insert(txt, n % (tsize + 1), am.ScalarType.Str, "a🙂"[n % 2])
            elif what == "T" and tsize > 1:
                end = 1 + n % (tsize - 1)
                tx.mark(txt, 0, end, "b", am.ScalarType.Boolean, True, am.ExpandMark.After)
            elif what == "d" and size:
                tx.delete(lst, n % size)
            elif what == "D":
                tx.delete(am.ROOT, f"k{n % 4}")
            elif what == "x":
                tx.put(am.ROOT, "bytes", am.ScalarType.Bytes, bytes([n]) * (n % 5))
            elif what == "o":
                obj = tx.put_object(am.ROOT, f"o{n % 3}", am.ObjType.Map)
                tx.put(obj, "in", am.ScalarType.Timestamp, datetime.datetime.fromtimestamp(n))
            elif what == "c" and tsize:
                tx.delete(txt, n % tsize)
        if n % 4 == 0:
            docs[(who + 1) % 3].merge(doc)
    for other in docs[1:]:
        docs[0].merge(other)
    return docs[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit_scripts())
def test_every_change_automerge_makes_is_accepted(script: list[tuple[int, str, int]]) -> None:
    """Whatever mix of edits three authors make, each change reads back exactly."""
    for change in run_script(script).get_changes([]):
        info = read_change(change.bytes)
        assert info.hash == change.hash
        assert (info.actor, info.seq) == (change.actor_id, change.seq)
        assert info.start_op == change.start_op
        assert info.max_op == change.max_op
        assert info.deps == tuple(sorted(change.deps))


def test_a_compressed_change_is_accepted_and_bounded() -> None:
    """A type-2 (deflated) change reads like its plain form, within max_inflated."""
    change = edit_of(sample_document())
    packed = compressed(change)
    assert read_change(packed).hash == read_change(change).hash
    with pytest.raises(ChangeRejected, match="more than 10 bytes"):
        read_change(packed, max_inflated=10)


def test_a_deflate_bomb_costs_only_the_limit() -> None:
    """A 256 KiB chunk that would inflate to 64 MiB is refused after inflating 1 MiB."""
    bomb = deflate_bomb(64 << 20)
    assert len(bomb) < 100_000
    with pytest.raises(ChangeRejected, match="inflates to more than"):
        read_change(bomb, max_inflated=1 << 20)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a chunk at all", "magic"),
        (chunk(1, body(columns=put_title()))[:-1], "length"),
        (chunk(7, body(columns=put_title())), "not a change"),
        (chunk(0, body(columns=put_title())), "not a change"),
        (b"\x85\x6f\x4a\x83\0\0\0\0" + chunk(1, body(columns=put_title()))[8:], "checksum"),
        (chunk(1, body(seq=0, columns=put_title())), "sequence number"),
        (chunk(1, body(start_op=0, columns=put_title())), "start op"),
        (chunk(1, body(start_op=2**32, columns=put_title())), "start op"),
        (chunk(1, body(actor=b"", columns=put_title())), "actor id"),
        (chunk(1, body(message=b"\xff", columns=put_title())), "UTF-8"),
        (chunk(1, body(deps=[b"\2" * 32, b"\1" * 32], columns=put_title())), "sorted"),
        (chunk(1, body(others=[OTHER], columns=put_title())), "actor list"),
        (chunk(1, body(columns=[*put_title(), (0x99, b"\0")])), "unexpected column"),
        (chunk(1, body(columns=[(0x42, sleb(2**40) + uleb(1))])), "more than"),
        (chunk(1, body(columns=put_title())[:-3]), "ends inside its columns"),
    ],
    ids=[
        "garbage",
        "truncated",
        "unknown-type",
        "document-type",
        "bad-checksum",
        "seq-0",
        "start-op-0",
        "start-op-2**32",
        "empty-actor",
        "message-not-utf8",
        "deps-unsorted",
        "unreferenced-actor",
        "unknown-column",
        "op-count-bomb",
        "columns-cut-short",
    ],
)
def test_malformed_changes_are_rejected(data: bytes, reason: str) -> None:
    """Each malformed change is refused with a message naming what is wrong."""
    with pytest.raises(ChangeRejected, match=reason):
        read_change(data)


@pytest.mark.parametrize(
    ("columns", "start_op", "others", "reason"),
    [
        # The panic the fuzzer found: a predecessor naming actor index 104.
        (op_columns(preds=[(104, 1)]), 5, [], "names an actor the change lacks"),
        (op_columns(preds=[(0, 7)]), 5, [], "not an older operation"),
        (op_columns(preds=[(0, 0)]), 5, [], "not an older operation"),
        (op_columns(action=9), 1, [], "unknown action"),
        (op_columns(action=3, meta=0, raw=b""), 1, [], "delete needs a predecessor"),
        (op_columns(action=0), 1, [], "carries a value"),  # make map with a value
        (op_columns(action=5, meta=(1 << 4) | 3, raw=b"\x01"), 1, [], "signed integer"),
        (op_columns(meta=(2 << 4) | 3, raw=b"\x81\x00"), 1, [], "shortest form"),
        (op_columns(meta=(3 << 4) | 5, raw=b"abc"), 1, [], "8 bytes"),
        (op_columns(meta=(1 << 4) | 6, raw=b"\xff"), 1, [], "UTF-8"),
        (op_columns(meta=(9 << 4) | 6, raw=b"hi"), 1, [], "runs past"),
        (op_columns(insert=True), 1, [], "insert needs a list position"),
        (op_columns(preds=[(0, 3), (0, 2)]), 5, [], "out of order"),
        (op_columns(preds=[(0, 2), (0, 2)]), 5, [], "out of order"),
    ],
    ids=[
        "pred-actor-out-of-range",
        "pred-from-the-future",
        "pred-counter-0",
        "unknown-action",
        "delete-without-pred",
        "make-with-value",
        "increment-unsigned",
        "overlong-number",
        "short-float",
        "string-not-utf8",
        "value-past-column",
        "insert-on-a-map-key",
        "preds-unsorted",
        "preds-duplicated",
    ],
)
def test_inconsistent_operations_are_rejected(
    columns: list[tuple[int, bytes]], start_op: int, others: list[bytes], reason: str
) -> None:
    """Operations that would panic the core or not survive a save are refused."""
    with pytest.raises(ChangeRejected, match=reason):
        read_change(chunk(1, body(start_op=start_op, others=others, columns=columns)))


def test_a_run_of_one_where_automerge_writes_a_literal_is_refused() -> None:
    """Same operations, other bytes (a run of length 1): the hash would not survive a save."""
    columns = dict(put_title())
    columns[0x42] = sleb(1) + uleb(1)  # "1 x put" instead of the literal "[put]"
    with pytest.raises(ChangeRejected, match="not encoded the way automerge encodes it"):
        read_change(chunk(1, body(columns=list(columns.items()))))


def test_mutations_never_crash_the_reader() -> None:
    """3,000 mutations of a real change: each reads or raises ChangeRejected, nothing else."""
    from hostile import mutate, reseal

    rng = random.Random(7)
    change = edit_of(sample_document())
    for _ in range(3000):
        data = reseal(mutate(change, rng))
        with contextlib.suppress(ChangeRejected):
            read_change(data)
