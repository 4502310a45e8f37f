"""Living with the ``automerge`` binding (1.0.0rc1): what its calls can throw.

The binding's Rust core panics on some inputs instead of returning an error.
A panic reaches Python as ``pyo3_runtime.PanicException``, which derives from
``BaseException`` (so ``except Exception`` lets it through) and cannot be
imported by name; after one, the document object it happened in must not be
used again (its lock is poisoned).
"""

from __future__ import annotations

__all__ = ["is_panic", "is_transaction_open"]


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of the Rust core.

    >>> is_panic(ValueError("no"))
    False
    """
    return type(exc).__name__ == "PanicException"


# The binding refuses to sync (or save) a document while a change is open on
# it and says so only in its message text.
_TRANSACTION_OPEN = "active transaction"


def is_transaction_open(exc: BaseException) -> bool:
    """Whether ``exc`` is the binding refusing work because a change is open on the document.

    ``async`` code may await inside ``with doc.change():``; sync work on that
    document must then wait and be retried.

    >>> is_transaction_open(RuntimeError("cannot do that with an active transaction"))
    True
    """
    return _TRANSACTION_OPEN in str(exc)
