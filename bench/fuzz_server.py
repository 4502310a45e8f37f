#!/usr/bin/env python3
"""Fuzz a running ``autosync serve`` with mutated frames and changes; report what broke.

Starts our server as its own process (fresh data directory, loopback),
creates a canary document and a target document with maps, lists, text and
marks by several authors, then sends ``--cases`` hostile frames over raw
WebSocket connections (a new connection each time the server closes one):

* ``change``: a real edit of the target, mutated (bytes flipped, replaced,
  inserted, deleted) and resealed with a valid checksum, in a sync message;
* ``compressed``: the same, deflated (a type 2 chunk, checksum over the
  inflated change);
* ``orphan``: a mutated change whose dependency is never sent;
* ``sync-message``: a real sync message with mutated bytes;
* ``frame``: a valid protocol message (join, request, sync, ephemeral,
  unknown type) with mutated CBOR bytes.

Every 200 cases a valid edit goes through (the target keeps moving), and the
server must still answer. At the end it checks that the server never died,
that no Python traceback reached its log (panics the server caught are
counted, not failures), the peak RSS, that the canary and the target can be
fetched, that the target still loads after a save, and the same after a
restart. Exit status 1 if anything failed.

    python bench/fuzz_server.py --cases 100000
    python bench/fuzz_server.py --cases 2000 --seed 7 --json fuzz.json

Only loopback traffic; bounded by ``--cases``. A script, not a timed test
(the test suite runs a few hundred cases of it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import automerge.core as am
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

from hostile import body, chunk, compressed, mutate, reseal, sync_message  # noqa: E402
from servers import ServerProcess, py_sync_server  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from autosync_jupyter import fetch  # noqa: E402
from autosync_jupyter.core.protocol import (  # noqa: E402
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    PeerMetadata,
    Request,
    Sync,
    UnknownMessage,
    decode,
    encode,
)
from autosync_jupyter.ids import PeerId, generate_document_id  # noqa: E402

KINDS = {"change": 40, "compressed": 10, "orphan": 10, "sync-message": 15, "frame": 25}
CANARY = {"title": "canary", "items": [1, 2, 3]}
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Task exception was never retrieved")
_CAUGHT_PANIC = re.compile(r"reloading it from storage")
_EMPTY_SYNC = am.Document().generate_sync_message(am.SyncState()).encode()


@dataclass
class Report:
    """What a fuzz run found."""

    cases: int = 0
    seed: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    valid_edits: int = 0
    rollbacks: int = 0
    rollback_reasons: dict[str, int] = field(default_factory=dict)
    escaped: list[str] = field(default_factory=list)
    server_died: bool = False
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_end_mib: float = 0.0
    canary_ok: bool = False
    target_loads: bool = False
    after_restart_ok: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.escaped
            and not self.server_died
            and self.canary_ok
            and self.target_loads
            and self.after_restart_ok
        )


class Target:
    """Our copy of the attacked document, and edits of it in several shapes."""

    def __init__(self, doc: am.Document, rng: random.Random) -> None:
        self.doc = doc
        self.rng = rng

    def edit(self) -> bytes:
        """A real change on top of the current document (not applied to it)."""
        heads = self.doc.get_heads()
        fork = self.doc.fork()
        rng = self.rng
        with fork.transaction() as tx:
            items = tx.get(am.ROOT, "items")[1]
            text = tx.get(am.ROOT, "text")[1]
            meta = tx.get(am.ROOT, "meta")[1]
            for _ in range(rng.randrange(1, 5)):
                size, tsize = tx.length(items), tx.length(text)
                pick = rng.random()
                if pick < 0.2:
                    tx.put(am.ROOT, rng.choice("abc"), am.ScalarType.Int, rng.randrange(100))
                elif pick < 0.3:
                    tx.put(meta, rng.choice("xyz"), am.ScalarType.Str, "v")
                elif pick < 0.45:
                    tx.insert(items, rng.randrange(size + 1), am.ScalarType.Int, rng.randrange(9))
                elif pick < 0.5 and size:
                    tx.delete(items, rng.randrange(size))
                elif pick < 0.55 and size:
                    tx.put(items, rng.randrange(size), am.ScalarType.Str, "p")
                elif pick < 0.75:
                    tx.insert(text, rng.randrange(tsize + 1), am.ScalarType.Str, rng.choice("ab"))
                elif pick < 0.82 and tsize:
                    tx.delete(text, rng.randrange(tsize))
                elif pick < 0.88 and tsize > 2:
                    start = rng.randrange(tsize - 1)
                    tx.mark(
                        text,
                        start,
                        start + 1,
                        "bold",
                        am.ScalarType.Boolean,
                        True,
                        am.ExpandMark.After,
                    )
                elif pick < 0.92:
                    obj = tx.put_object(meta, rng.choice("uvw"), am.ObjType.Map)
                    tx.put(obj, "n", am.ScalarType.F64, rng.random())
                elif pick < 0.96:
                    tx.increment(am.ROOT, "hits", rng.randrange(-3, 4))
                else:
                    tx.delete(am.ROOT, rng.choice("abc"))
        changes = fork.get_changes(heads)
        return bytes(changes[0].raw_bytes) if changes else self.edit()

    def orphan(self) -> tuple[bytes, bytes]:
        """Two chained changes; send only the second (its dependency never comes)."""
        heads = self.doc.get_heads()
        fork = self.doc.fork()
        for i in range(2):
            with fork.transaction() as tx:
                tx.put(am.ROOT, "orphan", am.ScalarType.Int, i)
        first, second = fork.get_changes(heads)
        return bytes(first.raw_bytes), bytes(second.raw_bytes)

    def apply(self, change: bytes) -> None:
        self.doc.receive_sync_message(am.SyncState(), am.Message.decode(sync_message([change])))


def _counter_change(doc: am.Document) -> bytes:
    """root["hits"] = Counter(5), as a JS peer writes it (Python cannot make counters)."""
    from autosync_jupyter.crdt.columns import encode_rle, sleb

    actor = os.urandom(16)
    start = max(c.max_op for c in doc.get_changes([])) + 1
    columns = [
        (0x15, encode_rle([b"hits"], "s")),
        (0x34, bytes([1])),
        (0x42, encode_rle([1], "u")),
        (0x56, encode_rle([(1 << 4) | 8], "u")),
        (0x57, sleb(5)),
        (0x70, encode_rle([0], "u")),
    ]
    deps = sorted(doc.get_heads())
    return chunk(1, body(deps=deps, actor=actor, start_op=start, columns=columns))


def seed_target() -> am.Document:
    """Maps, a list, text with a mark, nested objects, a counter, three authors."""
    docs = [am.Document() for _ in range(3)]
    with docs[0].transaction() as tx:
        tx.put(am.ROOT, "title", am.ScalarType.Str, "target")
        items = tx.put_object(am.ROOT, "items", am.ObjType.List)
        text = tx.put_object(am.ROOT, "text", am.ObjType.Text)
        tx.put_object(am.ROOT, "meta", am.ObjType.Map)
        for i, char in enumerate("hello world"):
            tx.insert(text, i, am.ScalarType.Str, char)
        for i in range(5):
            tx.insert(items, i, am.ScalarType.Int, i)
        tx.mark(text, 0, 5, "bold", am.ScalarType.Boolean, True, am.ExpandMark.After)
    for other in docs[1:]:
        other.merge(docs[0])
        with other.transaction() as tx:
            tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
            tx.insert(tx.get(am.ROOT, "items")[1], 0, am.ScalarType.Str, "x")
        docs[0].merge(other)
    target = docs[0]
    counter = sync_message([_counter_change(target)])
    target.receive_sync_message(am.SyncState(), am.Message.decode(counter))
    return target


class Attacker:
    """Raw connections to the server; reconnects whenever the server closes one."""

    def __init__(self, url: str, report: Report) -> None:
        self.url = url
        self.report = report
        self.ws: ClientConnection | None = None
        self.server_id = ""
        self.count = 0
        self.last_reason = ""
        self.probe_id = generate_document_id()

    async def _open(self) -> ClientConnection:
        if self.ws is None or self.ws.close_code is not None:
            self.count += 1
            self.ws = await connect(self.url, max_size=None, compression=None, open_timeout=10)
            await self.ws.send(encode(Join(PeerId(f"fuzz-{self.count}"), peer_metadata=None)))
            peer = decode(await asyncio.wait_for(self.ws.recv(), 10))
            self.server_id = peer.sender_id or ""
            # The server answers this id with doc-unavailable, in order: a reply
            # means every message sent before it was handled.
            self.probe_id = generate_document_id()
        return self.ws

    @property
    def peer(self) -> PeerId:
        return PeerId(f"fuzz-{self.count}")

    async def send(self, build: Callable[[Attacker], bytes]) -> str:
        """Send one frame; report "accepted" or the close code and error."""
        ws = await self._open()
        reason = ""
        probe = Request(self.peer, PeerId(self.server_id), self.probe_id, _EMPTY_SYNC)
        try:
            await ws.send(build(self))
            await ws.send(encode(probe))
            while True:
                frame = await asyncio.wait_for(ws.recv(), 30)
                msg = decode(frame) if isinstance(frame, bytes) else None
                if isinstance(msg, DocUnavailable) and msg.document_id == self.probe_id:
                    return "accepted"
                if isinstance(msg, Error):
                    reason = msg.message
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        await ws.close()
        self.last_reason = reason
        key = re.sub(r"[0-9a-f]{12,}|\d+", "N", reason)[:90]
        self.report.reasons[key] = self.report.reasons.get(key, 0) + 1
        return f"closed {ws.close_code}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def frame_case(target_doc: str, rng: random.Random, attacker: Attacker) -> bytes:
    """A valid protocol message of some kind, its CBOR mutated."""
    server = PeerId(attacker.server_id)
    doc = am.Document().generate_sync_message(am.SyncState()).encode()
    message = rng.choice(
        [
            Join(attacker.peer, peer_metadata=PeerMetadata(storage_id="s", is_ephemeral=False)),
            Request(attacker.peer, server, target_doc, doc),
            Sync(attacker.peer, server, target_doc, doc),
            Ephemeral(attacker.peer, server, target_doc, "session", rng.randrange(99), b"\xa0"),
            UnknownMessage("frob", attacker.peer, {"x": [1, 2, {"y": b"z"}]}),
        ]
    )
    return mutate(encode(message), rng, start=0)


async def run(
    cases: int,
    seed: int = 0,
    *,
    data_dir: Path | None = None,
    log_every: int = 0,
) -> Report:
    """Fuzz a fresh ``autosync serve`` with ``cases`` hostile frames; return the report."""
    report = Report(cases=cases, seed=seed)
    rng = random.Random(seed)
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data"
        started = time.monotonic()

        def watch(line: str) -> None:
            # Every line, as it comes: a long run's log is far longer than the tail kept.
            if _TRACEBACK.search(line):
                report.escaped.append(line)
            elif _CAUGHT_PANIC.search(line):
                report.rollbacks += 1
                why = re.sub(r".*document \S+: (.*); reloading.*", r"\1", line)
                why = re.sub(r"peer \S+", "peer P", re.sub(r"[0-9a-f]{12,}", "H", why))[:80]
                report.rollback_reasons[why] = report.rollback_reasons.get(why, 0) + 1

        async with py_sync_server(data_dir, require_clean_exit=False, on_line=watch) as server:
            await _fuzz(server, cases, rng, report, log_every)
            report.server_died = server.process.returncode is not None
        if not report.server_died:
            async with py_sync_server(data_dir) as again:
                report.after_restart_ok = await _check_documents(again.url, report, final=False)
        report.seconds = round(time.monotonic() - started, 1)
    return report


async def _fuzz(
    server: ServerProcess, cases: int, rng: random.Random, report: Report, log_every: int
) -> None:
    process = psutil.Process(server.process.pid)
    report.rss_start_mib = round(process.memory_info().rss / 2**20, 1)
    peak = report.rss_start_mib
    from autosync_jupyter import connect as connect_live

    async with connect_live(server.url) as conn:
        canary = await conn.create(CANARY)
        target_handle = await conn.create({})
        with target_handle.doc.change() as root:
            root["seeded"] = True
        report.__dict__["canary_id"] = canary.document_id
        report.__dict__["target_id"] = target_handle.document_id
    target_id = report.__dict__["target_id"]
    seeded = seed_target()
    fetched = await fetch(server.url, target_id)
    local = fetched.core.fork()
    local.merge(seeded)
    target = Target(local, rng)
    attacker = Attacker(server.url, report)
    # The seeded history reaches the server as one valid message.
    first = target.doc.get_changes(fetched.core.get_heads())
    await attacker.send(
        lambda a: encode(
            Sync(
                a.peer,
                PeerId(a.server_id),
                target_id,
                sync_message(
                    [b"".join(bytes(c.bytes) for c in first)], heads=target.doc.get_heads()
                ),
            )
        )
    )
    weights = list(KINDS.values())
    kinds = list(KINDS)
    try:
        for case in range(cases):
            if case % 200 == 0:
                valid = target.edit()
                outcome = await attacker.send(
                    lambda a, c=valid: encode(
                        Sync(a.peer, PeerId(a.server_id), target_id, sync_message([c], heads=[]))
                    )
                )
                if outcome == "accepted":
                    target.apply(valid)
                    report.valid_edits += 1
                else:
                    reason = attacker.last_reason
                    report.escaped.append(
                        f"a valid edit was refused: {outcome} ({reason}): {valid.hex()}"
                    )
            kind = rng.choices(kinds, weights)[0]
            report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
            build = _case(kind, target, target_id, rng)
            outcome = await attacker.send(build)
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            if case % 100 == 0:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, process.memory_info().rss / 2**20)
                if server.process.returncode is not None:
                    report.server_died = True
                    return
            if log_every and case and case % log_every == 0:
                mib = process.memory_info().rss / 2**20
                print(
                    f"{case} cases, RSS {mib:.0f} MiB, target {len(target.doc.get_changes([]))} "
                    f"changes here, {dict(report.outcomes)}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        await attacker.close()
    report.rss_peak_mib = round(peak, 1)
    report.rss_end_mib = round(process.memory_info().rss / 2**20, 1)
    report.canary_ok = await _check_documents(server.url, report, final=True)


def _case(
    kind: str, target: Target, target_id: str, rng: random.Random
) -> Callable[[Attacker], bytes]:
    def wrap(data: bytes) -> Callable[[Attacker], bytes]:
        return lambda a: encode(Sync(a.peer, PeerId(a.server_id), target_id, data))

    if kind == "change":
        change = reseal(mutate(target.edit(), rng))
        return wrap(sync_message([change], heads=[rng.randbytes(32)]))
    if kind == "compressed":
        # Mutated, then deflated with a checksum over what it inflates to, so
        # it reaches the checks behind the inflating.
        change = compressed(reseal(mutate(target.edit(), rng)))
        return wrap(sync_message([change], heads=[rng.randbytes(32)]))
    if kind == "orphan":
        _, second = target.orphan()
        return wrap(sync_message([reseal(mutate(second, rng))], heads=[rng.randbytes(32)]))
    if kind == "sync-message":
        message = sync_message([target.edit()], heads=target.doc.get_heads())
        return wrap(mutate(message, rng, start=0))
    return lambda a: frame_case(target_id, rng, a)


async def _check_documents(url: str, report: Report, *, final: bool) -> bool:
    canary_id = report.__dict__["canary_id"]
    target_id = report.__dict__["target_id"]
    try:
        canary = await fetch(url, canary_id, timeout=20)
        target = await fetch(url, target_id, timeout=20)
        reloaded = am.Document.load(target.core.save())
        report.target_loads = reloaded.get_heads() == target.core.get_heads()
    except Exception as exc:
        report.escaped.append(f"checking the documents failed: {exc!r}")
        return False
    return bool(canary.to_py() == CANARY) and report.target_loads


def print_report(report: Report) -> None:
    print(f"## Fuzz run: {report.cases} cases, seed {report.seed}, {report.seconds} s")
    print()
    print("| | |\n|---|---|")
    print(f"| cases by kind | {report.by_kind} |")
    print(f"| outcomes | {report.outcomes} |")
    print(f"| valid edits accepted in between | {report.valid_edits} |")
    print(f"| documents reloaded from storage | {report.rollbacks}: {report.rollback_reasons} |")
    print(f"| server died | {report.server_died} |")
    print(f"| tracebacks / escaped failures | {len(report.escaped)} |")
    print(
        f"| RSS start / peak / end (MiB) | {report.rss_start_mib} / {report.rss_peak_mib} / "
        f"{report.rss_end_mib} |"
    )
    intact = f"{report.canary_ok}, {report.target_loads}"
    print(f"| canary readable, target loads after a save | {intact} |")
    print(f"| both fine after a restart | {report.after_restart_ok} |")
    print()
    print("Most frequent refusals:")
    for reason, count in collections.Counter(report.reasons).most_common(12):
        print(f"  {count:7d}  {reason}")
    for line in report.escaped[:20]:
        print("ESCAPED:", line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=10_000, help="hostile frames to send")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.cases, args.seed, log_every=max(args.cases // 20, 1000)))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
