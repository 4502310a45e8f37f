"""How messages for people count things: "1 document", "2 documents"."""

from __future__ import annotations

__all__ = ["counted"]


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` with ``noun`` in the right form.

    >>> counted(1, "document"), counted(2, "peer"), counted(0, "change")
    ('1 document', '2 peers', '0 changes')
    >>> counted(3, "body", "bodies")
    '3 bodies'
    """
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
