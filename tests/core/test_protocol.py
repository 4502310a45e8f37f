"""Unit tests for autosync_jupyter.core.protocol: the CBOR wire format of automerge-repo.

Golden bytes are taken from protocol.md §1.2. ``cborx`` below models the
JavaScript encoder (cbor-x with ``useRecords: false``: 16-bit map headers,
``undefined`` values, float64 for numbers of 2**32 and above) and is itself
checked against those golden bytes. ``wire_item`` is a small independent CBOR
parser used to check the byte-level encoding rules of what we send.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any, get_args

import automerge.core as am
import base58
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autosync_jupyter.core.protocol import (
    PROTOCOL_VERSION,
    DocUnavailable,
    Ephemeral,
    Error,
    HeadsAt,
    Join,
    Leave,
    Message,
    Peer,
    PeerMetadata,
    RemoteHeadsChanged,
    RemoteSubscriptionChange,
    Request,
    Sync,
    UnknownMessage,
    decode,
    encode,
)
from autosync_jupyter.errors import ProtocolError
from autosync_jupyter.ids import DocumentId, PeerId, encode_heads

DOC_ID = DocumentId("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
EMPTY_DOC_SYNC = bytes.fromhex("42000001000000020284")  # §1.2 / §4.1
UNDEFINED = cbor2.undefined

# protocol.md §1.2: the join of an ephemeral JS client, exactly as cbor-x writes it.
GOLDEN_JOIN = bytes.fromhex(
    "b90004"
    "6474797065" "646a6f696e"
    "6873656e6465724964" "68706565722d616263"
    "6c706565724d65746164617461"
    "b90002"
    "6973746f726167654964" "f7"
    "6b6973457068656d6572616c" "f5"
    "7819737570706f7274656450726f746f636f6c56657273696f6e73"
    "816131"
)  # fmt: skip

# protocol.md §1.2: a request for DOC_ID carrying an empty document's first sync message.
GOLDEN_REQUEST = bytes.fromhex(
    "b9000564747970656772657175657374687461726765744964637372766a646f"
    "63756d656e744964781c344e4d4e6e6b4d684c386a5872644a396a616d533538"
    "50415664587564646174614a420000010000000202846873656e646572496468"
    "706565722d616263"
)

TIMESTAMP_MS = 1751500000000
TIMESTAMP_FLOAT64 = bytes.fromhex("fb42797cd890b00000")
TIMESTAMP_UINT64 = bytes.fromhex("1b00000197cd890b00")


# -- helpers: a cbor-x model and a strict CBOR reader -----------------------------------


def _head(major: int, arg: int, *, map16: bool = False) -> bytes:
    if map16:
        return bytes([(major << 5) | 25]) + arg.to_bytes(2, "big")
    if arg < 24:
        return bytes([(major << 5) | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([(major << 5) | info]) + arg.to_bytes(size, "big")
    raise ValueError(arg)


def cborx(value: Any) -> bytes:
    """Encode ``value`` the way cbor-x does for automerge-repo (see protocol.md §1.2)."""
    if value is UNDEFINED:
        return b"\xf7"
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int) and 0 <= value <= 0xFFFFFFFF:
        return _head(0, value)
    if isinstance(value, int) and -(2**32) <= value < 0:
        return _head(1, -1 - value)
    if isinstance(value, int) and abs(value) >= 2**64:
        raise TypeError("cbor-x writes such a BigInt as a tagged bignum; not modelled")
    if isinstance(value, (int, float)):
        return b"\xfb" + struct.pack(">d", float(value))
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(value, (list, tuple)):
        return _head(4, len(value)) + b"".join(cborx(v) for v in value)
    if isinstance(value, dict):
        body = b"".join(cborx(k) + cborx(v) for k, v in value.items())
        return _head(5, len(value), map16=True) + body
    raise TypeError(type(value))


@dataclasses.dataclass
class Item:
    """One CBOR data item as it sits on the wire."""

    major: int
    info: int
    value: Any  # int | float | bytes | str | list[Item] | list[tuple[Item, Item]] | tag


def wire_item(buf: bytes, pos: int = 0) -> tuple[Item, int]:
    """Parse one CBOR item strictly (definite lengths only); return it and the end offset."""
    initial = buf[pos]
    pos += 1
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        arg = info
    elif info <= 27:
        size = 1 << (info - 24)
        arg = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise AssertionError(f"indefinite length or reserved additional info {info}")
    if major == 0:
        return Item(major, info, arg), pos
    if major == 1:
        return Item(major, info, -1 - arg), pos
    if major == 2:
        return Item(major, info, buf[pos : pos + arg]), pos + arg
    if major == 3:
        return Item(major, info, buf[pos : pos + arg].decode("utf-8")), pos + arg
    if major == 4:
        items = []
        for _ in range(arg):
            item, pos = wire_item(buf, pos)
            items.append(item)
        return Item(major, info, items), pos
    if major == 5:
        pairs = []
        for _ in range(arg):
            key, pos = wire_item(buf, pos)
            val, pos = wire_item(buf, pos)
            pairs.append((key, val))
        return Item(major, info, pairs), pos
    if major == 6:
        inner, pos = wire_item(buf, pos)
        return Item(major, info, (arg, inner)), pos
    if info == 25:
        return Item(major, info, struct.unpack(">e", arg.to_bytes(2, "big"))[0]), pos
    if info == 26:
        return Item(major, info, struct.unpack(">f", arg.to_bytes(4, "big"))[0]), pos
    if info == 27:
        return Item(major, info, struct.unpack(">d", arg.to_bytes(8, "big"))[0]), pos
    return Item(major, info, arg), pos


def _walk(item: Item) -> list[Item]:
    out = [item]
    if item.major == 4:
        for child in item.value:
            out.extend(_walk(child))
    elif item.major == 5:
        for key, val in item.value:
            out.extend(_walk(key))
            out.extend(_walk(val))
    elif item.major == 6:
        out.extend(_walk(item.value[1]))
    return out


def field(item: Item, key: str) -> Item:
    """The value item stored under text key ``key`` of map ``item``."""
    assert item.major == 5
    found: list[Item] = [v for k, v in item.value if k.major == 3 and k.value == key]
    assert len(found) == 1, f"{key!r} occurs {len(found)} times"
    return found[0]


def keys(item: Item) -> set[str]:
    """The text keys of map ``item``."""
    return {k.value for k, _ in item.value}


def check_wire_rules(data: bytes) -> Item:
    """Assert the §1.2 rules for bytes we send; return the parsed top-level map."""
    top, end = wire_item(data)
    assert end == len(data), "trailing bytes"
    assert top.major == 5, "a message is a map"
    for item in _walk(top):
        assert item.major != 6, "no CBOR tags"
        assert not (item.major in (0, 1) and item.info == 27), "no 64-bit integers"
        assert not (item.major == 7 and item.info in (22, 23)), "no null/undefined"
        if item.major == 5:
            assert all(k.major == 3 for k, _ in item.value), "map keys are text"
    if "data" in keys(top):
        assert field(top, "data").major == 2, "data is a byte string"
    return top


def as_map(msg: Message) -> dict[str, Any]:
    """The plain map that encode(msg) puts on the wire."""
    value = cbor2.loads(encode(msg))
    assert isinstance(value, dict)
    return value


def raw(mapping: dict[Any, Any]) -> bytes:
    """cbor2-encode a hand-made message map."""
    return cbor2.dumps(mapping)


def real_sync_messages() -> tuple[bytes, bytes]:
    """First sync messages of an empty document and of a document with one change."""
    empty = am.Document()
    first_empty = empty.generate_sync_message(am.SyncState())
    full = am.Document()
    with full.transaction() as tx:
        tx.put(am.ROOT, "title", am.ScalarType.Str, "hello")
    first_full = full.generate_sync_message(am.SyncState())
    return bytes(first_empty.encode()), bytes(first_full.encode())


# -- golden bytes -------------------------------------------------------------------------


def test_cborx_model_reproduces_the_golden_bytes() -> None:
    """The test's cbor-x model writes exactly the 101-byte join and 104-byte request of §1.2."""
    assert len(GOLDEN_JOIN) == 101
    assert len(GOLDEN_REQUEST) == 104
    join = {
        "type": "join",
        "senderId": "peer-abc",
        "peerMetadata": {"storageId": UNDEFINED, "isEphemeral": True},
        "supportedProtocolVersions": ["1"],
    }
    request = {
        "type": "request",
        "targetId": "srv",
        "documentId": DOC_ID,
        "data": EMPTY_DOC_SYNC,
        "senderId": "peer-abc",
    }
    assert cborx(join) == GOLDEN_JOIN
    assert cborx(request) == GOLDEN_REQUEST
    assert cborx(TIMESTAMP_MS) == TIMESTAMP_FLOAT64


