"""Document ids, ``automerge:`` URLs, heads and peer ids.

A document id is the bs58check encoding (Bitcoin alphabet, 4-byte double
SHA-256 checksum, no version byte) of a binary id. Ids made here, like those
automerge-repo makes, are the 16 bytes of a random UUID v4: automerge-repo up
to 2.0.x refuses ids whose bytes are not an RFC 4122 UUID. Ids from peers are
accepted whatever their bytes (R makes 16 plain random bytes): any
checksum-valid payload of 1-64 bytes. These functions are pure and validate
totally: anything that is not a valid id raises
:class:`~autosync_jupyter.errors.InvalidDocumentId`, a ``ValueError``.

>>> parse_document_id("1Bhh3pU9gLXZiNDL6PEa1Gs9fh").hex()
'000102030405060708090a0b0c0d0e0f'
>>> document_url("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
'automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu'
>>> interpret_as_document_id("a6a0b1f0-6a4c-4b6e-9a4f-0c5e2d3c1b2a")
'3KeCoctjNbFqwxWt7zs2fVRxr2Cf'
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Iterable
from typing import NewType

import base58

from .errors import InvalidDocumentId

__all__ = [
    "MAX_DOCUMENT_ID_LENGTH",
    "DocumentId",
    "PeerId",
    "decode_heads",
    "document_url",
    "encode_heads",
    "generate_document_id",
    "generate_peer_id",
    "interpret_as_document_id",
    "is_valid_document_id",
    "parse_automerge_url",
    "parse_document_id",
    "validate_document_id",
]

DocumentId = NewType("DocumentId", str)
"""A validated bs58check document id, as it travels in ``documentId``."""

PeerId = NewType("PeerId", str)
"""An opaque peer id. Never assume a format for other peers' ids."""

#: Longest accepted id text; 64 payload bytes encode to at most 93 characters.
MAX_DOCUMENT_ID_LENGTH = 100
_MAX_PAYLOAD = 64
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ID_RE = re.compile(f"[{_ALPHABET}]{{1,{MAX_DOCUMENT_ID_LENGTH}}}")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_URL_PREFIX = "automerge:"


def parse_document_id(text: object) -> bytes:
    """Return the binary id behind a document id string.

    Raises:
        InvalidDocumentId: ``text`` is not a string of the base58 alphabet,
            is too long, or its checksum does not match.
    """
    if not isinstance(text, str):
        raise InvalidDocumentId(f"document id must be a string, not {type(text).__name__}")
    if not _ID_RE.fullmatch(text):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise InvalidDocumentId(
            f"invalid document id {shown!r}: expected 1-{MAX_DOCUMENT_ID_LENGTH} base58 characters"
        )
    try:
        payload: bytes = base58.b58decode_check(text)
    except ValueError:
        raise InvalidDocumentId(f"invalid document id {text!r}: checksum mismatch") from None
    if not 1 <= len(payload) <= _MAX_PAYLOAD:
        raise InvalidDocumentId(
            f"invalid document id {text!r}: payload of {len(payload)} bytes "
            f"(expected 1-{_MAX_PAYLOAD})"
        )
    return payload


# Every sync message names its document; the same few ids come back again and
# again, so remember recent valid ones instead of re-checking their checksum.
_VALID_IDS: dict[str, None] = {}
_VALID_IDS_MAX = 4096


def validate_document_id(text: object) -> DocumentId:
    """Return ``text`` as a :data:`DocumentId` if it is one, else raise ``InvalidDocumentId``."""
    if isinstance(text, str) and text in _VALID_IDS:
        return DocumentId(text)
    parse_document_id(text)
    assert isinstance(text, str)
    if len(_VALID_IDS) >= _VALID_IDS_MAX:
        _VALID_IDS.clear()
    _VALID_IDS[text] = None
    return DocumentId(text)


