"""The automerge-repo wire protocol: one frozen dataclass per message, over CBOR.

Every message is one CBOR map with a text ``type``. :func:`decode` accepts
what JavaScript peers really send (16-bit map headers, CBOR ``undefined`` for
absent fields, float64 timestamps and counts) and is strict about everything
else: each field is checked and a :class:`~autosync_jupyter.errors.ProtocolError`
names the one that is wrong. Before any Python object is built, the CBOR
structure is walked: at most :data:`MAX_ITEMS` items nested at most
:data:`MAX_DEPTH` deep, no tags (the protocol uses none), so decoding costs
memory in proportion to the frame, never a multiple of it. :func:`encode`
writes what every peer accepts: byte strings for ``data``, arrays for lists
(even of one element), no 64-bit integers, no tags, no ``null`` for absent
fields.

>>> msg = Join(sender_id="py-1", peer_metadata=PeerMetadata(is_ephemeral=True))
>>> decode(encode(msg)) == msg
True

No I/O happens here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import cbor2

from ..errors import InvalidDocumentId, ProtocolError
from ..ids import DocumentId, PeerId, validate_document_id

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "PROTOCOL_VERSION",
    "DocUnavailable",
    "Ephemeral",
    "Error",
    "HeadsAt",
    "Join",
    "Leave",
    "Message",
    "Peer",
    "PeerMetadata",
    "RemoteHeadsChanged",
    "RemoteSubscriptionChange",
    "Request",
    "Sync",
    "UnknownMessage",
    "decode",
    "encode",
]

#: The only wire protocol version there is (stable since automerge-repo 1.0).
PROTOCOL_VERSION = "1"

#: The JS sync server's (``ws``'s) default message limit; whole documents
#: travel in one message, so the usual 1 MiB Python default breaks first syncs.
DEFAULT_MAX_MESSAGE_SIZE = 100 * 1024 * 1024

#: Most CBOR items (maps, arrays, strings, numbers...) one message may hold.
#: Real messages hold a few dozen; the byte strings inside count as one each.
MAX_ITEMS = 4096
#: Deepest nesting of maps and arrays in one message.
MAX_DEPTH = 16

# JavaScript numbers above 2**32 - 1 travel as float64; CBOR integers beyond
# that decode to BigInt in cbor-x, which breaks JS arithmetic.
_MAX_CBOR_UINT32 = 2**32 - 1
# Largest integer a JS number holds exactly (Number.MAX_SAFE_INTEGER).
_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class PeerMetadata:
    """What a peer says about itself in ``join`` and ``peer``."""

    storage_id: str | None = None
    is_ephemeral: bool | None = None


@dataclass(frozen=True, slots=True)
class Join:
    """First message of a client: who it is and which versions it speaks."""

    sender_id: PeerId
    supported_protocol_versions: tuple[str, ...] | None = (PROTOCOL_VERSION,)
    peer_metadata: PeerMetadata | None = None
    type: str = field(default="join", init=False)


@dataclass(frozen=True, slots=True)
class Peer:
    """The server's answer to ``join``."""

    sender_id: PeerId
    target_id: PeerId
    selected_protocol_version: str = PROTOCOL_VERSION
    peer_metadata: PeerMetadata | None = None
    type: str = field(default="peer", init=False)


@dataclass(frozen=True, slots=True)
class Request:
    """ "I do not have this document: sync it to me or say it is unavailable"."""

    sender_id: PeerId
    target_id: PeerId
    document_id: DocumentId
    data: bytes
    type: str = field(default="request", init=False)


@dataclass(frozen=True, slots=True)
class Sync:
    """One Automerge sync message for one document."""

    sender_id: PeerId
    target_id: PeerId
    document_id: DocumentId
    data: bytes
    type: str = field(default="sync", init=False)


@dataclass(frozen=True, slots=True)
class DocUnavailable:
    """The sender does not have the document (or may not share it)."""

    sender_id: PeerId
    target_id: PeerId
    document_id: DocumentId
    type: str = field(default="doc-unavailable", init=False)


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """Transient application data (presence, cursors) scoped to a document.

    ``data`` is itself CBOR. ``extra`` keeps fields this implementation does
    not know, so a relay passes them on unchanged.
    """

    sender_id: PeerId
    target_id: PeerId
    document_id: DocumentId
    session_id: str
    count: int
    data: bytes
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    type: str = field(default="ephemeral", init=False)


@dataclass(frozen=True, slots=True)
class RemoteSubscriptionChange:
    """Subscribe to (or stop) head changes of peers with these storage ids."""

    sender_id: PeerId
    target_id: PeerId
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    type: str = field(default="remote-subscription-change", init=False)


