"""Unit tests for autosync_jupyter.ids: document ids, automerge URLs, heads and peer ids.

The expected values come from protocol.md §5 and from an independent bs58check
implementation in this file, never from the module under test.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import automerge.core as am
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autosync_jupyter.errors import AutosyncError, InvalidDocumentId
from autosync_jupyter.ids import (
    MAX_DOCUMENT_ID_LENGTH,
    decode_heads,
    document_url,
    encode_heads,
    generate_document_id,
    generate_peer_id,
    interpret_as_document_id,
    is_valid_document_id,
    parse_automerge_url,
    parse_document_id,
    validate_document_id,
)

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# protocol.md §5.1 test vectors: (payload hex, document id).
VECTORS = [
    ("000102030405060708090a0b0c0d0e0f", "1Bhh3pU9gLXZiNDL6PEa1Gs9fh"),
    ("00000000000000000000000000000000", "11111111111111114Ki9Gx"),
    ("ffffffffffffffffffffffffffffffff", "4ZrjxJnU1LA5xSyrWMNuXTozYEvA"),
    ("f1c29c8474c84adeb800be47627d33bf", "4NMNnkMhL8jXrdJ9jamS58PAVdXu"),
]
UUID_TEXT = "a6a0b1f0-6a4c-4b6e-9a4f-0c5e2d3c1b2a"
UUID_ID = "3KeCoctjNbFqwxWt7zs2fVRxr2Cf"
EXAMPLE_ID = "4NMNnkMhL8jXrdJ9jamS58PAVdXu"


def bs58check(payload: bytes) -> str:
    """Reference bs58check (Bitcoin alphabet, double-SHA-256 checksum, no version byte)."""
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(raw, "big")
    digits = ""
    while number:
        number, rem = divmod(number, 58)
        digits = ALPHABET[rem] + digits
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + digits


def with_bad_checksum(doc_id: str) -> str:
    """Return ``doc_id`` with its last character replaced by another alphabet character."""
    last = doc_id[-1]
    return doc_id[:-1] + ("2" if last != "2" else "3")


def real_heads(n_changes: int = 2) -> list[bytes]:
    """Heads of two concurrent Automerge changes (32-byte hashes from the real core)."""
    doc = am.Document()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
    heads: list[bytes] = []
    for i in range(n_changes):
        fork = doc.fork()
        with fork.transaction() as tx:
            tx.put(am.ROOT, "b", am.ScalarType.Int, i)
        heads.extend(fork.get_heads())
    return [bytes(h) for h in heads]


# -- test vectors ---------------------------------------------------------------


def test_reference_encoder_reproduces_the_spec_vectors() -> None:
    """The test's own bs58check matches every protocol.md §5.1 vector (so it can be trusted)."""
    for payload_hex, doc_id in VECTORS:
        assert bs58check(bytes.fromhex(payload_hex)) == doc_id
    assert bs58check(uuid.UUID(UUID_TEXT).bytes) == UUID_ID


@pytest.mark.parametrize(("payload_hex", "doc_id"), VECTORS)
def test_vector_id_parses_to_its_payload(payload_hex: str, doc_id: str) -> None:
    """Each §5.1 document id decodes to exactly its binary payload."""
    assert parse_document_id(doc_id) == bytes.fromhex(payload_hex)
    assert validate_document_id(doc_id) == doc_id
    assert is_valid_document_id(doc_id)


@pytest.mark.parametrize(("payload_hex", "doc_id"), VECTORS)
def test_vector_payload_encodes_to_its_id(payload_hex: str, doc_id: str) -> None:
    """Each §5.1 payload encodes to exactly its id, and that id is accepted as a URL too."""
    encoded = bs58check(bytes.fromhex(payload_hex))
    assert encoded == doc_id
    assert document_url(encoded) == f"automerge:{doc_id}"
    assert parse_automerge_url(f"automerge:{doc_id}") == (doc_id, None)