def is_valid_document_id(text: object) -> bool:
    """Tell whether ``text`` is a valid document id, without raising."""
    try:
        parse_document_id(text)
    except InvalidDocumentId:
        return False
    return True


def generate_document_id() -> DocumentId:
    """Make a new document id: the bs58check of a random UUID v4's 16 bytes.

    automerge-repo makes its ids the same way, and its releases up to 2.0.x
    accept only ids whose bytes are an RFC 4122 UUID (version and variant
    bits set): ``repo.find`` throws for any other id, and their servers drop
    its sync messages. Every id this package makes comes from here.
    """
    return DocumentId(base58.b58encode_check(uuid.uuid4().bytes).decode("ascii"))


def encode_heads(heads: Iterable[bytes]) -> list[str]:
    """Encode 32-byte change hashes in automerge-repo's URL form (bs58check)."""
    out = []
    for head in heads:
        raw = bytes(head)
        if len(raw) != 32:
            raise InvalidDocumentId(f"a head must be a 32-byte change hash, got {len(raw)} bytes")
        out.append(base58.b58encode_check(raw).decode("ascii"))
    return out


def decode_heads(heads: Iterable[str]) -> list[bytes]:
    """Decode bs58check heads back to 32-byte change hashes.

    Raises:
        InvalidDocumentId: a head does not decode to 32 bytes.
    """
    out = []
    for head in heads:
        if not isinstance(head, str) or len(head) > MAX_DOCUMENT_ID_LENGTH:
            shown = repr(head) if not isinstance(head, str) else f"of {len(head)} characters"
            raise InvalidDocumentId(f"invalid head {shown}: expected a bs58check string")
        try:
            raw: bytes = base58.b58decode_check(head)
        except ValueError:
            raise InvalidDocumentId(f"invalid head {head!r}") from None
        if len(raw) != 32:
            raise InvalidDocumentId(f"invalid head {head!r}: not a 32-byte hash")
        out.append(raw)
    return out


def document_url(document_id: str, heads: Iterable[bytes] | None = None) -> str:
    """Return the ``automerge:`` URL of a document, optionally pinned at ``heads``."""
    validate_document_id(document_id)
    url = _URL_PREFIX + document_id
    if heads is not None:
        url += "#" + "|".join(sorted(encode_heads(heads)))
    return url


def parse_automerge_url(url: str) -> tuple[DocumentId, list[bytes] | None]:
    """Split an ``automerge:`` URL into its document id and pinned heads (or None).

    Sub-document paths (``automerge:<id>/a/b``) are accepted and ignored.
    """
    if not isinstance(url, str) or not url.startswith(_URL_PREFIX):
        raise InvalidDocumentId(f"not an automerge URL: {url!r}")
    rest = url[len(_URL_PREFIX) :]
    if rest.count("#") > 1:
        raise InvalidDocumentId(f"invalid automerge URL {url!r}: more than one '#'")
    rest, sep, fragment = rest.partition("#")
    doc_id = validate_document_id(rest.split("/", 1)[0])
    if not sep:
        return doc_id, None
    return doc_id, decode_heads(fragment.split("|")) if fragment else []


def interpret_as_document_id(value: str) -> DocumentId:
    """Accept a document id, an ``automerge:`` URL or a legacy UUID string.

    >>> interpret_as_document_id("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu")
    '4NMNnkMhL8jXrdJ9jamS58PAVdXu'
    """
    if isinstance(value, str):
        if value.startswith(_URL_PREFIX):
            return parse_automerge_url(value)[0]
        if _UUID_RE.fullmatch(value):
            return DocumentId(base58.b58encode_check(uuid.UUID(value).bytes).decode("ascii"))
    return validate_document_id(value)


def generate_peer_id(prefix: str = "py") -> PeerId:
    """Make a random peer id such as ``py-Jx3…`` (16 random bytes, base64url)."""
    token = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
    return PeerId(f"{prefix}-{token}")
