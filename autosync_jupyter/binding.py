"""Living with the ``automerge`` binding (1.0.0rc1): what its calls can throw.

The binding's Rust core panics on some inputs instead of returning an error.
A panic reaches Python as ``pyo3_runtime.PanicException``, which derives from
``BaseException`` (so ``except Exception`` lets it through) and cannot be
imported by name; after one, the document object it happened in must not be
used again (its lock is poisoned).
"""

from __future__ import annotations

__all__ = ["is_panic"]


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of the Rust core.

    >>> is_panic(ValueError("no"))
    False
    """
    return type(exc).__name__ == "PanicException"
