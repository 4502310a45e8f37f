"""Changes made from Python with a time and a message, as JavaScript's changes have.

Works around: ``automerge.core``'s ``transaction()`` (binding 1.0.0rc1)
takes no message and no time, so its changes carry time 0 ("unknown") and
no message, while JavaScript's ``change()`` writes both. :class:`Stamper`
makes the change on a copy of the document with the same actor, writes the
time (whole seconds since the epoch, as JavaScript does) and the message
into the change's header (:func:`~.changes.restamp_change`: the operations'
bytes are kept, the hash and checksum computed again), and applies the
stamped change to the document, which so never holds the unstamped one.
JavaScript peers read both (tests/interop/test_history_interop.py).

What it costs: the copy (the binding's ``fork()``) takes time in proportion
to the document. Measured per change (``bench/history_bench.py``), stamped
against the binding's own commit (about 0.03 ms throughout): 0.06 ms for a
document of 10 keys, 1.2 ms for 10,000 keys, 19 ms for 100,000 keys and
62 ms for 100,000 one-operation changes. So beyond :data:`STAMP_LIMIT`
operations a change is stamped only when it has a message (it was asked
for, so it is worth its cost); other changes are committed directly and
their time stays unknown. ``doc.stamp_limit`` moves the limit for one
document (``None``: stamp every change). A copy per change is the least
this binding allows: a document cannot drop a change, so the unstamped
change must be made on a document that is then thrown away.
Delete this module when the binding's ``transaction()`` or commit takes a
message and a time.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Final

import automerge.core as am

from ..errors import DocumentError
from .changes import restamp_change
from .sync_message import sync_message_of

__all__ = ["STAMP_LIMIT", "Stamper", "stamp_new"]

#: The op counter up to which every change is stamped: a change on a
#: document this size costs at most about 4 ms (20,000 keys) to 12 ms
#: (20,000 changes) more than the binding's commit.
STAMP_LIMIT: Final = 20_000


class Stamper:
    """Gives the changes made on one binding document a time and a message.

    Args:
        core: the binding document the changes go to.
        clock: seconds since the epoch, now (tests pass their own).
    """

    def __init__(self, core: am.Document, *, clock: Callable[[], float] = _time.time) -> None:
        self._core = core
        self._clock = clock
        #: The op counter up to which every change is stamped; beyond it only
        #: changes with a message are. ``None``: every change.
        self.limit: int | None = STAMP_LIMIT
        self._seen: list[bytes] | None = None
        self._ops = 0

    def size(self) -> int:
        """The document's op counter: about how many operations it holds.

        Read from the changes added since the last call (all of them the
        first time), so it costs next to nothing between changes.
        """
        heads = self._core.get_heads()
        if heads != self._seen:
            for change in self._core.get_changes(self._seen or []):
                self._ops = max(self._ops, int(change.max_op))
            self._seen = heads
        return self._ops

    def wanted(self, message: str | None) -> bool:
        """Whether the next change is made on a copy and stamped."""
        return bool(message) or self.limit is None or self.size() <= self.limit

    def workspace(self) -> am.Document:
        """A copy to make the change on: same actor, so the change is the document's own."""
        copy = self._core.fork()
        copy.set_actor(self._core.get_actor())
        return copy

    def apply(self, workspace: am.Document, before: list[bytes], message: str | None) -> None:
        """Stamp the change ``workspace`` made since ``before`` and apply it to the document.

        Raises:
            DocumentError: the core did not take the stamped change (the
                document is left as it was).
        """
        made = workspace.get_changes(before)
        if not made:
            return  # the block changed nothing
        if len(made) != 1:
            raise DocumentError(f"one change was expected on the copy, found {len(made)}")
        chunk, digest = restamp_change(made[0].bytes, time=int(self._clock()), message=message)
        self._core.receive_sync_message(am.SyncState(), am.Message.decode(sync_message_of([chunk])))
        if digest not in self._core.get_heads():
            raise DocumentError(
                "the automerge core did not accept the change with its time and message; "
                "nothing was changed"
            )
        if self._seen == before:  # keep size() from rescanning
            self._ops = max(self._ops, int(made[0].max_op))
            self._seen = self._core.get_heads()


def stamp_new(core: am.Document, *, clock: Callable[[], float] = _time.time) -> am.Document:
    """A document made of ``core``'s one change, stamped with the time now.

    For a document just made (``new_document``): its first change gets a
    time like every later one. ``core`` itself is returned when it holds
    another number of changes, or more than :data:`STAMP_LIMIT` operations.
    """
    changes = core.get_changes([])
    if len(changes) != 1 or int(changes[0].max_op) > STAMP_LIMIT:
        return core
    chunk, digest = restamp_change(changes[0].bytes, time=int(clock()), message=None)
    stamped = am.Document(core.get_actor())
    stamped.receive_sync_message(am.SyncState(), am.Message.decode(sync_message_of([chunk])))
    return stamped if stamped.get_heads() == [digest] else core
