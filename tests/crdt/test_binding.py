"""What the package relies on in the ``automerge`` binding 1.0.0rc1, pinned against the real thing.

Every workaround in :mod:`autosync_jupyter.crdt.binding` depends on some
behaviour of the binding: the exact ``repr`` (Rust ``Debug`` text) of its
patches, its panics, its error messages, its id bytes, its conversions. These
tests build documents with the real binding and check those behaviours
directly, so that a new binding release fails here, by name, rather than
silently somewhere else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import automerge.core as am
import pytest

from autosync_jupyter.crdt import binding
from autosync_jupyter.crdt.binding import (
    REQUIRED_VERSION,
    ROOT_ID,
    ROOT_KEY,
    UnsupportedBinding,
    bytes_from_binding,
    check_version,
    insert_text,
    is_panic,
    is_transaction_open,
    obj_key,
    object_id,
    utc_from_binding,
)
from autosync_jupyter.crdt.binding.debug_text import DebugCall, DebugStruct, parse_debug
from autosync_jupyter.crdt.binding.patch_text import (
    CounterValue,
    Delete,
    Increment,
    Insert,
    PatchEdit,
    Put,
    TimestampValue,
    UnknownValue,
    Unmoved,
    patch_object,
    read_action,
    read_patch,
)
from autosync_jupyter.errors import AutosyncError

FIXTURES = Path(__file__).parents[1] / "fixtures"
ACTOR = bytes.fromhex("ab" * 16)
HEX = ACTOR.hex()
UTC = dt.timezone.utc


def new_doc() -> am.Document:
    doc = am.Document()
    doc.set_actor(ACTOR)
    return doc


def patch_texts(doc: am.Document, before: list[bytes] | None = None) -> list[str]:
    return [repr(patch) for patch in doc.diff(before or [], doc.get_heads())]


def both_readers(text: str) -> PatchEdit:
    """What the fast reader and the full parser make of one patch; they must agree."""
    parsed = read_patch(text)
    head = patch_object(text)
    assert head is not None, f"the common patch start no longer matches: {text}"
    fast = read_action(head[0], text[head[1] :])
    assert fast is not None, f"the common action shapes no longer match: {text}"
    assert fast == parsed
    return fast


def js_document(name: str) -> am.Document:
    """A private copy of a JavaScript-made document (tests/fixtures/make_js_fixtures.mjs)."""
    return am.Document.load((FIXTURES / f"{name}.automerge").read_bytes())


# -- the release -----------------------------------------------------------------------


def test_the_installed_binding_is_the_required_release() -> None:
    """These tests (and every workaround) are about automerge 1.0.0rc1."""
    assert REQUIRED_VERSION == "1.0.0rc1"
    assert importlib.metadata.version("automerge") == REQUIRED_VERSION
    check_version()


def test_another_release_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other installed automerge fails with an error that says what to install."""
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.1.2")
    with pytest.raises(UnsupportedBinding) as raised:
        check_version()
    assert isinstance(raised.value, AutosyncError) and isinstance(raised.value, ImportError)
    message = str(raised.value)
    assert "pip install automerge==1.0.0rc1" in message and "0.1.2" in message