def test_decode_golden_cborx_join() -> None:
    """The 101-byte cbor-x join (16-bit map headers, undefined storageId) decodes fully."""
    msg = decode(GOLDEN_JOIN)
    assert msg == Join(
        sender_id=PeerId("peer-abc"),
        supported_protocol_versions=("1",),
        peer_metadata=PeerMetadata(storage_id=None, is_ephemeral=True),
    )


def test_decode_golden_request() -> None:
    """The 104-byte request of §1.2 decodes to its five fields."""
    msg = decode(GOLDEN_REQUEST)
    assert isinstance(msg, Request)
    assert msg.sender_id == "peer-abc"
    assert msg.target_id == "srv"
    assert msg.document_id == DOC_ID
    assert msg.data == EMPTY_DOC_SYNC
    assert isinstance(msg.data, bytes)


def test_preferred_encoding_join_is_86_bytes_and_equivalent() -> None:
    """Our encoding of the same join is the 86-byte preferred form and decodes identically."""
    ours = encode(Join(sender_id=PeerId("peer-abc"), peer_metadata=PeerMetadata(is_ephemeral=True)))
    assert len(ours) == 86
    assert ours.startswith(bytes.fromhex("a46474797065"))
    assert decode(ours) == decode(GOLDEN_JOIN)


def test_encode_request_matches_golden_content() -> None:
    """Our request carries the same map as the golden cbor-x bytes (preferred headers)."""
    ours = encode(Request(PeerId("peer-abc"), PeerId("srv"), DOC_ID, EMPTY_DOC_SYNC))
    assert cbor2.loads(ours) == cbor2.loads(GOLDEN_REQUEST)
    assert len(ours) == 102  # 104 minus the 16-bit map header's two extra bytes
    check_wire_rules(ours)


def test_decode_float64_timestamp_in_remote_heads_changed() -> None:
    """A cbor-x remote-heads-changed with timestamp fb 42797cd890b00000 decodes to 1751500000000."""
    head = encode_heads([bytes(range(32))])[0]
    data = cborx(
        {
            "type": "remote-heads-changed",
            "senderId": "peer-abc",
            "targetId": "srv",
            "documentId": DOC_ID,
            "newHeads": {"storage-1": {"heads": [head], "timestamp": TIMESTAMP_MS}},
        }
    )
    assert TIMESTAMP_FLOAT64 in data
    msg = decode(data)
    assert isinstance(msg, RemoteHeadsChanged)
    assert msg.new_heads == {"storage-1": HeadsAt(heads=(head,), timestamp=TIMESTAMP_MS)}
    assert msg.new_heads["storage-1"].timestamp == 1751500000000


def test_decode_uint64_timestamp_too() -> None:
    """A timestamp sent as a 64-bit CBOR integer (1b …) is accepted as well."""
    data = raw(
        {
            "type": "remote-heads-changed",
            "senderId": "a",
            "targetId": "b",
            "documentId": DOC_ID,
            "newHeads": {"s": {"heads": [], "timestamp": TIMESTAMP_MS}},
        }
    )
    assert TIMESTAMP_UINT64 in data
    msg = decode(data)
    assert isinstance(msg, RemoteHeadsChanged)
    assert msg.new_heads["s"].timestamp == TIMESTAMP_MS


