"""The one error hierarchy of autosync-jupyter.

Every error the package raises on purpose derives from :class:`AutosyncError`,
so ``except AutosyncError`` catches exactly what this package reports and
nothing else.
"""

from __future__ import annotations

__all__ = [
    "AutosyncError",
    "DocumentUnavailable",
    "InvalidDocumentId",
    "ProtocolError",
    "StorageError",
]


class AutosyncError(Exception):
    """Base class of every error raised by autosync-jupyter."""


class ProtocolError(AutosyncError):
    """A peer sent bytes that are not a valid automerge-repo message.

    The message says which field was wrong and how; it is safe to show to the
    peer (it never contains a stack trace).
    """


class InvalidDocumentId(AutosyncError, ValueError):
    """A string is not a valid automerge document id (bs58check) or URL."""


class DocumentUnavailable(AutosyncError):
    """No peer could supply the requested document."""

    def __init__(self, document_id: str, message: str | None = None) -> None:
        self.document_id = document_id
        super().__init__(message or f"document {document_id} is unavailable")


class StorageError(AutosyncError):
    """The store could not read or write a document."""
