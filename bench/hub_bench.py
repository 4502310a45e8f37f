#!/usr/bin/env python
"""The hub's own cost per relayed change, without sockets, clocks or a load generator.

    python bench/hub_bench.py [--clients 10] [--docs 20] [--changes 50] [--profile]

C Automerge peers (plain cores, as automerge-repo's DocSynchronizer drives
them: answer every message, send their own changes) edit D documents in
turns through one sans-I/O hub; the hub's rounds go after every turn of the
peers (as under load, when the throttle batches), with holding on. Prints
the time spent in the hub (receive + propagate) per change made and per
message, and the messages per change: a noise-free view of the server's
per-message work that the socket benchmarks (bench/server_bench.py), whose
CPU figures swing with the load generator's pace, cannot give.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import random
import time
from typing import Any

import automerge.core as am

from autosync_jupyter.core.hub import Hub
from autosync_jupyter.core.protocol import Join, Request, Sync, encode
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id


class Peer:
    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.peer_id = PeerId(name)
        self.conn = hub.open_connection()
        self.docs: dict[DocumentId, tuple[am.Document, am.SyncState]] = {}
        hub.receive(self.conn, encode(Join(self.peer_id)))

    def send(self, doc_id: DocumentId, *, request: bool = False) -> tuple[float, list[Any]]:
        """Send this peer's next message for ``doc_id``; the hub's time and what it sent."""
        doc, state = self.docs[doc_id]
        message = doc.generate_sync_message(state)
        if message is None:
            return 0.0, []
        cls = Request if request else Sync
        data = encode(cls(self.peer_id, self.hub.peer_id, doc_id, message.encode()))
        started = time.perf_counter()
        fx = self.hub.receive(self.conn, data)
        spent = time.perf_counter() - started
        assert not fx.close, fx.close
        return spent, fx.send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="print the hot spots (the peers' own core calls too)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    hub = Hub(peer_id=PeerId("server"), storage_id="bench")
    peers = [Peer(hub, f"client-{i}") for i in range(args.clients)]
    doc_ids = [generate_document_id() for _ in range(args.docs)]
    for doc_id in doc_ids:
        for i, peer in enumerate(peers):
            doc = am.Document()
            if i == 0:
                with doc.transaction() as tx:
                    tx.put(am.ROOT, "created", am.ScalarType.Int, 1)
            peer.docs[doc_id] = (doc, am.SyncState())
    # (Older trees, run with PYTHONPATH=DIR for a comparison, have no holding.)
    hold = {"hold": True} if "hold" in inspect.signature(hub.propagate).parameters else {}
    counts = {"hub_s": 0.0, "in": 0, "out": 0}
    by_conn = {peer.conn: peer for peer in peers}

    def deliver(fx_send: list[tuple[int, Any]]) -> None:
        # Peers read what the hub sent and answer at once, as automerge-repo does.
        pending = list(fx_send)
        while pending:
            conn, msg = pending.pop(0)
            counts["out"] += 1
            if not isinstance(msg, Sync):
                continue
            peer = by_conn[conn]
            doc, state = peer.docs[msg.document_id]
            doc.receive_sync_message(state, am.Message.decode(msg.data))
            spent, sent = peer.send(msg.document_id)
            counts["hub_s"] += spent
            counts["in"] += 1 if spent else 0
            pending.extend(sent)

    def round_() -> None:
        started = time.perf_counter()
        fx = hub.propagate(**hold)
        counts["hub_s"] += time.perf_counter() - started
        deliver(fx.send)
        for _ in range(5):  # answers to answers, until quiet
            if not hub.pending_propagation():
                break
            started = time.perf_counter()
            fx = hub.propagate(**hold)
            counts["hub_s"] += time.perf_counter() - started
            deliver(fx.send)

    # Every peer opens every document (the creator first).
    for doc_id in doc_ids:
        for i, peer in enumerate(peers):
            deliver(peer.send(doc_id, request=i > 0)[1])
            round_()
    counts.update(hub_s=0.0, **{"in": 0, "out": 0})
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    for turn in range(args.changes):
        for i, peer in enumerate(peers):
            for doc_id in rng.sample(doc_ids, len(doc_ids)):
                doc, _ = peer.docs[doc_id]
                with doc.transaction() as tx:
                    tx.put(am.ROOT, f"c{i}", am.ScalarType.Int, turn)
                spent, sent = peer.send(doc_id)
                counts["hub_s"] += spent
                counts["in"] += 1
                deliver(sent)
        round_()
    if profiler:
        profiler.disable()
    made = args.clients * args.docs * args.changes
    print(
        f"{made} changes, {counts['in']} messages in, {counts['out']} out: "
        f"hub {counts['hub_s']:.2f} s, {counts['hub_s'] / made * 1e6:.0f} µs per change, "
        f"{counts['hub_s'] / (counts['in'] + counts['out']) * 1e6:.0f} µs per message"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