@pytest.mark.parametrize("count", [0, 7, 2**32, 2**40 + 1, 2**53 - 1])
def test_decode_integral_float_count(count: int) -> None:
    """An ephemeral count sent as float64 decodes to the equal int."""
    body = {
        "type": "ephemeral",
        "senderId": "a",
        "targetId": "b",
        "documentId": DOC_ID,
        "sessionId": "s",
        "count": float(count),
        "data": b"\xa0",
    }
    data = cborx(body)
    assert b"\xfb" + struct.pack(">d", float(count)) in data
    msg = decode(data)
    assert isinstance(msg, Ephemeral)
    assert msg.count == count
    assert type(msg.count) is int


# -- round trips ------------------------------------------------------------------------

peer_ids = st.text(min_size=1, max_size=40).map(PeerId)
document_ids = st.binary(min_size=1, max_size=64).map(
    lambda b: DocumentId(base58.b58encode_check(b).decode("ascii"))
)
sync_data = st.binary(min_size=1, max_size=200)
bs58_heads = st.lists(st.binary(min_size=32, max_size=32), max_size=3).map(
    lambda hs: tuple(encode_heads(hs))
)
timestamps = st.one_of(
    st.integers(min_value=0, max_value=2**53).map(float),
    st.floats(allow_nan=False, allow_infinity=False),
)
metadata = st.none() | st.builds(
    PeerMetadata,
    storage_id=st.none() | st.text(min_size=1, max_size=40),
    is_ephemeral=st.none() | st.booleans(),
)
json_like = st.recursive(
    st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(
        lambda k: (
            k not in {"type", "senderId", "targetId", "documentId", "sessionId", "count", "data"}
        )
    ),
    json_like,
    max_size=3,
)

MESSAGE_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    Join: st.builds(
        Join,
        sender_id=peer_ids,
        supported_protocol_versions=st.none()
        | st.lists(st.text(max_size=3), max_size=3).map(tuple),
        peer_metadata=metadata,
    ),
    Peer: st.builds(
        Peer,
        sender_id=peer_ids,
        target_id=peer_ids,
        selected_protocol_version=st.text(min_size=1, max_size=3),
        peer_metadata=metadata,
    ),
    Request: st.builds(Request, peer_ids, peer_ids, document_ids, sync_data),
    Sync: st.builds(Sync, peer_ids, peer_ids, document_ids, sync_data),
    DocUnavailable: st.builds(DocUnavailable, peer_ids, peer_ids, document_ids),
    Ephemeral: st.builds(
        Ephemeral,
        sender_id=peer_ids,
        target_id=peer_ids,
        document_id=document_ids,
        session_id=st.text(min_size=1, max_size=20),
        count=st.integers(min_value=0, max_value=2**53 - 1),
        data=st.binary(max_size=100),
        extra=extra_fields,
    ),
    RemoteSubscriptionChange: st.builds(
        RemoteSubscriptionChange,
        sender_id=peer_ids,
        target_id=peer_ids,
        add=st.lists(st.text(max_size=36), max_size=3).map(tuple),
        remove=st.lists(st.text(max_size=36), max_size=3).map(tuple),
    ),
    RemoteHeadsChanged: st.builds(
        RemoteHeadsChanged,
        sender_id=peer_ids,
        target_id=peer_ids,
        document_id=document_ids,
        new_heads=st.dictionaries(
            st.text(max_size=36), st.builds(HeadsAt, heads=bs58_heads, timestamp=timestamps)
        ),
    ),
    Leave: st.builds(Leave, peer_ids),
    Error: st.builds(
        Error,
        sender_id=peer_ids,
        message=st.text(max_size=40),
        target_id=st.none() | peer_ids,
    ),
}
messages: st.SearchStrategy[Message] = st.one_of(*MESSAGE_STRATEGIES.values())


def test_message_strategy_covers_every_known_type() -> None:
    """The round-trip strategies cover every message class of the Message union bar Unknown."""
    assert set(MESSAGE_STRATEGIES) == set(get_args(Message)) - {UnknownMessage}


@given(messages)
@settings(max_examples=400)
def test_every_message_round_trips(msg: Message) -> None:
    """decode(encode(m)) == m for every message type, including Ephemeral's extra fields."""
    back = decode(encode(msg))
    assert back == msg
    assert type(back) is type(msg)
    if isinstance(msg, Ephemeral):
        assert isinstance(back, Ephemeral)
        assert dict(back.extra) == dict(msg.extra)


@given(messages)
@settings(max_examples=400)
def test_every_encoded_message_obeys_the_wire_rules(msg: Message) -> None:
    """Encoded messages: a map, text keys, data as bytes, no tags, no uint64, no null/undefined."""
    check_wire_rules(encode(msg))


@given(messages)
@settings(max_examples=200)
def test_cborx_form_of_every_message_decodes_the_same(msg: Message) -> None:
    """The JS (cbor-x) encoding of any message decodes to the same message as ours."""
    assert decode(cborx(as_map(msg))) == msg


def test_unknown_message_round_trips_with_its_fields() -> None:
    """An unknown type is kept with all its fields and re-encodes to the same map."""
    original = {"type": "frobnicate", "senderId": "peer-abc", "x": [1, 2], "y": {"z": b"q"}}
    msg = decode(cborx(original))
    assert isinstance(msg, UnknownMessage)
    assert msg.type == "frobnicate"
    assert msg.sender_id == "peer-abc"
    assert dict(msg.fields) == original
    assert cbor2.loads(encode(msg)) == original


# -- encoding rules -----------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\x42\x00", bytearray(b"\x42\x01"), memoryview(b"\x43\x00")])
def test_data_is_an_untagged_byte_string(data: bytes) -> None:
    """data goes out as CBOR major type 2 with no tag, whatever bytes-like object holds it."""
    top = check_wire_rules(encode(Sync(PeerId("a"), PeerId("b"), DOC_ID, data)))
    item = field(top, "data")
    assert item.major == 2
    assert item.value == bytes(data)
    eph = Ephemeral(PeerId("a"), PeerId("b"), DOC_ID, "s", 1, data)
    assert field(check_wire_rules(encode(eph)), "data").major == 2


