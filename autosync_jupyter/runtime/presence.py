"""Presence: who else is in a document now, over ephemeral messages.

Peers announce a small state (a name, a colour, what they look at) to the
other peers of a document; nothing of it is stored. The messages are those
of automerge-repo's own ``Presence`` class (2.x), so JavaScript apps that use
it and Python peers see each other::

    {"__presence": {"type": "snapshot", "state": {...}}}      # the whole state
    {"__presence": {"type": "update", "channel": k, "value": v}}  # one key of it
    {"__presence": {"type": "heartbeat"}}                    # still here
    {"__presence": {"type": "goodbye"}}                      # leaving now

The state is any map; the keys this package writes and shows are ``name``
(text), ``color`` (a CSS colour) and ``viewing`` (what the peer looks at: a
path into the document as a list of keys and indices, ``[]`` for all of it),
plus ``heads`` (the version it shows, as ``automerge:`` URL heads) while it
browses the history. A peer is forgotten after ``ttl`` seconds without a
message (``goodbye`` forgets it at once); announced peers send a heartbeat
every ``heartbeat`` seconds, and answer a peer they do not know yet with
their state (as the JavaScript class does).

:class:`PresenceTable` holds the rules without any clock or socket;
:class:`Presence` drives one for a :class:`~autosync_jupyter.DocHandle`
(``handle.presence``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ids import PeerId

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_TTL",
    "PRESENCE_MARKER",
    "PeerPresence",
    "Presence",
    "PresenceTable",
    "peer_color",
]

logger = logging.getLogger("autosync_jupyter.presence")

#: The key of automerge-repo's presence envelope.
PRESENCE_MARKER = "__presence"
#: Seconds between two heartbeats (automerge-repo's default).
DEFAULT_HEARTBEAT = 15.0
#: Seconds without a message after which a peer is forgotten (3 heartbeats, as in JS).
DEFAULT_TTL = 3 * DEFAULT_HEARTBEAT

# announce(viewing=None) says "nothing in particular"; leaving it out keeps the old value.
_UNSET: Any = object()

# A peer's state is small; a bigger one is a peer misbehaving, not a name.
_MAX_STATE_KEYS = 64

# Readable on light and dark themes; picked by a hash of the peer id so a
# peer keeps its colour everywhere that shows it.
_PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42a5a5",
    "#f032e6",
    "#9a6324",
    "#808000",
    "#000075",
)


def peer_color(peer_id: str) -> str:
    """A colour for a peer that announced none, the same for the same id.

    >>> peer_color("py-abc") == peer_color("py-abc")
    True
    """
    digest = hashlib.sha256(peer_id.encode("utf-8", "replace")).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


@dataclass(frozen=True)
class PeerPresence:
    """What one other peer of a document announced, and when it was last heard of."""

    peer_id: PeerId
    #: The state it announced (see the module's docstring for the usual keys).
    state: Mapping[str, Any]
    #: When a message from it last arrived (aware UTC).
    last_seen: dt.datetime
    #: When its state last changed (aware UTC).
    last_active: dt.datetime
    # Monotonic seconds of last_seen, for expiry.
    seen_at: float = field(repr=False, compare=False)

    @property
    def name(self) -> str | None:
        """The announced name, or None."""
        name = self.state.get("name")
        return name if isinstance(name, str) else None

    @property
    def color(self) -> str:
        """The announced colour, or one picked from the peer id."""
        color = self.state.get("color")
        return color if isinstance(color, str) and color else peer_color(self.peer_id)

    @property
    def viewing(self) -> Any:
        """What it looks at (usually a path: a list of keys and indices), or None."""
        return self.state.get("viewing")

    def label(self) -> str:
        """The name, or the start of the peer id for a peer that gave none."""
        return self.name or self.peer_id[:12]


def _utc(wall: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc)


def _clean_state(state: Any) -> dict[str, Any] | None:
    if not isinstance(state, Mapping) or len(state) > _MAX_STATE_KEYS:
        return None
    return {key: value for key, value in state.items() if isinstance(key, str)}


class PresenceTable:
    """The peers of one document and their states, fed with messages and times.

    Sans-I/O: :meth:`receive` takes the message and the current monotonic
    and wall-clock times, and says what happened; nothing here sends or
    schedules. The :attr:`peers` mapping is replaced, never mutated, so a
    reader in another thread always sees a whole table.
    """

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self.peers: Mapping[PeerId, PeerPresence] = {}

    def receive(self, sender: PeerId, payload: Any, now: float, wall: float) -> str | None:
        """Take one ephemeral message; return its presence type, or None if it is none.

        A heartbeat from an unknown peer is ignored (it sends its state when
        it hears of us), as automerge-repo does.
        """
        if not isinstance(payload, Mapping) or PRESENCE_MARKER not in payload:
            return None
        message = payload[PRESENCE_MARKER]
        if not isinstance(message, Mapping):
            return None
        kind = message.get("type")
        known = self.peers.get(sender)
        if kind == "heartbeat":
            if known is not None:
                self._put(
                    PeerPresence(sender, known.state, _utc(wall), known.last_active, seen_at=now)
                )
            return "heartbeat"
        if kind == "goodbye":
            if known is not None:
                self.peers = {p: s for p, s in self.peers.items() if p != sender}
            return "goodbye"
        if kind == "snapshot":
            update = _clean_state(message.get("state"))
        elif kind == "update" and isinstance(message.get("channel"), str):
            update = {message["channel"]: message.get("value")}
        else:
            return None
        if update is None:
            return None
        # Merged, not replaced: automerge-repo keeps keys a snapshot leaves out.
        state = {**(known.state if known is not None else {}), **update}
        when = _utc(wall)
        self._put(PeerPresence(sender, state, when, when, seen_at=now))
        return str(kind)

    def prune(self, now: float) -> list[PeerId]:
        """Forget the peers not heard of for ``ttl`` seconds; return their ids."""
        gone = [p for p, s in self.peers.items() if now - s.seen_at > self.ttl]
        if gone:
            self.peers = {p: s for p, s in self.peers.items() if p not in gone}
        return gone

    def _put(self, presence: PeerPresence) -> None:
        self.peers = {**self.peers, presence.peer_id: presence}


PresenceCallback = Callable[[Mapping[PeerId, PeerPresence]], object]
Unsubscribe = Callable[[], None]


class Presence:
    """Who is in a document now, and what this peer announces to them.

    Get it as ``handle.presence`` (a :class:`~autosync_jupyter.DocHandle`);
    it listens from the moment the handle opens. Call :meth:`announce` to
    be seen by the others; :attr:`peers` holds what they announced.

    >>> handle.presence.announce(name="Ada", color="#4363d8", viewing=["rows"])  # doctest: +SKIP
    >>> {p.name for p in handle.presence.peers.values()}  # doctest: +SKIP
    {'Grace'}

    Methods may be called from any thread; the work happens in the
    connection's event loop, and :meth:`on_change` callbacks run there.

    Args:
        send: sends one ephemeral message to the document's other peers.
        subscribe: registers a ``callback(sender, payload)`` for the
            document's ephemeral messages; returns a function that stops it.
        call_in_loop: runs a function in the connection's loop (at once
            when called from it).
        heartbeat: seconds between two heartbeats (and two expiry checks).
        ttl: seconds without a message after which a peer is forgotten.
        peer_id: this peer's id, for those who show "you" among the others.
        reconnects: how many times the link was re-established so far.
    """

    def __init__(
        self,
        send: Callable[[Any], None],
        subscribe: Callable[[Callable[[PeerId, Any], object]], Unsubscribe],
        call_in_loop: Callable[[Callable[[], None]], None],
        *,
        heartbeat: float = DEFAULT_HEARTBEAT,
        ttl: float = DEFAULT_TTL,
        peer_id: PeerId | None = None,
        reconnects: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._call_in_loop = call_in_loop
        #: This peer's id (None when the presence is not tied to a connection).
        self.peer_id = peer_id
        self.heartbeat = heartbeat
        self._table = PresenceTable(ttl)
        self._reconnects = reconnects
        self._clock = clock
        self._wall = wall_clock
        self._local: dict[str, Any] = {}
        self._announced = False
        self._stopped = False
        self._callbacks: list[PresenceCallback] = []
        self._timer: asyncio.TimerHandle | None = None
        self._answer_pending = False
        self._seen_reconnects = 0
        self._lock = threading.Lock()
        self._unsubscribe = subscribe(self._receive)

    # -- what others announced

    @property
    def peers(self) -> Mapping[PeerId, PeerPresence]:
        """The other peers in the document now, by peer id (expired ones left out)."""
        now = self._clock()
        ttl = self._table.ttl
        return {p: s for p, s in self._table.peers.items() if now - s.seen_at <= ttl}

    @property
    def ttl(self) -> float:
        """Seconds without a message after which a peer is forgotten."""
        return self._table.ttl

    def on_change(self, callback: PresenceCallback) -> Unsubscribe:
        """Call ``callback(peers)`` when a peer comes, changes its state, leaves or expires.

        Runs in the connection's loop; an exception is logged, not raised.
        Returns a function that unsubscribes.
        """
        self._callbacks.append(callback)
        self._call_in_loop(self._schedule)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    # -- what this peer announces

    @property
    def local(self) -> Mapping[str, Any]:
        """The state this peer announced (empty before :meth:`announce`)."""
        return dict(self._local)

    @property
    def announced(self) -> bool:
        """Whether this peer is announced (after :meth:`announce`, until :meth:`leave`)."""
        return self._announced

    def announce(
        self,
        name: str | None = None,
        color: str | None = None,
        viewing: Any = _UNSET,
        **state: Any,
    ) -> None:
        """Tell the document's other peers who this is and what it looks at.

        Keys given are merged into what was announced before (a key not
        given keeps its value); ``viewing`` is usually a path (a list of keys
        and indices, ``[]`` for the whole document). Other keys (any
        CBOR-encodable value) go along as they are. From now on a heartbeat
        goes out every :attr:`heartbeat` seconds.
        """
        given = {"name": name, "color": color}
        update = {k: v for k, v in given.items() if v is not None} | state
        if viewing is not _UNSET:
            update["viewing"] = viewing
        with self._lock:
            self._local.update(update)
            self._announced = True
        self._call_in_loop(self._send_snapshot)

    def leave(self) -> None:
        """Say goodbye: the others forget this peer at once; heartbeats stop."""
        with self._lock:
            was = self._announced
            self._announced = False
        if was:
            self._call_in_loop(lambda: self._send_message({"type": "goodbye"}))

    # -- what the handle calls

    def _stop(self) -> None:
        """Stop timers and listening (the handle closed)."""
        self._stopped = True
        self._announced = False
        self._unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- internals (in the connection's loop)

    def _send_message(self, message: Mapping[str, Any]) -> None:
        if self._stopped:
            return
        try:
            self._send({PRESENCE_MARKER: dict(message)})
        except Exception as exc:  # closed handle, value not encodable: presence is best effort
            logger.debug("presence message not sent: %s", exc)

    def _send_snapshot(self) -> None:
        if not self._announced:
            return
        self._seen_reconnects = self._reconnects()
        self._send_message({"type": "snapshot", "state": dict(self._local)})
        self._reschedule()

    def _receive(self, sender: PeerId, payload: Any) -> None:
        if sender == self.peer_id:
            return  # our own message, relayed back by a peer that echoes
        known = sender in self._table.peers
        kind = self._table.receive(sender, payload, self._clock(), self._wall())
        if kind is None:
            return
        if not known and kind != "goodbye" and self._announced and not self._answer_pending:
            # A newcomer does not know us yet: tell it (once per loop turn).
            self._answer_pending = True
            asyncio.get_running_loop().call_soon(self._answer)
        if kind != "heartbeat" or not known:
            self._notify()
        self._schedule()

    def _answer(self) -> None:
        self._answer_pending = False
        self._send_snapshot()

    def _notify(self) -> None:
        peers = self.peers
        for callback in list(self._callbacks):
            try:
                callback(peers)
            except Exception:
                logger.exception("a presence callback failed")

    def _schedule(self) -> None:
        """Keep the timer running while there is something to send or to expire."""
        if self._timer is None and not self._stopped:
            self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stopped or not (self._announced or self._table.peers):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.heartbeat, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._announced:
            if self._reconnects() != self._seen_reconnects:
                # Others may have forgotten us while the link was down, and
                # ignore heartbeats from peers they do not know.
                self._send_snapshot()
            else:
                self._send_message({"type": "heartbeat"})
        if self._table.prune(self._clock()):
            self._notify()
        self._reschedule()

    def __repr__(self) -> str:
        names = ", ".join(sorted(p.label() for p in self.peers.values())) or "nobody else"
        me = self._local.get("name") if self._announced else None
        return f"<Presence {'as ' + repr(me) + ': ' if me else ''}{names}>"
