"""Blocking calls from a notebook cell, whose thread already runs an event loop.

A Jupyter kernel runs cells inside its asyncio loop, and the sync server of
``%autosync serve`` lives in that same loop. A blocking call from a cell
(:func:`~autosync_jupyter.fetch_blocking`, the magics, a
:class:`~autosync_jupyter.BlockingConnection`) cannot simply wait:
the loop would stop, the in-kernel server would stop answering, and a fetch
from the kernel's own server would wait for itself forever.

So, only there, the loop is made re-entrant with ``nest_asyncio2`` (the
maintained fork of ``nest_asyncio``) and the blocking call runs the loop
until its coroutine is done: the server, other connections and widget
updates keep being served meanwhile. The patch is applied to the kernel's
loop the first time it is needed, never on import, and never to other
programs' loops: blocking calls from any other running loop (async web
apps, ipykernel subshell threads) are refused with a message that names
the ``await`` form, since nesting there would hide bugs rather than fix
them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["kernel_loop", "run_blocking", "wait_blocking"]

T = TypeVar("T")

_patched: set[int] = set()
_patch_lock = threading.Lock()


def kernel_loop() -> asyncio.AbstractEventLoop | None:
    """Return the running loop if this is an IPython kernel's main thread, else None.

    Cells run there; ipykernel subshells run in other threads and do not
    qualify.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()  # type: ignore[no-untyped-call,unused-ignore]
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return loop


def _reentrant(loop: asyncio.AbstractEventLoop) -> None:
    with _patch_lock:
        if id(loop) in _patched:
            return
        import nest_asyncio2

        nest_asyncio2.apply(loop)
        _patched.add(id(loop))


def run_blocking(coro: Coroutine[Any, Any, T], *, name: str, alternative: str) -> T:
    """Run ``coro`` to completion and return its result, from sync code.

    With no loop running in this thread, runs it in a new loop. In a
    notebook cell, runs the kernel's loop (re-entrantly) until it is done,
    so everything else in that loop keeps going.

    Raises:
        RuntimeError: this thread runs an event loop that is not a kernel's
            (``name`` and ``alternative`` make the message).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    loop = kernel_loop()
    if loop is None:
        coro.close()
        raise RuntimeError(
            f"{name}() blocks, and this thread runs an event loop that is not a "
            f"notebook kernel's (async code, or an ipykernel subshell): use "
            f"`{alternative}` instead"
        )
    _reentrant(loop)
    return loop.run_until_complete(coro)


def wait_blocking(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """Wait for a future completed by another thread, without freezing a kernel's loop.

    Outside a kernel cell this is ``future.result(timeout)``.
    """
    if kernel_loop() is None:
        return future.result(timeout)

    async def wait() -> T:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    try:
        return run_blocking(wait(), name="wait", alternative="await")
    except asyncio.TimeoutError:
        raise concurrent.futures.TimeoutError() from None
