"""The adaptive sync throttle: its policy on fake clocks and loads, and one real relay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from autosync_jupyter import SyncServer
from autosync_jupyter.ids import DocumentId
from autosync_jupyter.runtime.connection import connect
from autosync_jupyter.runtime.sync_throttle import (
    CPU_HIGH,
    CPU_LOW,
    LoadMeter,
    RateMeter,
    SyncThrottle,
)

DOC = DocumentId("4NMNnkMhL8jXrdJ9jamS58PAVdXu")
OTHER = DocumentId("2j9knpCseyhnK8izDmLpGP5WMdZQ")


class FakeHub:
    """The two things the throttle reads of a hub."""

    def __init__(self, peers: int = 3) -> None:
        self.dirty: set[DocumentId] = set()
        self.peers = peers

    def dirty_documents(self) -> frozenset[DocumentId]:
        return frozenset(self.dirty)

    def peer_count(self, doc_id: DocumentId) -> int:
        return self.peers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A throttle on a fake clock and CPU load, recording its rounds."""

    def __init__(self, interval: float = 0.1, cpu: float = 1.0, peers: int = 3) -> None:
        self.clock = Clock()
        self.cpu = cpu
        self.hub = FakeHub(peers)
        self.rounds: list[set[DocumentId]] = []
        self.throttle = SyncThrottle(
            interval, self._round, cpu_load=lambda: self.cpu, clock=self.clock
        )

    def _round(self, doc_ids: set[DocumentId]) -> None:
        self.hub.dirty -= doc_ids
        self.rounds.append(set(doc_ids))

    async def message(self, *doc_ids: DocumentId, changes: bool) -> None:
        """Messages for ``doc_ids`` arrive (bringing changes or not); one loop turn passes."""
        self.hub.dirty.update(doc_ids)
        self.throttle.schedule(self.hub, doc_ids if changes else ())
        await asyncio.sleep(0)


# -- the load meter ------------------------------------------------------------------


def test_load_meter_follows_the_share_of_time_on_the_cpu() -> None:
    wall, cpu = Clock(), Clock()
    meter = LoadMeter(horizon=0.5, clock=wall, cpu_clock=cpu)
    assert meter.load() == 0.0  # the first call only starts measuring
    wall.now += 5.0
    cpu.now += 5.0  # busy all along, for ten horizons
    assert meter.load() > 0.99
    wall.now += 5.0  # then idle as long
    assert meter.load() < 0.01


def test_load_meter_ignores_spans_shorter_than_its_resolution() -> None:
    wall, cpu = Clock(), Clock()
    meter = LoadMeter(horizon=0.5, resolution=0.01, clock=wall, cpu_clock=cpu)
    meter.load()
    wall.now += 0.001
    cpu.now += 0.001
    assert meter.load() == 0.0  # 1 ms is not folded in yet...
    wall.now += 0.01
    cpu.now += 0.01
    assert 0.0 < meter.load() < 0.05  # ...but counts once the span is long enough


def test_load_meter_weighs_a_sample_by_the_time_it_covers() -> None:
    wall, cpu = Clock(), Clock()
    meter = LoadMeter(horizon=0.5, clock=wall, cpu_clock=cpu)
    meter.load()
    wall.now += 0.02
    cpu.now += 0.02  # a 20 ms burst on an idle loop is not "busy"
    assert meter.load() < CPU_LOW


def test_rate_meter_reads_a_steady_rate_and_forgets_it() -> None:
    meter = RateMeter(horizon=0.5)
    now = 0.0
    for _ in range(1000):  # 100 per second for 10 s
        now += 0.01
        meter.add(1, now)
    assert meter.rate(now) == pytest.approx(100, rel=0.05)
    assert meter.rate(now + 5.0) < 0.01


# -- the load and the interval it sets -------------------------------------------------


def test_the_cpu_share_sets_the_load_between_its_marks() -> None:
    rig = Rig(interval=0.1)
    now = rig.clock.now
    rig.cpu = 0.0
    assert rig.throttle.load(now) == 0.0
    rig.cpu = CPU_LOW
    assert rig.throttle.load(now) == 0.0
    rig.cpu = (CPU_LOW + CPU_HIGH) / 2
    assert rig.throttle.load(now) == pytest.approx(0.5)
    rig.cpu = 1.0
    assert rig.throttle.load(now) == 1.0


def test_a_dip_between_bursts_of_load_is_not_a_quiet_spell() -> None:
    rig = Rig(interval=0.1, cpu=1.0)
    now = rig.clock.now
    assert rig.throttle.load(now) == 1.0
    rig.cpu = 0.0  # the measures dip...
    assert rig.throttle.load(now + 1.0) == 1.0  # ...but the load measured holds a while
    assert rig.throttle.load(now + 3.0) == 0.0  # then it is quiet