def test_a_missing_binding_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No automerge at all: the same error, saying to install it."""

    def not_found(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_found)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UnsupportedBinding, match=r"pip install automerge==1\.0\.0rc1"):
        check_version()


def test_a_source_checkout_of_the_binding_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """An importable automerge without distribution metadata cannot be checked: no error."""

    def not_found(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_found)
    check_version()


def test_importing_the_package_fails_with_another_release() -> None:
    """The check runs at import: the first import of the Automerge layer fails clearly."""
    code = (
        "import importlib.metadata as m\n"
        "m.version = lambda name: '0.1.2'\n"
        "try:\n"
        "    import autosync_jupyter.crdt.values\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.startswith("UnsupportedBinding "), result.stdout + result.stderr
    assert "pip install automerge==1.0.0rc1" in result.stdout


# -- failures ------------------------------------------------------------------------------


def test_an_open_transaction_refusal_is_recognised() -> None:
    """save, sync, changes and diff refuse during a change, in words is_transaction_open knows."""
    doc = new_doc()
    refusals: list[BaseException] = []
    with doc.transaction() as tx:
        tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
        for call in (
            doc.save,
            lambda: doc.generate_sync_message(am.SyncState()),
            lambda: doc.get_changes([]),
            lambda: doc.diff([], []),
        ):
            with pytest.raises(Exception) as raised:
                call()
            refusals.append(raised.value)
    for exc in refusals:
        assert type(exc) is Exception
        assert is_transaction_open(exc) and not is_panic(exc)
    assert doc.get(am.ROOT, "a") is not None  # nothing harmed


def test_other_errors_are_not_an_open_transaction() -> None:
    with pytest.raises(Exception) as raised:
        am.Document.load(b"not a document")
    assert not is_transaction_open(raised.value) and not is_panic(raised.value)


@pytest.mark.parametrize("values", [False, True])
def test_reading_a_counter_panics_and_is_recognised(values: bool) -> None:
    """get() and values() on a counter panic (a BaseException); is_panic knows it.

    Reading does not poison the document (creating a counter would: never
    done here). The document is a private copy loaded for this test.
    """
    doc = js_document("js_counters")
    with pytest.raises(BaseException) as raised:
        if values:
            doc.values(am.ROOT)
        else:
            doc.get(am.ROOT, "hits")
    assert not isinstance(raised.value, Exception)
    assert is_panic(raised.value) and not is_transaction_open(raised.value)
    assert str(raised.value) == "not yet implemented"
    assert len(doc.get_heads()) == 2  # still usable


def test_reading_an_unknown_value_panics_and_patches_show_it() -> None:
    """A value type newer than the core panics when read, and patches carry Unknown { ... }."""
    doc = unknown_values_document()
    with pytest.raises(BaseException) as raised:
        doc.get(am.ROOT, "u")
    assert is_panic(raised.value)
    texts = patch_texts(doc)
    assert texts[1] == (
        'Patch { obj: Root, path: [], action: PutMap { key: "u", value: '
        f'(Scalar(Unknown {{ type_code: 10, bytes: [5] }}), Id(1, ActorID("{HEX}"), 0)), '
        "conflict: false } }"
    )
    assert both_readers(texts[1]) == Put(ROOT_KEY, "u", UnknownValue(10, b"\x05"))
    list_key = (2, ACTOR)
    assert both_readers(texts[2]) == Insert(list_key, 0, [UnknownValue(11, b"\x06")])


def unknown_values_document() -> am.Document:
    """A document whose values have type codes 10 and 11 (made by editing a real change)."""
    doc = new_doc()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "u", am.ScalarType.Int, 5)
        items = tx.put_object(am.ROOT, "l", am.ObjType.List)
        tx.insert(items, 0, am.ScalarType.Int, 6)
    change = bytearray(doc.get_changes([])[0].bytes)
    # The value metadata column: three literal values, int / (object) / int.
    at = change.find(bytes.fromhex("7d140014"))
    assert at > 0, "the change's value column is not where this test expects it"
    change[at + 1] = 0x1A  # length 1, type 10
    change[at + 3] = 0x1B  # length 1, type 11
    change[4:8] = hashlib.sha256(change[8:]).digest()[:4]
    return am.Document.load(bytes(change))


# -- the Debug text of patches: every value kind ------------------------------------------


def put_root(kind: Any, value: Any) -> str:
    doc = new_doc()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "k", kind, value)
    (text,) = patch_texts(doc)
    return text


def root_put(value_text: str, counter: int = 1) -> str:
    return (
        f'Patch {{ obj: Root, path: [], action: PutMap {{ key: "k", value: ({value_text}, '
        f'Id({counter}, ActorID("{HEX}"), 0)), conflict: false }} }}'
    )


@pytest.mark.parametrize(
    ("kind", "value", "shape"),
    [
        (am.ScalarType.Int, -5, "Scalar(Int(-5))"),
        (am.ScalarType.Int, -(2**63), "Scalar(Int(-9223372036854775808))"),
        (am.ScalarType.Uint, 2**64 - 1, "Scalar(Uint(18446744073709551615))"),
        (am.ScalarType.F64, 1.5, "Scalar(F64(1.5))"),
        (am.ScalarType.F64, -0.25, "Scalar(F64(-0.25))"),
        (am.ScalarType.F64, 1e300, "Scalar(F64(1e300))"),
        (am.ScalarType.F64, math.inf, "Scalar(F64(inf))"),
        (am.ScalarType.F64, -math.inf, "Scalar(F64(-inf))"),
        (am.ScalarType.F64, math.nan, "Scalar(F64(NaN))"),
        (am.ScalarType.Null, None, "Scalar(Null)"),
        (am.ScalarType.Boolean, True, "Scalar(Boolean(true))"),
        (am.ScalarType.Boolean, False, "Scalar(Boolean(false))"),
        (am.ScalarType.Bytes, b"\x01\x02\xff", "Scalar(Bytes([1, 2, 255]))"),
        (am.ScalarType.Bytes, b"", "Scalar(Bytes([]))"),
        (am.ScalarType.Str, "plain", 'Scalar(Str("plain"))'),
        (am.ScalarType.Str, 'q"b\\n\n\t\x01é😀', 'Scalar(Str("q\\"b\\\\n\\n\\t\\u{1}é😀"))'),
        (
            am.ScalarType.Timestamp,
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "Scalar(Timestamp(1704164645000))",
        ),
        (
            am.ScalarType.Timestamp,
            dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
            "Scalar(Timestamp(-1000))",
        ),
    ],
)
def test_scalar_shapes(kind: Any, value: Any, shape: str) -> None:
    """Each scalar kind's Debug text, and what the readers make of it."""
    text = put_root(kind, value)
    assert text == root_put(shape)
    edit = both_readers(text)
    expected = None
    if kind == am.ScalarType.Timestamp:
        expected = TimestampValue(round(value.timestamp() * 1000))
    assert edit == Put(ROOT_KEY, "k", expected)
    # The parser reads the scalar itself back faithfully.
    (scalar,) = parse_debug(shape).args
    assert isinstance(scalar, DebugCall)
    payload = scalar.args[0] if scalar.args else None
    if kind == am.ScalarType.Bytes:
        assert bytes(payload) == value
    elif kind == am.ScalarType.F64 and math.isnan(value):
        assert math.isnan(payload)
    elif kind != am.ScalarType.Timestamp:
        assert payload == value