def test_uuid_vector_both_ways() -> None:
    """The §5.1 UUID converts to its id, and that id parses back to the UUID's 16 bytes."""
    assert interpret_as_document_id(UUID_TEXT) == UUID_ID
    assert parse_document_id(UUID_ID) == uuid.UUID(UUID_TEXT).bytes


# -- generation -------------------------------------------------------------------


def test_generated_ids_are_valid_16_byte_ids() -> None:
    """generate_document_id makes distinct, valid ids of 16 bytes."""
    ids = [generate_document_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    for doc_id in ids:
        payload = parse_document_id(doc_id)
        assert len(payload) == 16
        assert bs58check(payload) == doc_id
        assert 22 <= len(doc_id) <= 28
        assert set(doc_id) <= set(ALPHABET)


# What automerge-repo up to 2.0.x (uuid@9's validate) accepts as the bytes of a
# document id: an RFC 4122 UUID of version 1-5, or the nil UUID.
JS_UUID_VALIDATE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000",
    re.IGNORECASE,
)


def test_generated_ids_are_uuid_v4_bytes() -> None:
    """Every generated id is a UUID v4's 16 bytes, as automerge-repo 1.x/2.0.x require.

    200 ids of plain random bytes would all pass with probability ~0.08**200.
    """
    for _ in range(200):
        payload = parse_document_id(generate_document_id())
        as_uuid = uuid.UUID(bytes=payload)
        assert as_uuid.version == 4 and as_uuid.variant == uuid.RFC_4122, as_uuid
        assert JS_UUID_VALIDATE.fullmatch(str(as_uuid)), as_uuid


def test_ids_that_are_not_uuids_are_still_accepted() -> None:
    """Ids from peers need not be UUIDs: R makes 16 plain random bytes."""
    not_a_uuid = bytes(range(16))  # version nibble 0, variant bits 00
    assert not JS_UUID_VALIDATE.fullmatch(str(uuid.UUID(bytes=not_a_uuid)))
    doc_id = bs58check(not_a_uuid)
    assert validate_document_id(doc_id) == doc_id
    assert parse_automerge_url(f"automerge:{doc_id}") == (doc_id, None)


# -- rejection --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("!!!invalid!!!", id="punctuation"),
        pytest.param(with_bad_checksum(EXAMPLE_ID), id="wrong-checksum"),
        pytest.param(with_bad_checksum("1Bhh3pU9gLXZiNDL6PEa1Gs9fh"), id="wrong-checksum-2"),
        pytest.param(UUID_TEXT, id="uuid-string"),
        pytest.param(UUID_TEXT.replace("-", ""), id="uuid-hex"),
        pytest.param("", id="empty"),
        pytest.param("a" * 500, id="500-chars"),
        pytest.param(EXAMPLE_ID * 18, id="500-alphabet-chars"),
        pytest.param("../../etc", id="path-traversal"),
        pytest.param("../../etc/passwd", id="path-traversal-2"),
        pytest.param(" " + EXAMPLE_ID, id="leading-space"),
        pytest.param(EXAMPLE_ID + "\n", id="trailing-newline"),
        pytest.param("\uff14" + EXAMPLE_ID[1:], id="fullwidth-digit"),
        pytest.param("automerge:" + EXAMPLE_ID, id="url-is-not-an-id"),
        pytest.param("1", id="too-short-for-checksum"),
        pytest.param(bs58check(b""), id="empty-payload"),
        pytest.param(bs58check(b"\x07" * 65), id="65-byte-payload"),
    ],
)
def test_invalid_id_text_is_rejected(text: str) -> None:
    """Strings that are not bs58check ids of 1-64 bytes raise InvalidDocumentId."""
    with pytest.raises(InvalidDocumentId):
        parse_document_id(text)
    with pytest.raises(InvalidDocumentId):
        validate_document_id(text)
    assert not is_valid_document_id(text)


