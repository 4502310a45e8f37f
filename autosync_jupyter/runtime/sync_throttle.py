"""`SyncThrottle`: when each changed document's next round of sync messages goes out.

The hub only marks a document when a message arrives or it changes
(:meth:`~autosync_jupyter.core.hub.Hub.dirty_documents`); a *round*
(:meth:`~autosync_jupyter.core.hub.Hub.propagate`) then generates one sync
message per peer that needs one, however many changes arrived since the
last. Rounds cost the server (a message generated per peer) and the peers
(a message to read and answer each): gathering changes into fewer rounds
saves both, at the price of latency. The policy:

* **At once when the server is not busy.** A live edit should reach the
  other peers in the time the loop needs to turn, not after a fixed
  interval: on loopback a whole round trip takes a few milliseconds, which a
  fixed 100 ms throttle (the JS server's) makes a hundred times longer. "At
  once" is the next loop turn, so the messages that arrived in one turn
  still share one round.
* **Batched under load, up to ``interval``.** Two measures of load, the
  larger counts (:meth:`SyncThrottle.load`): the messages that relaying
  every change at once would send, per second (each message bringing
  changes to a document with N peers makes N; :data:`RELAY_LOW` to
  :data:`RELAY_HIGH`), and the share of wall time the event loop's thread
  spent on the CPU (:class:`LoadMeter`; :data:`CPU_LOW` to
  :data:`CPU_HIGH`). Below the low mark a round goes at once; towards the
  high mark the shortest time between two rounds of a document grows to
  ``interval``, and stays there above it; the highest load of the last two
  seconds holds, so dips between bursts do not count as quiet spells. The
  relay rate counts what batching saves, whether or not it batches (the
  CPU share drops as soon as batching starts, so alone it would swing
  between the two), and it also stands for the peers' work: a burst that
  the server could relay at once may still flood slower clients.
  ``interval`` 0 never batches.
* **Changes never wait for answers.** A round that only answers messages
  bringing no change (the acknowledgement every peer sends after a round,
  or a step of a peer's sync handshake) waits, under load, as long after
  the document's last round of any kind; but the time of a round carrying
  changes counts from the last round that carried changes, and such a round
  goes at once if that is sooner, taking the pending answers along.
  Counting it from any round was the cause of changes waiting a whole extra
  interval: the answers to each round made another one an interval later,
  which restarted the interval, so the document's rounds
  stayed on a fixed grid whether or not anything changed, and a change
  arriving just after a grid point (where clients that throttle their own
  sending to the same period, as automerge-repo's 100 ms does, send theirs)
  waited for the next one. Only under full load does the time count from
  the last round of any kind again (between, from a point in between): an
  answers-only round followed at once by one with changes is two messages
  per peer where one would do, and then gathering matters more than the
  latency of a change.
* **A document with a single peer** has nothing to gather: at once.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..ids import DocumentId

__all__ = [
    "CPU_HIGH",
    "CPU_LOW",
    "RELAY_HIGH",
    "RELAY_LOW",
    "LoadMeter",
    "RateMeter",
    "SyncThrottle",
]

#: The load (:meth:`SyncThrottle.load`) from which a round holds news back
#: from peers that have not answered the previous one (:meth:`Hub.propagate`).
HOLD_LOAD = 0.5

#: Relayed messages per second (messages bringing changes, times the other
#: peers of their document) below which rounds go out at once: two people
#: typing in a document open in twenty places make about 500.
RELAY_LOW = 600.0
#: From this many per second on, a document's rounds are ``interval`` apart.
RELAY_HIGH = 1500.0
#: Share of wall time the loop's thread spends on the CPU below which rounds
#: go out at once...
CPU_LOW = 0.3
#: ...and from which on they are ``interval`` apart.
CPU_HIGH = 0.6
# Seconds the load measures look back (their weights' time constant).
_HORIZON = 0.5
# Seconds the highest load measured holds: under a heavy but bursty load the
# measures dip between bursts, and rounds sent at once in a dip flood the
# peers that were still catching up.
_HOLD = 2.0
# Documents remembered before those quiet for an interval are forgotten.
_FORGET_AFTER = 10_000


class ThrottledHub(Protocol):
    """What the throttle reads of the hub."""

    def dirty_documents(self) -> frozenset[DocumentId]:
        """The documents a round would sync."""

    def peer_count(self, doc_id: DocumentId) -> int:
        """How many peers are engaged with a document."""


class LoadMeter:
    """How busy a thread is: the share of wall time it spent on the CPU, recently.

    An exponentially weighted average over about ``horizon`` seconds, folded
    in at most every ``resolution`` seconds (shorter spans measure the clocks'
    granularity, not the load). Call :meth:`load` from the thread to measure:
    its CPU clock is per thread, so the first call (or one from another
    thread) only starts measuring there.
    """

    def __init__(
        self,
        horizon: float = _HORIZON,
        resolution: float = 0.01,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.horizon = horizon
        self.resolution = resolution
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._thread: int | None = None
        self._wall = 0.0
        self._cpu = 0.0
        self._load = 0.0

    def load(self) -> float:
        """The recent share of wall time on the CPU, 0 to 1."""
        wall = self._clock()
        thread = threading.get_ident()
        if thread != self._thread:
            # A runtime is often made in one thread and run in another.
            self._thread, self._wall, self._cpu = thread, wall, self._cpu_clock()
            return self._load
        elapsed = wall - self._wall
        if elapsed >= self.resolution:
            cpu = self._cpu_clock()
            sample = min(1.0, max(0.0, (cpu - self._cpu) / elapsed))
            # Weighted by the span it covers: after a quiet minute the old
            # load is forgotten, a 10 ms burst moves it a little.
            keep = math.exp(-elapsed / self.horizon)
            self._load = keep * self._load + (1 - keep) * sample
            self._wall, self._cpu = wall, cpu
        return self._load


class RateMeter:
    """Events per second, recently: an exponentially decaying count.

    Each event adds ``1 / horizon`` and the sum decays by ``e`` every
    ``horizon`` seconds, so a steady rate of r events per second reads r.
    """

    def __init__(self, horizon: float = _HORIZON) -> None:
        self.horizon = horizon
        self._rate = 0.0
        self._at = 0.0

    def rate(self, now: float) -> float:
        """Events per second around ``now``."""
        if now > self._at:
            self._rate *= math.exp((self._at - now) / self.horizon)
            self._at = now
        return self._rate

    def add(self, count: float, now: float) -> None:
        """``count`` events happened at ``now``."""
        self._rate = self.rate(now) + count / self.horizon


class SyncThrottle:
    """When each changed document's next round of sync messages goes out.

    The policy and why are in the module's docstring. ``run_round`` is
    called with the documents whose round is due; ``interval`` is the
    longest a change waits for its round (when the server is busy), 0 for
    never waiting. ``cpu_load`` returns the share of time the loop's thread
    is on the CPU (default: a :class:`LoadMeter` of the thread running the
    loop); ``clock`` is the time (default: the loop's).
    """

    def __init__(
        self,
        interval: float,
        run_round: Callable[[set[DocumentId]], None],
        *,
        cpu_load: Callable[[], float] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"the sync interval must be >= 0 seconds, not {interval!r}")
        self.interval = interval
        self._run_round = run_round
        self._cpu_load = cpu_load if cpu_load is not None else LoadMeter().load
        self._clock = clock
        self._relayed = RateMeter()
        self._held = (0.0, -math.inf)  # the highest recent load, and when
        self._soon = False
        self._due: set[DocumentId] = set()
        # Documents that changed since their last round: that round carries
        # the changes to every peer, and the next is counted from it.
        self._news: set[DocumentId] = set()
        # When each document's last round went out, and its last carrying changes.
        self._last: dict[DocumentId, tuple[float, float]] = {}
        self._timers: dict[DocumentId, asyncio.TimerHandle] = {}

    def load(self, now: float) -> float:
        """How busy the server is, 0 (idle) to 1 (rounds ``interval`` apart).

        The highest of the last couple of seconds: a dip between bursts is
        not a quiet spell.
        """
        relay = (self._relayed.rate(now) - RELAY_LOW) / (RELAY_HIGH - RELAY_LOW)
        cpu = (self._cpu_load() - CPU_LOW) / (CPU_HIGH - CPU_LOW)
        load = min(1.0, max(0.0, relay, cpu))
        held, since = self._held
        if load >= held or now - since >= _HOLD:
            self._held = (load, now)
            return load
        return held

    def busy(self) -> bool:
        """Whether rounds are batched at all now (the load is above the low marks)."""
        if self.interval <= 0:
            return False
        return self._held[0] >= HOLD_LOAD

    def delay(
        self, doc_id: DocumentId, peers: int, now: float, load: Callable[[], float] | None = None
    ) -> float:
        """How long a dirty document's round waits from ``now`` (0: at once).

        ``load``: the current :meth:`load`, if the caller has it at hand.
        """
        if peers <= 1 or self.interval <= 0:
            return 0.0
        last = self._last.get(doc_id)
        if last is None:
            return 0.0
        last_round, last_news = last
        busy = load() if load is not None else self.load(now)
        if doc_id in self._news:
            # Counted from the last round with changes, not from answers
            # since; under full load, from any round, as gathering then
            # matters more than the latency of a change.
            since = last_news + busy * (last_round - last_news)
            return max(0.0, since + self.interval * busy - now)
        return max(0.0, last_round + self.interval * busy - now)

    def planned(self, doc_id: DocumentId) -> bool:
        """Whether a round of ``doc_id`` is planned (at once or later)."""
        return doc_id in self._due or doc_id in self._timers

    def schedule(self, hub: ThrottledHub, changed: Iterable[DocumentId] = ()) -> None:
        """Plan a round for each of the hub's dirty documents that has none planned.

        ``changed``: the documents that got changes since the last call (their
        next round carries them to every peer).
        """
        loop = asyncio.get_running_loop()
        now = self._now(loop)
        dirty = hub.dirty_documents()
        # Documents whose changes came while only answers waited: their
        # planned round may have to go sooner.
        fresh = set()
        for doc_id in set(changed):
            if doc_id in dirty:
                if doc_id not in self._news:
                    fresh.add(doc_id)
                    self._news.add(doc_id)
                self._relayed.add(max(0, hub.peer_count(doc_id) - 1), now)
        measured: list[float] = []

        def load() -> float:
            # Measured once per call, and only if a document needs it.
            if not measured:
                measured.append(self.load(now))
            return measured[0]

        # Only documents with no round planned, or whose planned round may
        # have to go sooner, need a look (set operations: this runs per message).
        todo = set(dirty - self._due)
        todo.difference_update(self._timers.keys() - fresh)
        for doc_id in todo:
            timer = self._timers.get(doc_id)
            wait = self.delay(doc_id, hub.peer_count(doc_id), now, load)
            if timer is not None:
                if timer.when() <= loop.time() + wait:
                    continue
                timer.cancel()
                del self._timers[doc_id]
            if wait <= 0:
                self._due.add(doc_id)
            else:
                self._timers[doc_id] = loop.call_later(wait, self._later, doc_id)
        if self._due and not self._soon:
            self._soon = True
            loop.call_soon(self._at_once)

    def cancel(self) -> None:
        """Drop the rounds planned for later (the caller propagates everything itself)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _now(self, loop: asyncio.AbstractEventLoop) -> float:
        return self._clock() if self._clock is not None else loop.time()

    def _at_once(self) -> None:
        self._soon = False
        due, self._due = self._due, set()
        self._round(due)

    def _later(self, doc_id: DocumentId) -> None:
        self._timers.pop(doc_id, None)
        self._round({doc_id})

    def _round(self, doc_ids: set[DocumentId]) -> None:
        now = self._now(asyncio.get_running_loop())
        if len(self._last) > _FORGET_AFTER:  # forget documents that went quiet
            horizon = now - self.interval
            self._last = {d: last for d, last in self._last.items() if last[0] > horizon}
        for doc_id in doc_ids:
            news = doc_id in self._news
            last_news = now if news else self._last.get(doc_id, (now, -math.inf))[1]
            self._last[doc_id] = (now, last_news)
        self._news -= doc_ids
        self._run_round(doc_ids)