@pytest.mark.parametrize(
    ("kind", "name"),
    [(am.ObjType.Map, "Map"), (am.ObjType.List, "List"), (am.ObjType.Text, "Text")],
)
def test_object_shapes(kind: Any, name: str) -> None:
    doc = new_doc()
    with doc.transaction() as tx:
        tx.put_object(am.ROOT, "k", kind)
    (text,) = patch_texts(doc)
    assert text == root_put(f"Object({name})")
    assert both_readers(text) == Put(ROOT_KEY, "k", None)


def test_nested_objects_lists_and_text() -> None:
    """Paths through maps and lists; Insert's SequenceTreeInternal; text elements."""
    doc = new_doc()
    with doc.transaction() as tx:
        items = tx.put_object(am.ROOT, "l", am.ObjType.List)
        inner = tx.insert_object(items, 0, am.ObjType.Map)
        tx.put(inner, "k", am.ScalarType.Timestamp, dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
        tx.insert(items, 1, am.ScalarType.Int, 7)
        text = tx.put_object(am.ROOT, "t", am.ObjType.Text)
        tx.insert(text, 0, am.ScalarType.Str, "ab")
    texts = patch_texts(doc)
    ident = f'ActorID("{HEX}"), 0'
    assert texts == [
        root_put("Object(List)", 1).replace('"k"', '"l"'),
        root_put("Object(Text)", 5).replace('"k"', '"t"'),
        f'Patch {{ obj: Id(1, {ident}), path: [(Root, Map("l"))], action: Insert {{ '
        "index: 0, values: SequenceTreeInternal { root_node: Some(SequenceTreeNode { "
        f"elements: [(Object(Map), Id(2, {ident}), false), "
        f"(Scalar(Int(7)), Id(4, {ident}), false)], children: [], length: 2 }}) }}, "
        "marks: None } }",
        f'Patch {{ obj: Id(2, {ident}), path: [(Root, Map("l")), (Id(1, {ident}), Seq(0))], '
        f'action: PutMap {{ key: "k", value: (Scalar(Timestamp(1000)), Id(3, {ident})), '
        "conflict: false } }",
        f'Patch {{ obj: Id(5, {ident}), path: [(Root, Map("t"))], action: Insert {{ '
        "index: 0, values: SequenceTreeInternal { root_node: Some(SequenceTreeNode { "
        f'elements: [(Scalar(Str("ab")), Id(6, {ident}), false)], children: [], '
        "length: 1 }) }, marks: None } }",
    ]
    edits = [both_readers(text) for text in texts]
    assert edits[2] == Insert((1, ACTOR), 0, [None, None])
    # A str given to insert is one element: why insert_text goes one character at a time.
    assert edits[3] == Put((2, ACTOR), "k", TimestampValue(1000))
    assert edits[4] == Insert((5, ACTOR), 0, [None])


def test_edits_after_the_first_state() -> None:
    """DeleteMap, DeleteSeq, PutSeq between two heads."""
    doc = new_doc()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "gone", am.ScalarType.Int, 1)
        items = tx.put_object(am.ROOT, "l", am.ObjType.List)
        for index in range(3):
            tx.insert(items, index, am.ScalarType.Int, index)
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.delete(am.ROOT, "gone")
        tx.delete(items, 0)
        tx.delete(items, 0)
        tx.put(items, 0, am.ScalarType.Int, 9)
    ident = f'ActorID("{HEX}"), 0'
    texts = patch_texts(doc, before)
    assert texts == [
        'Patch { obj: Root, path: [], action: DeleteMap { key: "gone" } }',
        f'Patch {{ obj: Id(2, {ident}), path: [(Root, Map("l"))], action: DeleteSeq {{ '
        "index: 0, length: 2 } }",
        f'Patch {{ obj: Id(2, {ident}), path: [(Root, Map("l"))], action: PutSeq {{ '
        f"index: 0, value: (Scalar(Int(9)), Id(9, {ident})), conflict: false }} }}",
    ]
    assert [both_readers(text) for text in texts] == [
        Delete(ROOT_KEY, "gone"),
        Delete((2, ACTOR), 0, 2),
        Put((2, ACTOR), 0, None),
    ]


