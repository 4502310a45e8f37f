"""How messages for people read: counted nouns ("2 documents"), peer text made safe to log."""

from __future__ import annotations

__all__ = ["counted", "printable"]


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` with ``noun`` in the right form.

    >>> counted(1, "document"), counted(2, "peer"), counted(0, "change")
    ('1 document', '2 peers', '0 changes')
    >>> counted(3, "body", "bodies")
    '3 bodies'
    """
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def printable(text: object, limit: int = 200) -> str:
    """``text`` with control and other non-printable characters escaped, and shortened.

    >>> printable("bad\\nINFO forged line")
    'bad\\\\nINFO forged line'
    >>> printable("x" * 10, limit=4)
    'xxxx…'
    """
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
