"""An asyncio event loop in a daemon thread, for blocking façades over async objects.

:class:`~autosync_jupyter.runtime.server.BackgroundSyncServer` and
:class:`~autosync_jupyter.runtime.blocking.BlockingConnection` each run their
async object in a :class:`LoopThread` and block on calls into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..nesting import wait_blocking

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread (started at once), and ways to call into it.

    Args:
        name: the thread's name (shown by debuggers and ``threading.enumerate()``).
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` in the loop and block until it returns (or raise what it raised).

        From a notebook cell the kernel's own loop keeps running meanwhile
        (see :mod:`autosync_jupyter.nesting`).
        """
        return wait_blocking(asyncio.run_coroutine_threadsafe(coro, self.loop), timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` in the loop's thread and return its result."""

        async def call() -> T:
            return fn()

        return self.run(call())

    def stop(self) -> None:
        """Stop the loop, join its thread and close the loop (again: nothing happens)."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self.run(self.loop.shutdown_asyncgens(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