@pytest.mark.parametrize("char", ["0", "O", "I", "l", "/", "\\", "."])
def test_id_with_non_alphabet_character_is_rejected(char: str) -> None:
    """An id containing any of 0 O I l / \\ . is rejected wherever the character sits."""
    for position in (0, 5, len(EXAMPLE_ID)):
        text = EXAMPLE_ID[:position] + char + EXAMPLE_ID[position:]
        assert not is_valid_document_id(text)
        with pytest.raises(InvalidDocumentId, match="base58"):
            parse_document_id(text)


@pytest.mark.parametrize(
    "value",
    [None, 123, 1.5, b"4NMNnkMhL8jXrdJ9jamS58PAVdXu", bytearray(b"x"), ["x"], {"id": 1}],
    ids=repr,
)
def test_non_string_id_is_rejected(value: object) -> None:
    """Non-string values raise InvalidDocumentId naming the wrong type."""
    with pytest.raises(InvalidDocumentId, match="must be a string"):
        parse_document_id(value)
    assert not is_valid_document_id(value)


def test_wrong_checksum_error_says_checksum() -> None:
    """A checksum mismatch is reported as such."""
    with pytest.raises(InvalidDocumentId, match="checksum"):
        parse_document_id(with_bad_checksum(EXAMPLE_ID))


def test_overlong_id_is_not_echoed_in_full() -> None:
    """The error for a 500-character id stays short (the id is truncated in the message)."""
    with pytest.raises(InvalidDocumentId) as info:
        parse_document_id("x" * 500)
    assert len(str(info.value)) < 200


def test_invalid_document_id_is_a_value_error_and_an_autosync_error() -> None:
    """InvalidDocumentId can be caught as ValueError or as AutosyncError."""
    with pytest.raises(ValueError):
        parse_document_id("!!!")
    with pytest.raises(AutosyncError):
        validate_document_id("!!!")


@pytest.mark.parametrize("size", [1, 15, 16, 17, 32, 64])
def test_any_checksum_valid_payload_of_1_to_64_bytes_is_accepted(size: int) -> None:
    """Ids that are not 16 bytes (e.g. a 32-byte payload) are accepted, as JS does."""
    payload = bytes(range(size))
    doc_id = bs58check(payload)
    assert len(doc_id) <= MAX_DOCUMENT_ID_LENGTH
    assert parse_document_id(doc_id) == payload
    assert validate_document_id(doc_id) == doc_id


def test_longest_payload_fits_the_length_limit() -> None:
    """A 64-byte payload of 0xff (the longest text) is within MAX_DOCUMENT_ID_LENGTH."""
    doc_id = bs58check(b"\xff" * 64)
    assert len(doc_id) <= MAX_DOCUMENT_ID_LENGTH
    assert parse_document_id(doc_id) == b"\xff" * 64


@given(st.binary(min_size=1, max_size=64))
def test_any_payload_round_trips_through_bs58check(payload: bytes) -> None:
    """Any 1-64 byte payload, bs58check-encoded, parses back to itself."""
    doc_id = bs58check(payload)
    assert parse_document_id(doc_id) == payload
    assert interpret_as_document_id(doc_id) == doc_id
    assert parse_automerge_url(document_url(doc_id)) == (doc_id, None)


@given(st.one_of(st.text(max_size=120), st.text(alphabet=ALPHABET, max_size=120)))
def test_arbitrary_text_is_either_an_id_or_invalid_document_id(text: str) -> None:
    """parse_document_id raises nothing but InvalidDocumentId on arbitrary text."""
    try:
        payload = parse_document_id(text)
    except InvalidDocumentId:
        assert not is_valid_document_id(text)
    else:
        assert bs58check(payload) == text


# -- URLs -------------------------------------------------------------------------


def test_url_without_fragment_has_no_heads() -> None:
    """automerge:<id> parses to the id and None (not pinned)."""
    assert parse_automerge_url(f"automerge:{EXAMPLE_ID}") == (EXAMPLE_ID, None)
    assert document_url(EXAMPLE_ID) == f"automerge:{EXAMPLE_ID}"