def test_conflict_shapes() -> None:
    """A concurrent write that loses is a Conflict patch; one that wins, a PutMap with conflict."""
    texts = {}
    for other_actor in ("01" * 16, "cd" * 16):  # sorts before / after ACTOR
        doc = new_doc()
        with doc.transaction() as tx:
            tx.put(am.ROOT, "x", am.ScalarType.Int, 1)
        other = doc.fork()
        other.set_actor(bytes.fromhex(other_actor))
        with other.transaction() as tx:
            tx.put(am.ROOT, "x", am.ScalarType.Int, 2)
        with doc.transaction() as tx:
            tx.put(am.ROOT, "x", am.ScalarType.Int, 3)
        before = doc.get_heads()
        doc.merge(other)
        (texts[other_actor],) = patch_texts(doc, before)
    lost, won = texts["01" * 16], texts["cd" * 16]
    assert lost == 'Patch { obj: Root, path: [], action: Conflict { prop: Map("x") } }'
    assert both_readers(lost) == Unmoved(ROOT_KEY)
    assert won == (
        'Patch { obj: Root, path: [], action: PutMap { key: "x", value: (Scalar(Int(2)), '
        f'Id(2, ActorID("{"cd" * 16}"), 1)), conflict: true }} }}'
    )
    assert both_readers(won) == Put(ROOT_KEY, "x", None)


# -- counters (made by JavaScript) -----------------------------------------------------------


def test_counter_shapes_in_a_javascript_document() -> None:
    """Counter { start, current }: both carry the value after all increments."""
    doc = js_document("js_counters_more")
    texts = patch_texts(doc)
    start = 'Patch { obj: Root, path: [], action: PutMap { key: "hits"'
    hits = next(text for text in texts if text.startswith(start))
    assert hits == (
        'Patch { obj: Root, path: [], action: PutMap { key: "hits", value: '
        "(Scalar(Counter(Counter { start: 116, current: 116 })), "
        'Id(4, ActorID("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 0)), conflict: false } }'
    )
    assert both_readers(hits) == Put(ROOT_KEY, "hits", CounterValue(116))
    for text in texts:
        both_readers(text)  # every patch of this document reads both ways alike


