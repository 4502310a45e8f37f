"""The one error hierarchy of autosync-jupyter.

Every error the package raises on purpose derives from :class:`AutosyncError`,
so ``except AutosyncError`` catches exactly what this package reports and
nothing else.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AutosyncError",
    "ConnectionFailed",
    "CounterNotSupported",
    "DocumentError",
    "DocumentUnavailable",
    "DocumentUnreadable",
    "InvalidDocumentId",
    "ProtocolError",
    "ServerError",
    "StorageError",
    "SyncTimeout",
    "UnreadableValue",
]


class AutosyncError(Exception):
    """Base class of every error raised by autosync-jupyter."""


class ProtocolError(AutosyncError):
    """A peer sent bytes that are not a valid automerge-repo message.

    The message says which field was wrong and how; it is safe to show to the
    peer (it never contains a stack trace).
    """


class AuthError(AutosyncError):
    """A peer's OIDC ID token (or the header carrying it) did not pass a check.

    ``reason`` is the precise cause (e.g. ``"Token expired"``, ``"Invalid
    token audience"``) for the server log; it never contains the token.
    ``public_message`` is the generic text to send to the peer, so that a
    failed login does not tell an attacker which check it tripped.
    """

    public_message = "Authentication failed"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self.public_message}: {reason}")


class InvalidDocumentId(AutosyncError, ValueError):
    """A string is not a valid automerge document id (bs58check) or URL."""


class DocumentUnavailable(AutosyncError):
    """No peer could supply the requested document."""

    def __init__(self, document_id: str, message: str | None = None) -> None:
        self.document_id = document_id
        super().__init__(message or f"document {document_id} is unavailable")


class DocumentUnreadable(DocumentUnavailable, KeyError):
    """A server lists the document but cannot read it now (``message`` says why).

    A :class:`KeyError` too, as for any document a server cannot give.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StorageError(AutosyncError):
    """The store could not read or write a document."""


class ConnectionFailed(AutosyncError):
    """The sync server could not be reached, refused the WebSocket, or the link was lost.

    Covers refused connections, unknown hosts, TLS failures (an untrusted
    certificate, ``wss://`` to a plain server) and HTTP refusals of the
    upgrade. The message names the URL and what went wrong.
    """


class ServerError(AutosyncError):
    """The server sent an ``error`` message (it closes the connection right after).

    ``server_message`` is the server's own text, e.g. ``"unsupported protocol
    version"`` or ``"Authentication failed"``.
    """

    def __init__(self, server_message: str, url: str | None = None) -> None:
        self.server_message = server_message
        self.url = url
        where = f" {url}" if url else ""
        super().__init__(f"the server{where} reported an error: {server_message or '(no message)'}")


class SyncTimeout(AutosyncError, TimeoutError):
    """Waiting for the server took longer than allowed; the message says what was awaited.

    Also a :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class DocumentError(AutosyncError):
    """A document cannot do what was asked; the message says why and what to do instead."""


class CounterNotSupported(DocumentError, NotImplementedError):
    """Python cannot create an Automerge counter.

    The ``automerge`` binding (1.0.0rc1) corrupts a document for good when it
    writes a new counter, so this package refuses to. Counters made by
    JavaScript peers can be read and incremented; to count from Python, store
    an ``int`` or have a JavaScript peer create the counter.
    """


class UnreadableValue(DocumentError):
    """The ``automerge`` binding could not convert a value of the document.

    Raised in place of the binding's panic, should a value ever escape the
    package's own reading of counters and unknown types; the document itself
    is unharmed.
    """