def test_url_with_heads_round_trips_and_is_sorted() -> None:
    """document_url pins sorted bs58check heads after '#', joined by '|', and parses back."""
    heads = real_heads()
    assert len(heads) == 2
    url = document_url(EXAMPLE_ID, heads)
    encoded = sorted(bs58check(h) for h in heads)
    assert url == f"automerge:{EXAMPLE_ID}#{encoded[0]}|{encoded[1]}"
    assert url == document_url(EXAMPLE_ID, list(reversed(heads)))
    doc_id, parsed = parse_automerge_url(url)
    assert doc_id == EXAMPLE_ID
    assert parsed is not None
    assert set(parsed) == set(heads)


def test_url_with_one_head_parses_to_that_head() -> None:
    """automerge:<id>#<h1> yields exactly [h1]."""
    head = real_heads(1)[0]
    assert parse_automerge_url(f"automerge:{EXAMPLE_ID}#{bs58check(head)}") == (
        EXAMPLE_ID,
        [head],
    )


def test_url_with_empty_fragment_means_no_heads() -> None:
    """An empty string after '#' means an empty head list, not None."""
    assert parse_automerge_url(f"automerge:{EXAMPLE_ID}#") == (EXAMPLE_ID, [])
    assert document_url(EXAMPLE_ID, []) == f"automerge:{EXAMPLE_ID}#"


def test_url_with_two_hashes_is_rejected() -> None:
    """More than one '#' makes the URL invalid."""
    head = bs58check(bytes(32))
    for url in (
        f"automerge:{EXAMPLE_ID}#{head}#{head}",
        f"automerge:{EXAMPLE_ID}##",
        f"automerge:{EXAMPLE_ID}/a#{head}#",
    ):
        with pytest.raises(InvalidDocumentId, match="#"):
            parse_automerge_url(url)


def test_url_sub_path_is_ignored() -> None:
    """automerge:<id>/<path> parses to the id, with or without heads after the path."""
    head = bytes(range(32))
    assert parse_automerge_url(f"automerge:{EXAMPLE_ID}/a/b") == (EXAMPLE_ID, None)
    assert parse_automerge_url(f"automerge:{EXAMPLE_ID}/cells/0#{bs58check(head)}") == (
        EXAMPLE_ID,
        [head],
    )


@pytest.mark.parametrize(
    "url",
    [
        "automerge:",
        "automerge:/a/b",
        "automerge:#",
        "automerge:!!!invalid!!!",
        "automerge:../../etc",
        f"automerge:{with_bad_checksum(EXAMPLE_ID)}",
        f"automerge:{UUID_TEXT}",
        f"Automerge:{EXAMPLE_ID}",
        f"https://sync.automerge.org/{EXAMPLE_ID}",
        EXAMPLE_ID,
        f"automerge:{EXAMPLE_ID}#notahead",
        f"automerge:{EXAMPLE_ID}#{bs58check(bytes(32))}|",
        f"automerge:{EXAMPLE_ID}#{bs58check(bytes(31))}",
    ],
)
def test_invalid_url_is_rejected(url: str) -> None:
    """Wrong prefix, empty/invalid id or an invalid head makes parse_automerge_url raise."""
    with pytest.raises(InvalidDocumentId):
        parse_automerge_url(url)


@pytest.mark.parametrize("value", [None, 5, b"automerge:x"], ids=repr)
def test_non_string_url_is_rejected(value: object) -> None:
    """parse_automerge_url raises InvalidDocumentId (not TypeError) for non-strings."""
    with pytest.raises(InvalidDocumentId):
        parse_automerge_url(value)  # type: ignore[arg-type]


def test_document_url_rejects_an_invalid_id() -> None:
    """document_url refuses to build a URL around an invalid id."""
    with pytest.raises(InvalidDocumentId):
        document_url("../../etc")