def test_one_element_lists_are_arrays() -> None:
    """supportedProtocolVersions, add, remove and heads are arrays even with one element."""
    join = check_wire_rules(encode(Join(PeerId("a"), ("1",))))
    versions = field(join, "supportedProtocolVersions")
    assert versions.major == 4
    assert [i.value for i in versions.value] == ["1"]

    sub = check_wire_rules(
        encode(RemoteSubscriptionChange(PeerId("a"), PeerId("b"), ("x",), ("y",)))
    )
    for key in ("add", "remove"):
        assert field(sub, key).major == 4
        assert len(field(sub, key).value) == 1

    head = encode_heads([bytes(32)])[0]
    rhc = RemoteHeadsChanged(PeerId("a"), PeerId("b"), DOC_ID, {"s": HeadsAt((head,), 5.0)})
    heads = field(field(field(check_wire_rules(encode(rhc)), "newHeads"), "s"), "heads")
    assert heads.major == 4
    assert [i.value for i in heads.value] == [head]


@pytest.mark.parametrize(
    "timestamp", [TIMESTAMP_MS, float(TIMESTAMP_MS), 2**32, 2**63, 2**64 + 1, 1.5]
)
def test_timestamps_never_use_64_bit_integers(timestamp: float) -> None:
    """Timestamps of 2**32 and above go out as float64 (fb), never as a CBOR uint64."""
    msg = RemoteHeadsChanged(PeerId("a"), PeerId("b"), DOC_ID, {"s": HeadsAt((), timestamp)})
    data = encode(msg)
    item = field(field(field(check_wire_rules(data), "newHeads"), "s"), "timestamp")
    assert (item.major, item.info) == (7, 27)
    assert item.value == float(timestamp)


def test_timestamp_example_is_sent_exactly_as_js_sends_it() -> None:
    """1751500000000 ms is written as fb 42797cd890b00000, not as 1b 00000197cd890b00."""
    msg = RemoteHeadsChanged(PeerId("a"), PeerId("b"), DOC_ID, {"s": HeadsAt((), TIMESTAMP_MS)})
    data = encode(msg)
    assert TIMESTAMP_FLOAT64 in data
    assert TIMESTAMP_UINT64 not in data


def test_small_whole_timestamp_is_an_integer() -> None:
    """A whole timestamp below 2**32 goes out as a CBOR unsigned integer."""
    msg = RemoteHeadsChanged(PeerId("a"), PeerId("b"), DOC_ID, {"s": HeadsAt((), 1000.0)})
    item = field(field(field(check_wire_rules(encode(msg)), "newHeads"), "s"), "timestamp")
    assert (item.major, item.value) == (0, 1000)


@pytest.mark.parametrize("count", [0, 23, 2**32 - 1, 2**32, 2**45, 2**53 - 1])
def test_count_never_uses_64_bit_integers(count: int) -> None:
    """An ephemeral count below 2**32 is a CBOR uint, above it a float64; both round-trip."""
    msg = Ephemeral(PeerId("a"), PeerId("b"), DOC_ID, "s", count, b"\xa0")
    data = encode(msg)
    item = field(check_wire_rules(data), "count")
    if count <= 2**32 - 1:
        assert (item.major, item.value) == (0, count)
    else:
        assert (item.major, item.info, item.value) == (7, 27, float(count))
    assert decode(data) == msg


def test_absent_optional_fields_are_omitted() -> None:
    """None/empty optional fields are left out, never sent as null or undefined."""
    bare_join = as_map(Join(PeerId("a"), supported_protocol_versions=None, peer_metadata=None))
    assert set(bare_join) == {"type", "senderId"}

    meta_join = as_map(Join(PeerId("a"), peer_metadata=PeerMetadata(is_ephemeral=True)))
    assert meta_join["peerMetadata"] == {"isEphemeral": True}

    empty_meta = as_map(Peer(PeerId("a"), PeerId("b"), peer_metadata=PeerMetadata()))
    assert empty_meta["peerMetadata"] == {}

    no_meta_peer = as_map(Peer(PeerId("a"), PeerId("b")))
    assert set(no_meta_peer) == {"type", "senderId", "targetId", "selectedProtocolVersion"}

    error = as_map(Error(PeerId("srv"), "unauthorized"))
    assert set(error) == {"type", "senderId", "message"}

    sub = as_map(RemoteSubscriptionChange(PeerId("a"), PeerId("b")))
    assert set(sub) == {"type", "senderId", "targetId"}

    for msg in (
        Join(PeerId("a"), None, PeerMetadata()),
        Peer(PeerId("a"), PeerId("b"), peer_metadata=PeerMetadata(storage_id=None)),
        Error(PeerId("a"), "m", target_id=None),
    ):
        check_wire_rules(encode(msg))


def test_peer_message_defaults() -> None:
    """A Peer built with defaults announces protocol version "1"."""
    msg = as_map(Peer(PeerId("srv"), PeerId("peer-abc")))
    assert msg["selectedProtocolVersion"] == PROTOCOL_VERSION == "1"
    assert msg["type"] == "peer"


def test_ephemeral_unknown_fields_survive_a_relay() -> None:
    """Unknown ephemeral fields are kept on decode and re-encoded when only targetId changes."""
    original = {
        "type": "ephemeral",
        "senderId": "author",
        "targetId": "srv",
        "documentId": DOC_ID,
        "sessionId": "sess",
        "count": 12,
        "data": cbor2.dumps({"__presence": {"type": "heartbeat"}}),
        "x-trace": "abc",
        "nested": {"list": [1, "two", b"\x03"], "flag": True},
    }
    msg = decode(cborx(original))
    assert isinstance(msg, Ephemeral)
    assert dict(msg.extra) == {"x-trace": "abc", "nested": original["nested"]}
    relayed = cbor2.loads(encode(dataclasses.replace(msg, target_id=PeerId("other"))))
    assert relayed == {**original, "targetId": "other"}


# -- decoding rules -----------------------------------------------------------------------