async def test_relaying_many_messages_a_second_is_load_even_with_an_idle_cpu() -> None:
    rig = Rig(interval=30.0, cpu=0.0, peers=101)
    for _ in range(20):  # twenty changes, each to be relayed to 100 peers, in 20 ms
        await rig.message(DOC, changes=True)
        rig.clock.now += 0.001
    # 2000 messages: over RELAY_HIGH per second (the meter spreads them over
    # its half-second horizon): the server is busy...
    assert rig.throttle.load(rig.clock.now) == 1.0
    assert rig.throttle.planned(DOC)  # ...so the last ones wait
    assert len(rig.rounds) < 20
    rig.throttle.cancel()
    rig.clock.now += 10.0  # a quiet spell later, the relay rate is forgotten
    assert rig.throttle.load(rig.clock.now) == 0.0


async def test_interval_zero_never_batches_even_under_load() -> None:
    rig = Rig(interval=0.0, cpu=1.0)
    for _ in range(3):
        await rig.message(DOC, changes=True)
    assert rig.rounds == [{DOC}, {DOC}, {DOC}]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        SyncThrottle(-1.0, lambda doc_ids: None)


# -- when a round goes out -------------------------------------------------------------


async def test_a_change_on_an_idle_server_goes_out_at_once_every_time() -> None:
    rig = Rig(interval=30.0, cpu=0.0)
    for _ in range(3):
        await rig.message(DOC, changes=True)
        rig.clock.now += 0.001
    assert rig.rounds == [{DOC}, {DOC}, {DOC}]


async def test_under_load_changes_within_the_interval_wait_for_it() -> None:
    rig = Rig(interval=30.0, cpu=1.0)
    await rig.message(DOC, changes=True)  # the first after a quiet spell: at once
    rig.clock.now += 0.001
    await rig.message(DOC, changes=True)
    await rig.message(DOC, changes=True)
    assert rig.rounds == [{DOC}]
    assert rig.throttle.planned(DOC)  # gathered into one round, later
    rig.throttle.cancel()
    assert not rig.throttle.planned(DOC)


async def test_under_load_a_change_after_the_interval_goes_at_once() -> None:
    rig = Rig(interval=0.1, cpu=1.0)
    await rig.message(DOC, changes=True)
    rig.clock.now += 0.1
    await rig.message(DOC, changes=True)
    assert rig.rounds == [{DOC}, {DOC}]


async def test_answers_to_messages_without_changes_do_not_delay_the_next_change() -> None:
    # The root of the extra interval: acknowledgements after a round made a
    # round of their own one interval later, which started the next
    # interval, so a change arriving just after it waited a whole interval
    # more. Now the interval counts from the last round that carried changes.
    rig = Rig(interval=1.0, cpu=CPU_LOW + 0.2 * (CPU_HIGH - CPU_LOW))  # rounds 0.2 s apart
    await rig.message(DOC, changes=True)  # a round with changes at t = 0
    rig.clock.now += 0.1
    await rig.message(DOC, changes=False)  # acknowledgements: they wait...
    assert rig.rounds == [{DOC}]
    assert rig.throttle.planned(DOC)
    rig.clock.now += 0.1
    await asyncio.sleep(0.5)  # ...for their timer (0.1 s), which runs at t = 0.2
    assert rig.rounds == [{DOC}, {DOC}]
    rig.clock.now += 0.01  # a change just after that answers-only round
    await rig.message(DOC, changes=True)
    # Due at t = 0.24: 0.2 s after the round with changes (moved a fifth of
    # the way to the answers at this load), not 0.2 s after the answers.
    assert rig.throttle.delay(DOC, 3, rig.clock.now) == pytest.approx(0.03)
    rig.throttle.cancel()


async def test_under_full_load_rounds_keep_the_interval_from_any_round() -> None:
    rig = Rig(interval=0.1, cpu=1.0)
    await rig.message(DOC, changes=True)  # t = 0
    rig.clock.now += 0.05
    await rig.message(DOC, changes=False)  # answers, planned for t = 0.1
    rig.clock.now += 0.05
    await asyncio.sleep(0.2)
    assert rig.rounds == [{DOC}, {DOC}]
    rig.clock.now += 0.001
    await rig.message(DOC, changes=True)  # gathered until t = 0.2, not sent at once
    assert len(rig.rounds) == 2
    assert rig.throttle.planned(DOC)
    assert rig.throttle.delay(DOC, 3, rig.clock.now) == pytest.approx(0.099)
    rig.throttle.cancel()