# -- interpret_as_document_id -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (EXAMPLE_ID, EXAMPLE_ID),
        (f"automerge:{EXAMPLE_ID}", EXAMPLE_ID),
        (f"automerge:{EXAMPLE_ID}#", EXAMPLE_ID),
        (f"automerge:{EXAMPLE_ID}/a#{bs58check(bytes(32))}", EXAMPLE_ID),
        (UUID_TEXT, UUID_ID),
        (UUID_TEXT.upper(), UUID_ID),
    ],
)
def test_interpret_as_document_id_accepts_id_url_and_uuid(value: str, expected: str) -> None:
    """A bare id, an automerge: URL and a hyphenated UUID all give the document id."""
    assert interpret_as_document_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "!!!invalid!!!",
        "",
        "../../etc",
        UUID_TEXT.replace("-", ""),
        "{" + UUID_TEXT + "}",
        "urn:uuid:" + UUID_TEXT,
        UUID_TEXT[:-1] + "g",
        "automerge:",
        with_bad_checksum(EXAMPLE_ID),
        None,
        42,
    ],
    ids=repr,
)
def test_interpret_as_document_id_rejects_garbage(value: object) -> None:
    """Anything that is not an id, URL or canonical UUID raises InvalidDocumentId."""
    with pytest.raises(InvalidDocumentId):
        interpret_as_document_id(value)  # type: ignore[arg-type]


# -- heads --------------------------------------------------------------------------


def test_heads_round_trip_through_encode_and_decode() -> None:
    """Real Automerge heads encode to bs58check strings and decode back unchanged."""
    heads = real_heads()
    encoded = encode_heads(heads)
    assert encoded == [bs58check(h) for h in heads]
    assert all(47 <= len(h) <= 50 for h in encoded)
    assert decode_heads(encoded) == heads
    assert encode_heads([]) == []
    assert decode_heads([]) == []


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=5))
def test_any_32_byte_hashes_round_trip(heads: list[bytes]) -> None:
    """Any list of 32-byte hashes survives encode_heads then decode_heads."""
    assert decode_heads(encode_heads(heads)) == heads


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_decode_heads_rejects_non_32_byte_payloads(size: int) -> None:
    """A checksum-valid head whose payload is not 32 bytes is rejected."""
    with pytest.raises(InvalidDocumentId, match="32-byte"):
        decode_heads([bs58check(bytes(range(size)))])


@pytest.mark.parametrize(
    "head",
    ["", "0OIl", "!!!", with_bad_checksum(bs58check(bytes(32))), "\u00e9"],
    ids=repr,
)
def test_decode_heads_rejects_malformed_strings(head: str) -> None:
    """Heads that are not bs58check at all raise InvalidDocumentId."""
    with pytest.raises(InvalidDocumentId):
        decode_heads([bs58check(bytes(32)), head])


@pytest.mark.parametrize("head", [123, None, 1.5], ids=repr)
def test_decode_heads_rejects_non_string_heads(head: object) -> None:
    """A non-string head raises InvalidDocumentId, as the module's total-validation promise says."""
    with pytest.raises(InvalidDocumentId):
        decode_heads([head])  # type: ignore[list-item]


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_encode_heads_rejects_non_32_byte_hashes(size: int) -> None:
    """encode_heads refuses a hash that is not 32 bytes (decode_heads would reject its output)."""
    with pytest.raises(ValueError):
        encode_heads([bytes(size)])
    with pytest.raises(ValueError):
        document_url(EXAMPLE_ID, [bytes(size)])


# -- peer ids -----------------------------------------------------------------------


def test_generated_peer_id_format() -> None:
    """generate_peer_id gives 'py-' plus 16 random bytes in unpadded base64url, all distinct."""
    peer_ids = [generate_peer_id() for _ in range(200)]
    assert len(set(peer_ids)) == len(peer_ids)
    for peer_id in peer_ids:
        assert re.fullmatch(r"py-[A-Za-z0-9_-]{22}", peer_id), peer_id
        token = peer_id.removeprefix("py-")
        assert len(base64.urlsafe_b64decode(token + "==")) == 16


def test_generated_peer_id_uses_the_given_prefix() -> None:
    """A custom prefix replaces 'py'."""
    assert re.fullmatch(r"kernel-[A-Za-z0-9_-]{22}", generate_peer_id("kernel"))