def test_error_without_target_id() -> None:
    """An error with no targetId (R's authentication failure) decodes with target_id None."""
    msg = decode(cborx({"type": "error", "senderId": "srv", "message": "Unauthorized"}))
    assert msg == Error(sender_id=PeerId("srv"), message="Unauthorized", target_id=None)
    undefined = decode(cborx({"type": "error", "senderId": "srv", "targetId": UNDEFINED}))
    assert isinstance(undefined, Error)
    assert undefined.target_id is None


def test_metadata_is_a_fallback_for_peer_metadata() -> None:
    """A join carrying the README's 'metadata' key is read like 'peerMetadata'."""
    msg = decode(
        raw(
            {"type": "join", "senderId": "a", "metadata": {"storageId": "s1", "isEphemeral": False}}
        )
    )
    assert isinstance(msg, Join)
    assert msg.peer_metadata == PeerMetadata(storage_id="s1", is_ephemeral=False)


def test_peer_metadata_wins_over_metadata() -> None:
    """When both keys are present, peerMetadata is the one used."""
    msg = decode(
        raw(
            {
                "type": "join",
                "senderId": "a",
                "metadata": {"storageId": "old"},
                "peerMetadata": {"storageId": "new"},
            }
        )
    )
    assert isinstance(msg, Join)
    assert msg.peer_metadata == PeerMetadata(storage_id="new")


@pytest.mark.parametrize("versions", ["absent", UNDEFINED, None], ids=repr)
def test_join_without_supported_versions_gives_none(versions: object) -> None:
    """A join without supportedProtocolVersions (absent, undefined or null) decodes to None."""
    body: dict[str, Any] = {"type": "join", "senderId": "a"}
    if versions != "absent":
        body["supportedProtocolVersions"] = versions
    msg = decode(cborx(body))
    assert isinstance(msg, Join)
    assert msg.supported_protocol_versions is None
    assert msg.peer_metadata is None


def test_undefined_add_and_remove_are_empty() -> None:
    """remote-subscription-change with add/remove undefined decodes to empty tuples."""
    msg = decode(
        cborx(
            {
                "type": "remote-subscription-change",
                "senderId": "a",
                "targetId": "b",
                "add": ["s1"],
                "remove": UNDEFINED,
            }
        )
    )
    assert msg == RemoteSubscriptionChange(PeerId("a"), PeerId("b"), add=("s1",), remove=())


def test_leave_decodes() -> None:
    """A leave decodes to Leave with its sender."""
    assert decode(cborx({"type": "leave", "senderId": "a"})) == Leave(PeerId("a"))


def test_unknown_type_is_not_an_error() -> None:
    """An unknown type comes back as UnknownMessage keeping every field, even without senderId."""
    msg = decode(raw({"type": "future-thing", "payload": [1, {"a": b"b"}]}))
    assert isinstance(msg, UnknownMessage)
    assert msg.type == "future-thing"
    assert msg.sender_id is None
    assert dict(msg.fields) == {"type": "future-thing", "payload": [1, {"a": b"b"}]}


def test_empty_storage_id_means_none() -> None:
    """An empty or undefined storageId decodes to None."""
    for storage_id in ("", UNDEFINED, None):
        msg = decode(
            cborx({"type": "join", "senderId": "a", "peerMetadata": {"storageId": storage_id}})
        )
        assert isinstance(msg, Join)
        assert msg.peer_metadata == PeerMetadata(storage_id=None)


# -- hostile input ------------------------------------------------------------------------


def _sync(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "sync",
        "senderId": "peer-abc",
        "targetId": "srv",
        "documentId": DOC_ID,
        "data": EMPTY_DOC_SYNC,
    }
    body.update(changes)
    return cborx({k: v for k, v in body.items() if v is not _DROP})


def _ephemeral(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "ephemeral",
        "senderId": "peer-abc",
        "targetId": "srv",
        "documentId": DOC_ID,
        "sessionId": "sess",
        "count": 1,
        "data": b"\xa0",
    }
    body.update(changes)
    return cborx({k: v for k, v in body.items() if v is not _DROP})


def _join(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "join",
        "senderId": "peer-abc",
        "peerMetadata": {"storageId": "s", "isEphemeral": False},
        "supportedProtocolVersions": ["1"],
    }
    body.update(changes)
    return cborx({k: v for k, v in body.items() if v is not _DROP})


def _heads_changed(entry: Any) -> bytes:
    body = {
        "type": "remote-heads-changed",
        "senderId": "a",
        "targetId": "b",
        "documentId": DOC_ID,
        "newHeads": entry,
    }
    return cborx({k: v for k, v in body.items() if v is not _DROP})


_DROP = object()