@dataclass(frozen=True, slots=True)
class HeadsAt:
    """Heads (bs58check) some storage had at a moment (ms since the epoch)."""

    heads: tuple[str, ...]
    timestamp: float


@dataclass(frozen=True, slots=True)
class RemoteHeadsChanged:
    """Gossip: the heads a peer with some storage id has for a document."""

    sender_id: PeerId
    target_id: PeerId
    document_id: DocumentId
    new_heads: Mapping[str, HeadsAt]
    type: str = field(default="remote-heads-changed", init=False)


@dataclass(frozen=True, slots=True)
class Leave:
    """Advisory goodbye (JS 2.x never sends it)."""

    sender_id: PeerId
    type: str = field(default="leave", init=False)


@dataclass(frozen=True, slots=True)
class Error:
    """The sender is about to close the connection, and says why."""

    sender_id: PeerId
    message: str
    target_id: PeerId | None = None
    type: str = field(default="error", init=False)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A well-formed message of a type this implementation does not know.

    Kept rather than rejected: unknown types are the protocol's path to
    forward compatibility, so receivers ignore them.
    """

    type: str
    sender_id: PeerId | None
    fields: Mapping[str, Any] = field(compare=False)


Message: TypeAlias = (
    Join
    | Peer
    | Request
    | Sync
    | DocUnavailable
    | Ephemeral
    | RemoteSubscriptionChange
    | RemoteHeadsChanged
    | Leave
    | Error
    | UnknownMessage
)

# -- decoding -----------------------------------------------------------------


def _absent(value: object) -> bool:
    return value is None or value is cbor2.undefined


class _Fields:
    """Typed access to the fields of one decoded message map."""

    __slots__ = ("_map", "_type")

    def __init__(self, mapping: dict[Any, Any], msg_type: str) -> None:
        self._map = mapping
        self._type = msg_type

    def _fail(self, key: str, expected: str, value: object) -> ProtocolError:
        got = "nothing" if _absent(value) else type(value).__name__
        return ProtocolError(f"{self._type} message: {key!r} must be {expected}, got {got}")

    def get(self, key: str) -> Any:
        value = self._map.get(key)
        return None if _absent(value) else value

    def text(self, key: str, *, max_length: int = _MAX_ID_LENGTH) -> str:
        value = self._map.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string", value)
        if len(value) > max_length:
            raise ProtocolError(f"{self._type} message: {key!r} is longer than {max_length}")
        return value

    def peer_id(self, key: str) -> PeerId:
        return PeerId(self.text(key))

    def document_id(self) -> DocumentId:
        value = self._map.get("documentId")
        try:
            return validate_document_id(value)
        except InvalidDocumentId as exc:
            raise ProtocolError(f"{self._type} message: {exc}") from None

    def data(self, *, allow_empty: bool = False) -> bytes:
        value = self._map.get("data")
        if not isinstance(value, bytes):
            raise self._fail("data", "a byte string", value)
        if not value and not allow_empty:
            raise ProtocolError(f"{self._type} message: 'data' is empty")
        return value

    def count(self, key: str) -> int:
        value = self._map.get(key)
        # cbor-x writes integers above 2**32 as float64; accept integral floats.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= _MAX_SAFE_INTEGER
        ):
            raise self._fail(key, "an integer from 0 to 2**53 - 1", value)
        return value

    def text_array(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "an array of strings", value)
        return tuple(value)

    def metadata(self) -> PeerMetadata | None:
        # The websocket package's README calls it "metadata"; the code sends
        # "peerMetadata". Read both.
        value = self.get("peerMetadata")
        if value is None:
            value = self.get("metadata")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail("peerMetadata", "a map", value)
        storage_id = value.get("storageId")
        if _absent(storage_id):
            storage_id = None
        elif not isinstance(storage_id, str) or len(storage_id) > _MAX_ID_LENGTH:
            raise self._fail("peerMetadata.storageId", "a string", storage_id)
        ephemeral = value.get("isEphemeral")
        if _absent(ephemeral):
            ephemeral = None
        elif not isinstance(ephemeral, bool):
            raise self._fail("peerMetadata.isEphemeral", "a boolean", ephemeral)
        return PeerMetadata(storage_id=storage_id or None, is_ephemeral=ephemeral)

    def new_heads(self) -> dict[str, HeadsAt]:
        value = self._map.get("newHeads")
        if not isinstance(value, dict):
            raise self._fail("newHeads", "a map", value)
        out: dict[str, HeadsAt] = {}
        for storage_id, entry in value.items():
            if not isinstance(storage_id, str) or not isinstance(entry, dict):
                raise self._fail("newHeads", "a map of storage id to {heads, timestamp}", entry)
            heads = entry.get("heads")
            timestamp = entry.get("timestamp")
            if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
                raise self._fail("newHeads.heads", "an array of strings", heads)
            if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
                raise self._fail("newHeads.timestamp", "a number", timestamp)
            try:
                ms = float(timestamp)
            except OverflowError:  # a CBOR bignum beyond the float range
                ms = math.inf
            if not math.isfinite(ms):
                raise self._fail("newHeads.timestamp", "a finite number", timestamp)
            out[storage_id] = HeadsAt(tuple(heads), ms)
        return out

    def extra(self, known: frozenset[str]) -> dict[str, Any]:
        return {k: v for k, v in self._map.items() if k not in known}


_EPHEMERAL_KEYS = frozenset(
    {"type", "senderId", "targetId", "documentId", "sessionId", "count", "data"}
)


def _from_map(f: _Fields, msg_type: str) -> Message:
    if msg_type == "join":
        return Join(
            sender_id=f.peer_id("senderId"),
            supported_protocol_versions=f.text_array("supportedProtocolVersions"),
            peer_metadata=f.metadata(),
        )
    if msg_type == "peer":
        return Peer(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            selected_protocol_version=f.text("selectedProtocolVersion"),
            peer_metadata=f.metadata(),
        )
    if msg_type in ("request", "sync"):
        cls = Request if msg_type == "request" else Sync
        return cls(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            document_id=f.document_id(),
            data=f.data(),
        )
    if msg_type == "doc-unavailable":
        return DocUnavailable(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            document_id=f.document_id(),
        )
    if msg_type == "ephemeral":
        return Ephemeral(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            document_id=f.document_id(),
            session_id=f.text("sessionId"),
            count=f.count("count"),
            data=f.data(allow_empty=True),
            extra=f.extra(_EPHEMERAL_KEYS),
        )
    if msg_type == "remote-subscription-change":
        return RemoteSubscriptionChange(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            add=f.text_array("add") or (),
            remove=f.text_array("remove") or (),
        )
    if msg_type == "remote-heads-changed":
        return RemoteHeadsChanged(
            sender_id=f.peer_id("senderId"),
            target_id=f.peer_id("targetId"),
            document_id=f.document_id(),
            new_heads=f.new_heads(),
        )
    if msg_type == "leave":
        return Leave(sender_id=f.peer_id("senderId"))
    if msg_type == "error":
        message = f.get("message")
        return Error(
            sender_id=f.peer_id("senderId"),
            message=message if isinstance(message, str) else "",
            target_id=PeerId(t) if isinstance(t := f.get("targetId"), str) and t else None,
        )
    sender = f.get("senderId")
    return UnknownMessage(
        type=msg_type,
        sender_id=PeerId(sender) if isinstance(sender, str) and sender else None,
        fields=f.extra(frozenset()),
    )


_INDEFINITE = -1


def _scan(data: bytes) -> None:
    """Walk the CBOR structure of ``data`` without building it.

    Raises:
        ProtocolError: not exactly one CBOR map, a tag, an indefinite-length
            string, a simple value other than false/true/null/undefined, more
            than :data:`MAX_ITEMS` items or deeper than :data:`MAX_DEPTH`.
    """
    end = len(data)
    pos = 0
    items = 0
    pending: list[int] = []  # items still due in each open container
    while True:
        if pos >= end:
            raise ProtocolError("malformed CBOR: the message ends inside an item")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if initial == 0xFF:
            if not pending or pending[-1] != _INDEFINITE:
                raise ProtocolError("malformed CBOR: a break outside an indefinite container")
            pending.pop()
        else:
            items += 1
            if items > MAX_ITEMS:
                raise ProtocolError(f"a message may hold at most {MAX_ITEMS} CBOR items")
            if pos == 1 and major != 5:
                raise ProtocolError("a message must be a CBOR map")
            if info < 24:
                arg = info
            elif info <= 27:
                size = 1 << (info - 24)
                if pos + size > end:
                    raise ProtocolError("malformed CBOR: the message ends inside an item")
                arg = int.from_bytes(data[pos : pos + size], "big")
                pos += size
            elif info == 31 and major in (4, 5):
                arg = _INDEFINITE
            else:
                raise ProtocolError("malformed CBOR: an encoding the protocol never uses")
            if major in (2, 3):
                pos += arg
                if pos > end:
                    raise ProtocolError("malformed CBOR: a string runs past the message")
            elif major in (4, 5):
                if len(pending) >= MAX_DEPTH:
                    raise ProtocolError(f"a message may nest at most {MAX_DEPTH} levels")
                if arg == _INDEFINITE:
                    pending.append(_INDEFINITE)
                    continue
                if arg > MAX_ITEMS:
                    raise ProtocolError(f"a message may hold at most {MAX_ITEMS} CBOR items")
                if arg:
                    pending.append(arg * 2 if major == 5 else arg)
                    continue
            elif major == 6:
                raise ProtocolError("CBOR tags are not part of the protocol")
            elif major == 7 and not (20 <= info <= 23 or 25 <= info <= 27):
                raise ProtocolError("malformed CBOR: a simple value the protocol never uses")
        # One item is complete: count it against the containers it closes.
        while pending and pending[-1] != _INDEFINITE:
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
        if not pending:
            break
    if pos != end:
        raise ProtocolError(f"malformed message: {end - pos} bytes after the CBOR")


def decode(data: bytes) -> Message:
    """Decode one WebSocket binary message into a message object.

    Raises:
        ProtocolError: the bytes are not exactly one CBOR map with a text
            ``type`` whose fields have the types the protocol requires.
            Unknown message types are not an error: they come back as
            :class:`UnknownMessage`.
    """
    if not data:
        raise ProtocolError("empty message")
    _scan(data)
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"malformed CBOR: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a message must be a CBOR map, got {type(value).__name__}")
    msg_type = value.get("type")
    if not isinstance(msg_type, str) or not msg_type:
        raise ProtocolError("a message must have a text 'type'")
    return _from_map(_Fields(value, msg_type), msg_type)


# -- encoding -----------------------------------------------------------------


def _metadata(meta: PeerMetadata | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    out: dict[str, Any] = {}
    if meta.storage_id is not None:
        out["storageId"] = meta.storage_id
    if meta.is_ephemeral is not None:
        out["isEphemeral"] = meta.is_ephemeral
    return out


def _number(value: float) -> int | float:
    # Whole numbers beyond 32 bits go out as float64, as cbor-x writes them.
    if isinstance(value, float) and value.is_integer() and 0 <= value <= _MAX_CBOR_UINT32:
        return int(value)
    if isinstance(value, int) and not 0 <= value <= _MAX_CBOR_UINT32:
        return float(value)
    return value


def _to_map(msg: Message) -> dict[str, Any]:
    if isinstance(msg, UnknownMessage):
        return {"type": msg.type, **dict(msg.fields)}
    out: dict[str, Any] = {"type": msg.type, "senderId": msg.sender_id}
    if isinstance(msg, Join):
        if msg.supported_protocol_versions is not None:
            out["supportedProtocolVersions"] = list(msg.supported_protocol_versions)
        if (meta := _metadata(msg.peer_metadata)) is not None:
            out["peerMetadata"] = meta
    elif isinstance(msg, Peer):
        out["targetId"] = msg.target_id
        out["selectedProtocolVersion"] = msg.selected_protocol_version
        if (meta := _metadata(msg.peer_metadata)) is not None:
            out["peerMetadata"] = meta
    elif isinstance(msg, (Request, Sync)):
        out["targetId"] = msg.target_id
        out["documentId"] = msg.document_id
        out["data"] = bytes(msg.data)
    elif isinstance(msg, DocUnavailable):
        out["targetId"] = msg.target_id
        out["documentId"] = msg.document_id
    elif isinstance(msg, Ephemeral):
        out.update(msg.extra)
        out["senderId"] = msg.sender_id
        out["targetId"] = msg.target_id
        out["documentId"] = msg.document_id
        out["sessionId"] = msg.session_id
        out["count"] = _number(msg.count)
        out["data"] = bytes(msg.data)
    elif isinstance(msg, RemoteSubscriptionChange):
        out["targetId"] = msg.target_id
        if msg.add:
            out["add"] = list(msg.add)
        if msg.remove:
            out["remove"] = list(msg.remove)
    elif isinstance(msg, RemoteHeadsChanged):
        out["targetId"] = msg.target_id
        out["documentId"] = msg.document_id
        out["newHeads"] = {
            sid: {"heads": list(h.heads), "timestamp": _number(h.timestamp)}
            for sid, h in msg.new_heads.items()
        }
    elif isinstance(msg, Error):
        if msg.target_id is not None:
            out["targetId"] = msg.target_id
        out["message"] = msg.message
    return out


def encode(msg: Message) -> bytes:
    """Encode a message as the CBOR bytes of one WebSocket binary message."""
    return cbor2.dumps(_to_map(msg))
