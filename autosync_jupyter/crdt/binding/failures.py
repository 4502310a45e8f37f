"""What the binding's calls throw, and how to tell one failure from another.

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

    Works around: the binding (1.0.0rc1) lets Rust panics out as
    ``pyo3_runtime.PanicException``, a ``BaseException`` whose class is not
    importable, so it can only be recognised by its class name. Delete when
    the binding turns panics into ordinary exceptions (or exports the class).

    >>> is_panic(ValueError("no"))
    False
    """
    return type(exc).__name__ == "PanicException"


# The binding refuses to sync, save, diff or list changes while a change is
# open on the document, and says so only in its message text (the exception
# is a bare ``Exception``): "cannot sync with an active transaction".
_TRANSACTION_OPEN = "active transaction"


def is_transaction_open(exc: BaseException) -> bool:
    """Whether ``exc`` is the binding refusing work because a change is open on the document.

    ``async`` code may await inside ``with doc.change():``; sync work on that
    document must then wait and be retried.

    Works around: the binding (1.0.0rc1) raises a plain ``Exception`` for
    this, recognisable only by its message. Delete when the binding raises a
    dedicated exception type.

    >>> is_transaction_open(RuntimeError("cannot do that with an active transaction"))
    True
    """
    return _TRANSACTION_OPEN in str(exc)