HOSTILE: list[Any] = [
    pytest.param(b"", "empty", id="empty-bytes"),
    pytest.param(bytes.fromhex("9b0000000100000000"), "CBOR map", id="array-of-2**32"),
    pytest.param(bytes.fromhex("9bffffffffffffffff"), "CBOR map", id="array-of-2**64"),
    pytest.param(bytes.fromhex("5b7fffffffffffffff"), "CBOR map", id="bytes-of-2**63"),
    pytest.param(bytes.fromhex("bb0000000100000000"), "CBOR items", id="map-of-2**32"),
    pytest.param(bytes.fromhex("05"), "map", id="bare-int"),
    pytest.param(bytes.fromhex("f6"), "map", id="null"),
    pytest.param(bytes.fromhex("f7"), "map", id="undefined"),
    pytest.param(bytes.fromhex("8161"), "CBOR map", id="truncated"),
    pytest.param(bytes.fromhex("1c"), "CBOR map", id="reserved-info"),
    pytest.param(bytes.fromhex("ff"), "malformed CBOR", id="lone-break"),
    pytest.param(bytes.fromhex("d82543000102"), "CBOR map", id="bad-uuid-tag"),
    pytest.param(bytes.fromhex("d81e820100"), "CBOR map", id="zero-denominator-fraction"),
    pytest.param(cborx(["join"]), "map", id="array"),
    pytest.param(cborx({"senderId": "a"}), "type", id="no-type"),
    pytest.param(cborx({"type": 5, "senderId": "a"}), "type", id="type-int"),
    pytest.param(raw({"type": b"join", "senderId": "a"}), "type", id="type-bytes"),
    pytest.param(cborx({"type": "", "senderId": "a"}), "type", id="type-empty"),
    pytest.param(cborx({"type": UNDEFINED}), "type", id="type-undefined"),
    pytest.param(GOLDEN_JOIN + b"\x00", "after the CBOR", id="trailing-byte"),
    pytest.param(GOLDEN_JOIN + GOLDEN_REQUEST, "after the CBOR", id="two-messages"),
    pytest.param(b"\x81" * 100_000 + b"\x00", "CBOR map", id="nested-arrays-100k"),
    pytest.param(b"\x9f" * 100_000, "CBOR map", id="nested-indefinite-100k"),
    pytest.param(b"\xa1\x61a" * 100_000 + b"\x00", "nest at most", id="nested-maps-100k"),
    pytest.param(
        cborx({"type": "frob", "x": 0})[:-1] + b"\x81" * 100_000 + b"\x00",
        "nest at most",
        id="nested-inside-message",
    ),
    pytest.param(b'{"type":"join","senderId":"peer-abc"}', "CBOR map", id="json-text"),
    pytest.param(b"hello", "CBOR map", id="text-frame"),
    pytest.param(b"ping", "CBOR map", id="short-text-frame"),
    # documentId
    pytest.param(_sync(documentId="!!!invalid!!!"), "document id", id="doc-id-garbage"),
    pytest.param(_sync(documentId="../../etc"), "document id", id="doc-id-path"),
    pytest.param(
        _sync(documentId="a6a0b1f0-6a4c-4b6e-9a4f-0c5e2d3c1b2a"), "document id", id="uuid"
    ),
    pytest.param(_sync(documentId=DOC_ID[:-1] + "v"), "checksum", id="doc-id-checksum"),
    pytest.param(_sync(documentId=123), "document id", id="doc-id-int"),
    pytest.param(_sync(documentId=DOC_ID.encode()), "document id", id="doc-id-bytes"),
    pytest.param(_sync(documentId=_DROP), "document id", id="doc-id-missing"),
    pytest.param(_sync(documentId=UNDEFINED), "document id", id="doc-id-undefined"),
    pytest.param(_sync(documentId="x" * 10_000), "document id", id="doc-id-10k"),
    # data
    pytest.param(_sync(data=list(EMPTY_DOC_SYNC)), "'data'", id="data-list"),
    pytest.param(_sync(data="QgAAAQAAAAICjg=="), "'data'", id="data-string"),
    pytest.param(_sync(data=_DROP), "'data'", id="data-missing"),
    pytest.param(_sync(data=b""), "'data'", id="data-empty"),
    pytest.param(
        raw(
            {
                "type": "sync",
                "senderId": "a",
                "targetId": "b",
                "documentId": DOC_ID,
                "data": cbor2.CBORTag(64, b"\x42\x00"),
            }
        ),
        "tags",
        id="data-tagged",
    ),
    pytest.param(_ephemeral(data=[1, 2]), "'data'", id="ephemeral-data-list"),
    # count
    pytest.param(_ephemeral(count=-1), "'count'", id="count-negative"),
    pytest.param(_ephemeral(count=True), "'count'", id="count-true"),
    pytest.param(_ephemeral(count=False), "'count'", id="count-false"),
    pytest.param(_ephemeral(count=2.5), "'count'", id="count-fraction"),
    pytest.param(_ephemeral(count=-3.0), "'count'", id="count-negative-float"),
    pytest.param(_ephemeral(count=math.nan), "'count'", id="count-nan"),
    pytest.param(_ephemeral(count=math.inf), "'count'", id="count-inf"),
    pytest.param(_ephemeral(count="1"), "'count'", id="count-string"),
    pytest.param(_ephemeral(count=_DROP), "'count'", id="count-missing"),
    pytest.param(_ephemeral(sessionId=""), "'sessionId'", id="session-empty"),
    pytest.param(_ephemeral(sessionId=7), "'sessionId'", id="session-int"),
    # senderId / targetId
    pytest.param(_sync(senderId=""), "'senderId'", id="sender-empty"),
    pytest.param(_sync(senderId=5), "'senderId'", id="sender-int"),
    pytest.param(_sync(senderId=b"peer"), "'senderId'", id="sender-bytes"),
    pytest.param(_sync(senderId=_DROP), "'senderId'", id="sender-missing"),
    pytest.param(_sync(senderId=UNDEFINED), "'senderId'", id="sender-undefined"),
    pytest.param(_sync(senderId="p" * 10_000), "'senderId'", id="sender-10k"),
    pytest.param(_join(senderId=""), "'senderId'", id="join-sender-empty"),
    pytest.param(_join(senderId=["a"]), "'senderId'", id="join-sender-list"),
    pytest.param(cborx({"type": "leave", "senderId": 1}), "'senderId'", id="leave-sender-int"),
    pytest.param(cborx({"type": "error", "message": "m"}), "'senderId'", id="error-no-sender"),
    pytest.param(_sync(targetId=_DROP), "'targetId'", id="target-missing"),
    pytest.param(_sync(targetId=5), "'targetId'", id="target-int"),
    # join / peer metadata
    pytest.param(_join(peerMetadata={"storageId": 5}), "storageId", id="storage-int"),
    pytest.param(_join(peerMetadata={"storageId": ["s"]}), "storageId", id="storage-list"),
    pytest.param(_join(peerMetadata={"storageId": b"s"}), "storageId", id="storage-bytes"),
    pytest.param(_join(peerMetadata={"storageId": "s" * 10_000}), "storageId", id="storage-10k"),
    pytest.param(_join(peerMetadata={"isEphemeral": 1}), "isEphemeral", id="ephemeral-int"),
    pytest.param(_join(peerMetadata={"isEphemeral": "true"}), "isEphemeral", id="ephemeral-str"),
    pytest.param(_join(peerMetadata=["s"]), "peerMetadata", id="metadata-list"),
    pytest.param(_join(peerMetadata="s"), "peerMetadata", id="metadata-string"),
    pytest.param(_join(peerMetadata=_DROP, metadata=7), "peerMetadata", id="fallback-int"),
    pytest.param(_join(supportedProtocolVersions="1"), "supportedProtocolVersions", id="vers-str"),
    pytest.param(_join(supportedProtocolVersions=[1]), "supportedProtocolVersions", id="vers-int"),
    pytest.param(
        cborx({"type": "peer", "senderId": "s", "targetId": "c"}),
        "selectedProtocolVersion",
        id="peer-no-version",
    ),
    # remote heads / subscriptions
    pytest.param(_heads_changed([]), "newHeads", id="new-heads-list"),
    pytest.param(_heads_changed(_DROP), "newHeads", id="new-heads-missing"),
    pytest.param(_heads_changed({"s": []}), "newHeads", id="new-heads-entry-list"),
    pytest.param(_heads_changed({"s": {"heads": "h", "timestamp": 1}}), "heads", id="heads-str"),
    pytest.param(_heads_changed({"s": {"heads": [1], "timestamp": 1}}), "heads", id="heads-int"),
    pytest.param(_heads_changed({"s": {"heads": []}}), "timestamp", id="ts-missing"),
    pytest.param(_heads_changed({"s": {"heads": [], "timestamp": "1"}}), "timestamp", id="ts-str"),
    pytest.param(
        _heads_changed({"s": {"heads": [], "timestamp": True}}), "timestamp", id="ts-bool"
    ),
    pytest.param(
        _heads_changed({"s": {"heads": [], "timestamp": math.nan}}), "timestamp", id="nan"
    ),
    pytest.param(
        _heads_changed({"s": {"heads": [], "timestamp": math.inf}}), "timestamp", id="inf"
    ),
    pytest.param(
        raw(
            {
                "type": "remote-heads-changed",
                "senderId": "a",
                "targetId": "b",
                "documentId": DOC_ID,
                "newHeads": {1: {"heads": [], "timestamp": 1}},
            }
        ),
        "newHeads",
        id="new-heads-int-key",
    ),
    pytest.param(
        cborx({"type": "remote-subscription-change", "senderId": "a", "targetId": "b", "add": "s"}),
        "'add'",
        id="add-string",
    ),
    pytest.param(
        cborx(
            {
                "type": "remote-subscription-change",
                "senderId": "a",
                "targetId": "b",
                "remove": [None],
            }
        ),
        "'remove'",
        id="remove-null-item",
    ),
]