async def test_answers_wait_for_a_round_already_planned() -> None:
    rig = Rig(interval=30.0, cpu=1.0)
    await rig.message(DOC, changes=True)
    await rig.message(DOC, changes=True)  # planned for later
    await rig.message(DOC, changes=False)
    assert rig.rounds == [{DOC}]  # the answer goes with the planned round
    rig.throttle.cancel()


async def test_on_an_idle_server_answers_go_at_once() -> None:
    # An answer may carry what a peer lacks (a step of its sync handshake).
    rig = Rig(interval=30.0, cpu=0.0)
    await rig.message(DOC, changes=True)
    await rig.message(DOC, changes=False)
    await rig.message(DOC, changes=False)
    assert rig.rounds == [{DOC}, {DOC}, {DOC}]


async def test_under_load_changes_do_not_wait_for_answers_planned_later() -> None:
    rig = Rig(interval=30.0, cpu=(CPU_LOW + CPU_HIGH) / 2)  # half load: rounds 15 s apart
    await rig.message(DOC, changes=True)  # t = 0
    rig.clock.now += 10.0
    await rig.message(DOC, changes=False)  # answers: planned for t = 15
    await rig.message(DOC, changes=False)
    assert rig.rounds == [{DOC}]
    assert rig.throttle.delay(DOC, 3, rig.clock.now) == pytest.approx(5.0)
    rig.clock.now += 1.0
    # changes at t = 11: counted from t = 0 (and half way to t = 0 at half load)
    await rig.message(DOC, changes=True)
    assert rig.throttle.delay(DOC, 3, rig.clock.now) == pytest.approx(4.0)
    rig.throttle.cancel()


async def test_a_document_with_one_peer_is_answered_at_once_under_load() -> None:
    rig = Rig(interval=30.0, cpu=1.0, peers=1)
    await rig.message(DOC, changes=True)
    await rig.message(DOC, changes=True)
    assert rig.rounds == [{DOC}, {DOC}]


async def test_messages_of_one_loop_turn_share_one_round() -> None:
    rig = Rig(interval=30.0, cpu=0.0)
    rig.hub.dirty.update({DOC, OTHER})
    rig.throttle.schedule(rig.hub, [DOC])
    rig.throttle.schedule(rig.hub, [DOC, OTHER])
    rig.throttle.schedule(rig.hub, [])
    assert rig.rounds == []  # not inside the turn that received them, but at the next
    await asyncio.sleep(0)
    assert rig.rounds == [{DOC, OTHER}]  # once each, together


async def test_each_document_has_its_own_interval() -> None:
    rig = Rig(interval=30.0, cpu=1.0)
    await rig.message(DOC, changes=True)
    await rig.message(DOC, changes=True)  # DOC waits...
    await rig.message(OTHER, changes=True)  # ...OTHER had no round yet: at once
    assert rig.rounds == [{DOC}, {OTHER}]
    rig.throttle.cancel()


# -- a real server ---------------------------------------------------------------------


async def test_a_lightly_loaded_server_relays_edits_without_waiting_the_interval() -> None:
    # With a 30 s interval, a server that throttled every busy document would
    # hold the second and third edits for 30 s; idle, it relays them at once.
    async with SyncServer(port=0, data_dir=None, sync_interval=30.0) as server:
        doc_id = await server.create_document({"n": 0})
        async with connect(server.url) as conn_a, connect(server.url) as conn_b:
            a = await conn_a.open(doc_id)
            b = await conn_b.open(doc_id)
            seen: asyncio.Queue[Any] = asyncio.Queue()

            def on_b(event: Any) -> None:
                if event.origin == "remote":
                    seen.put_nowait(b.doc.get("n"))

            b.on_change(on_b)
            for n in (1, 2, 3):
                with a.doc.change() as d:
                    d["n"] = n
                while (got := await asyncio.wait_for(seen.get(), timeout=10)) != n:
                    assert got is not None and got < n


@pytest.mark.parametrize(
    ("interval", "cpu", "busy"),
    [(0.1, 0.0, False), (0.1, 1.0, True), (0.0, 1.0, False)],
    ids=["idle", "loaded", "never-batching"],
)
def test_rounds_hold_news_for_slow_peers_only_under_load(
    interval: float, cpu: float, busy: bool
) -> None:
    rig = Rig(interval=interval, cpu=cpu)
    rig.throttle.load(rig.clock())
    assert rig.throttle.busy() is busy