def test_a_long_list_is_a_tree_with_children() -> None:
    """A hundred elements: the SequenceTreeNode has child nodes, read in list order."""
    doc = js_document("js_counters_more")
    many = next(t for t in patch_texts(doc) if 'path: [(Root, Map("many"))]' in t)
    assert ", children: [SequenceTreeNode { elements: [" in many
    edit = both_readers(many)
    assert isinstance(edit, Insert) and edit.index == 0
    # In list order: each counter where JavaScript reads its number, the rest readable.
    expected = json.loads((FIXTURES / "js_counters_more.json").read_text())["many"]
    assert len(edit.values) == len(expected)
    _, many_id = doc.get(am.ROOT, "many")
    for index, value in enumerate(edit.values):
        if isinstance(value, CounterValue):
            assert value.current == expected[index]
        else:
            (_, plain), _ = doc.get(many_id, index)
            assert plain == expected[index]
    assert sum(isinstance(value, CounterValue) for value in edit.values) > 10


def test_increment_shape() -> None:
    doc = js_document("js_counters")
    before = doc.get_heads()
    with doc.transaction() as tx:
        tx.increment(am.ROOT, "hits", 3)
    (text,) = patch_texts(doc, before)
    assert text == (
        'Patch { obj: Root, path: [], action: Increment { prop: Map("hits"), value: 3 } }'
    )
    assert both_readers(text) == Increment(ROOT_KEY, "hits", 3)


def test_the_parser_reads_a_whole_patch() -> None:
    """The generic structure the parser gives, on a real patch."""
    doc = js_document("js_counters")
    text = next(t for t in patch_texts(doc) if '"hits"' in t)
    parsed = parse_debug(text)
    assert isinstance(parsed, DebugStruct) and parsed.name == "Patch"
    assert set(parsed.fields) == {"obj", "path", "action"}
    assert parsed.fields["obj"] == DebugCall("Root", [])
    action = parsed.fields["action"]
    assert isinstance(action, DebugStruct) and action.name == "PutMap"
    assert set(action.fields) == {"key", "value", "conflict"}


# -- ids and conversions ---------------------------------------------------------------------


def test_object_ids() -> None:
    """The binding's object id bytes carry (counter, actor) as obj_key and object_id assume."""
    assert am.ROOT == ROOT_ID and obj_key(am.ROOT) == ROOT_KEY
    doc = new_doc()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
        made = tx.put_object(am.ROOT, "m", am.ObjType.Map)
    assert obj_key(made) == (2, ACTOR)
    assert object_id(ACTOR, 2) == made
    assert doc.object_type(object_id(ACTOR, 2)) == am.ObjType.Map
    # A fork numbers its actors differently; the key stays the same.
    fork = doc.fork()
    fork.set_actor(bytes.fromhex("cd" * 16))
    with fork.transaction() as tx:
        tx.put(am.ROOT, "b", am.ScalarType.Int, 1)
    _, again = fork.get(am.ROOT, "m")
    assert obj_key(again) == (2, ACTOR)
    assert obj_key(b"\x10\xff") == "?10ff"


def test_conversions_the_binding_gets_wrong() -> None:
    """Timestamps come back naive local, bytes as lists of ints; one insert is one element."""
    doc = new_doc()
    instant = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    with doc.transaction() as tx:
        tx.put(am.ROOT, "ts", am.ScalarType.Timestamp, instant)
        tx.put(am.ROOT, "b", am.ScalarType.Bytes, b"\x00\xff")
        text = tx.put_object(am.ROOT, "t", am.ObjType.Text)
        insert_text(tx, text, 0, "hé😀")
    (_, read), _ = doc.get(am.ROOT, "ts")
    assert read.tzinfo is None
    assert utc_from_binding(read) == (instant, False)
    (_, raw), _ = doc.get(am.ROOT, "b")
    assert raw == [0, 255] and bytes_from_binding(raw) == b"\x00\xff"
    assert doc.text(text) == "hé😀" and doc.length(text) == 3


def test_the_package_exposes_every_workaround() -> None:
    """binding is the one place: its index names each part."""
    for name in ("version", "failures", "debug_text", "patch_text", "ids", "conversions"):
        assert f":mod:`.{name}`" in (binding.__doc__ or "")