@pytest.mark.parametrize(("data", "match"), HOSTILE)
def test_hostile_input_raises_protocol_error(data: bytes, match: str) -> None:
    """Each malformed input raises ProtocolError (nothing else), its message naming the fault."""
    with pytest.raises(ProtocolError, match=match) as info:
        decode(data)
    text = str(info.value)
    assert text
    assert len(text) < 400, "the message must not echo huge input"


def test_protocol_error_message_names_the_message_type() -> None:
    """A field error says which message type and which field were wrong, and what was found."""
    with pytest.raises(ProtocolError) as info:
        decode(_ephemeral(count=-1))
    assert "ephemeral" in str(info.value)
    assert "'count'" in str(info.value)
    with pytest.raises(ProtocolError, match=r"'data' must be a byte string, got list"):
        decode(_sync(data=[1, 2]))
    with pytest.raises(ProtocolError, match=r"'senderId' must be a non-empty string, got nothing"):
        decode(_sync(senderId=_DROP))


def test_huge_bignum_timestamp_is_a_protocol_error() -> None:
    """A timestamp too large for a float (a CBOR bignum) raises ProtocolError, not OverflowError."""
    data = raw(
        {
            "type": "remote-heads-changed",
            "senderId": "a",
            "targetId": "b",
            "documentId": DOC_ID,
            "newHeads": {"s": {"heads": [], "timestamp": 10**400}},
        }
    )
    with pytest.raises(ProtocolError, match="tags"):  # a bignum is a tagged integer
        decode(data)


@pytest.mark.parametrize("count", [2**64, 2**1100, 10**400], ids=["2**64", "2**1100", "10**400"])
def test_decoded_huge_count_can_be_relayed(count: int) -> None:
    """A bignum count is either rejected or re-encodes without error (a relay must not crash)."""
    data = raw(
        {
            "type": "ephemeral",
            "senderId": "a",
            "targetId": "b",
            "documentId": DOC_ID,
            "sessionId": "s",
            "count": count,
            "data": b"\xa0",
        }
    )
    try:
        msg = decode(data)
    except ProtocolError as exc:
        assert "count" in str(exc) or "tags" in str(exc)  # bignums are tagged
        return
    assert isinstance(msg, Ephemeral)
    relayed = decode(encode(msg))
    assert isinstance(relayed, Ephemeral)
    assert relayed.count == msg.count


def test_shared_reference_cycle_in_ephemeral_extra_can_be_relayed() -> None:
    """An extra field built from CBOR value-sharing tags (28/29) is rejected or re-encodes."""
    body = cborx(
        {
            "type": "ephemeral",
            "senderId": "a",
            "targetId": "b",
            "documentId": DOC_ID,
            "sessionId": "s",
            "count": 1,
            "data": b"\xa0",
        }
    )
    # Same map plus "loop": 28([29(0)]), a list that contains itself.
    data = b"\xb9\x00\x08" + body[3:] + cborx("loop") + bytes.fromhex("d81c81d81d00")
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert isinstance(msg, Ephemeral)
    encode(dataclasses.replace(msg, target_id=PeerId("c")))


def _sharing_bomb(levels: int) -> bytes:
    """CBOR for L_n where L_0 = ["a"] and L_i = [L_(i-1), L_(i-1)] via tags 28/29."""
    # Tag 28 numbers the shareable values in reading order: L_n is 0, L_(n-1) is 1, …
    out = bytes.fromhex("d81c816161")
    for i in range(1, levels + 1):
        ref = bytes.fromhex("d81d") + cbor2.dumps(levels - i + 1)
        out = bytes.fromhex("d81c82") + out + ref
    return out


def test_sharing_bomb_helper_builds_the_tree() -> None:
    """The bomb helper's bytes decode (with plain cbor2) to a full binary tree of depth n."""
    tree = cbor2.loads(_sharing_bomb(3))
    leaf = ["a"]
    expected = [[[leaf, leaf], [leaf, leaf]], [[leaf, leaf], [leaf, leaf]]]
    assert tree == expected


def test_shared_reference_bomb_is_not_amplified_on_relay() -> None:
    """A few hundred bytes of shared references are rejected, not relayed as megabytes."""
    body = cborx(
        {
            "type": "ephemeral",
            "senderId": "a",
            "targetId": "b",
            "documentId": DOC_ID,
            "sessionId": "s",
            "count": 1,
            "data": b"\xa0",
        }
    )
    data = b"\xb9\x00\x08" + body[3:] + cborx("bomb") + _sharing_bomb(16)
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert len(encode(msg)) < 100 * len(data)


# -- fuzzing ------------------------------------------------------------------------------

MESSAGE_TYPES = [
    "join",
    "peer",
    "request",
    "sync",
    "doc-unavailable",
    "ephemeral",
    "remote-subscription-change",
    "remote-heads-changed",
    "leave",
    "error",
    "something-new",
]

cbor_leaves = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**64, 2**1100, -(2**1100), 10**400]),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)


def _tagged(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cbor2.CBORTag,
        st.one_of(st.integers(min_value=0, max_value=300), st.integers(0, 2**64 - 1)),
        inner,
    )


cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        _tagged(inner),
    ),
    max_leaves=12,
)

plausible_fields: dict[str, st.SearchStrategy[Any]] = {
    "senderId": st.text(max_size=8),
    "targetId": st.text(max_size=8),
    "documentId": document_ids | st.sampled_from(["../../etc", "", DOC_ID]),
    "data": st.binary(max_size=16),
    "sessionId": st.text(max_size=8),
    "count": st.integers(min_value=-2, max_value=2**60) | st.floats(),
    "supportedProtocolVersions": st.lists(st.text(max_size=2), max_size=2),
    "selectedProtocolVersion": st.just("1"),
    "peerMetadata": st.fixed_dictionaries(
        {}, optional={"storageId": cbor_leaves, "isEphemeral": cbor_leaves}
    ),
    "metadata": st.fixed_dictionaries({}, optional={"storageId": cbor_leaves}),
    "add": st.lists(st.text(max_size=4), max_size=2),
    "remove": st.lists(st.text(max_size=4), max_size=2),
    "newHeads": st.dictionaries(
        st.text(max_size=4),
        st.fixed_dictionaries(
            {},
            optional={
                "heads": st.lists(st.text(max_size=4), max_size=2),
                "timestamp": cbor_leaves,
            },
        ),
        max_size=2,
    ),
    "message": st.text(max_size=8),
}

message_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES)},
    optional={key: strategy | cbor_values for key, strategy in plausible_fields.items()},
)


def _decode_only_protocol_errors(data: bytes) -> Message | None:
    try:
        return decode(data)
    except ProtocolError:
        return None


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    """Random bytes either decode to a message or raise ProtocolError, never anything else."""
    msg = _decode_only_protocol_errors(data)
    assert msg is None or isinstance(msg, get_args(Message))


@given(cbor_values)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_arbitrary_cbor_values_raise_only_protocol_error(value: Any) -> None:
    """Any CBOR value (tags, bignums, undefined, nesting) decodes or raises only ProtocolError."""
    _decode_only_protocol_errors(cbor2.dumps(value))


@given(message_shaped)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_message_shaped_maps_raise_only_protocol_error(value: dict[str, Any]) -> None:
    """Maps with a known type and random field values decode or raise only ProtocolError."""
    _decode_only_protocol_errors(cbor2.dumps(value))
    _decode_only_protocol_errors(cborx_or_cbor2(value))


hostile_numbers = st.one_of(
    st.sampled_from([2**53 + 1, 2**64, 2**1100, -(2**1100), 10**400, -1, True]),
    st.integers(),
    st.floats(),
)


def _field_paths(body: dict[str, Any]) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [(key,) for key in body]
    paths += [("x-extra",), ("metadata",), ("peerMetadata", "storageId")]
    for key, value in body.items():
        if key == "newHeads" and isinstance(value, dict):
            for sid in value:
                paths += [(key, sid, "heads"), (key, sid, "timestamp")]
        elif isinstance(value, dict):
            paths += [(key, inner) for inner in value]
    return paths


@st.composite
def mutated_messages(draw: st.DrawFn) -> dict[str, Any]:
    """The wire map of a valid message with one field (or nested field) replaced at random."""
    body = as_map(draw(messages))
    path = draw(st.sampled_from(_field_paths(body)))
    numeric = path[-1] in ("count", "timestamp")
    value = draw(hostile_numbers | cbor_values if numeric else cbor_values)
    target = body
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return body


@given(mutated_messages())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_messages_raise_only_protocol_error(value: dict[str, Any]) -> None:
    """A valid message with one field replaced by any CBOR value decodes or raises ProtocolError."""
    _decode_only_protocol_errors(cbor2.dumps(value))
    _decode_only_protocol_errors(cborx_or_cbor2(value))


@given(mutated_messages())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_every_decoded_message_re_encodes(value: dict[str, Any]) -> None:
    """Whatever decode accepts, encode can send on unchanged (a relay never crashes)."""
    msg = _decode_only_protocol_errors(cbor2.dumps(value))
    if msg is None:
        return
    again = decode(encode(msg))
    assert again == msg
    if isinstance(msg, Ephemeral):
        assert isinstance(again, Ephemeral)
        assert again.extra.keys() == msg.extra.keys()


def cborx_or_cbor2(value: Any) -> bytes:
    """The cbor-x form of ``value`` when the model can write it, else cbor2's."""
    try:
        return cborx(value)
    except TypeError:  # tags, bignums and other values cbor-x would not write this way
        return cbor2.dumps(value)
