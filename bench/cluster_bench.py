#!/usr/bin/env python3
"""Propagation latency of a change through one shared-store server, then through two.

Starts a throw-away PostgreSQL cluster (``tests/postgres_server.py``: the
machine's own binaries, loopback, trust authentication, removed at the end)
and, for each setup, a fresh database and ``autosync serve --store
postgresql://… --store-shared`` subprocess(es) on free loopback ports:

* ``one-server``: one server; the writer and the reader are both its clients;
* ``two-server``: two servers on the same database; the writer is a client of
  the first, the reader of the second (the change goes writer → server A →
  PostgreSQL → NOTIFY → server B → reader).

The writer (our Python client, :func:`autosync_jupyter.connect`) creates
``--docs`` documents, the reader opens them (on the second server it asks
again until that server has heard of them), then the writer sets a plain
integer field ``n`` (not an Automerge counter) with a wall-clock timestamp
``t`` on the documents in turn, ``--changes`` times. One change at a time:
the next is made only once the reader saw the previous one (its
``on_change`` callback, fired as the sync message is applied), so the
figure is latency, not queueing. Each delay is measured on one monotonic
clock in this process (writer and reader live here). A few warm-up changes
per setup are not counted.

Prints a markdown table of p50/p99 (ms) per setup and the two-server /
one-server ratio.

    python bench/cluster_bench.py                       # 300 changes, 1 document
    python bench/cluster_bench.py --changes 100 --docs 4 --json cluster.json

Note: the servers batch a busy document's sync messages (``--sync-interval``,
default 0.1 s, the first change after a quiet spell goes out at once);
``--sync-interval`` here is passed to every server when given.

Needs PostgreSQL and psycopg (``scripts/install-postgres``,
``pip install -e '.[test]'``). Only loopback traffic, bounded by
``--changes`` and ``--timeout``. A script, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from postgres_server import missing_prerequisite, running_postgres  # noqa: E402

from autosync_jupyter import connect  # noqa: E402
from autosync_jupyter.errors import DocumentUnavailable, SyncTimeout  # noqa: E402

WARMUP = 5  # changes per setup not counted


# -- servers -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def shared_server(
    store_url: str, log_dir: Path, name: str, extra: Sequence[str]
) -> AsyncIterator[str]:
    """``autosync serve --port 0 --store URL --store-shared`` as a subprocess; yields its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "autosync_jupyter", "serve", "--port", "0"]
    argv += ["--store", store_url, "--store-shared", *extra]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO_ROOT, env=env
        )
    drain: asyncio.Task[None] | None = None
    try:
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), 60)
        except asyncio.TimeoutError:
            first = b""
        words = first.decode(errors="replace").split()
        if not words or not words[-1].startswith("ws"):
            raise RuntimeError(
                f"server {name} did not start ({first!r}):\n{log_path.read_text(errors='replace')}"
            )

        async def discard(stream: asyncio.StreamReader) -> None:
            while await stream.read(65536):
                pass

        drain = asyncio.create_task(discard(proc.stdout))  # a full pipe would block it
        yield words[-1]
    finally:
        if proc.returncode is None:
            proc.send_signal(2)  # SIGINT: a clean shutdown
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


# -- measurement -------------------------------------------------------------


async def open_when_known(conn: Any, doc_id: str, deadline: float) -> Any:
    """Open ``doc_id``, asking again while the server has not heard of it yet (bounded)."""
    while True:
        try:
            return await conn.open(doc_id, timeout=max(1.0, deadline - time.monotonic()))
        except DocumentUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def measure(
    writer_url: str, reader_url: str, changes: int, docs: int, timeout: float
) -> list[float]:
    """Latencies (ms) of ``changes`` changes, writer on ``writer_url``, reader on ``reader_url``."""
    async with connect(writer_url) as writer, connect(reader_url) as reader:
        written = [await writer.create({"n": 0, "t": 0.0}) for _ in range(docs)]
        deadline = time.monotonic() + timeout
        read = [await open_when_known(reader, h.document_id, deadline) for h in written]
        waiting: dict[int, tuple[int, asyncio.Future[float]]] = {}

        def on_change_of(index: int) -> Any:
            handle = read[index]

            def on_change(event: Any) -> None:
                pending = waiting.get(index)
                if pending is None or pending[1].done():
                    return
                if handle.doc.get("n") == pending[0]:
                    pending[1].set_result(time.perf_counter())

            return on_change

        for index, handle in enumerate(read):
            handle.on_change(on_change_of(index))
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        for i in range(WARMUP + changes):
            index = i % docs
            value = i // docs + 1
            arrived: asyncio.Future[float] = loop.create_future()
            waiting[index] = (value, arrived)
            started = time.perf_counter()
            with written[index].doc.change() as d:
                d["n"] = value
                d["t"] = time.time()
            try:
                seen = await asyncio.wait_for(arrived, timeout)
            except asyncio.TimeoutError:
                raise SyncTimeout(f"change {i} did not arrive within {timeout} s") from None
            if i >= WARMUP:
                latencies.append((seen - started) * 1000)
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "max": max(values),
        "count": len(values),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = [] if args.sync_interval is None else ["--sync-interval", str(args.sync_interval)]
    results: dict[str, Any] = {}
    with running_postgres() as pg, tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        logs = Path(tmp)
        database = pg.new_database()
        async with shared_server(database, logs, "one", extra) as url:
            latencies = await measure(url, url, args.changes, args.docs, args.timeout)
        results["one-server"] = {"latencies_ms": latencies, **summary(latencies)}
        print(f"one-server: done ({len(latencies)} changes)", file=sys.stderr)
        database = pg.new_database()
        async with (
            shared_server(database, logs, "a", extra) as url_a,
            shared_server(database, logs, "b", extra) as url_b,
        ):
            latencies = await measure(url_a, url_b, args.changes, args.docs, args.timeout)
        results["two-server"] = {"latencies_ms": latencies, **summary(latencies)}
        print(f"two-server: done ({len(latencies)} changes)", file=sys.stderr)
    return results


# -- report ------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    one, two = results["one-server"], results["two-server"]
    rows = [
        "| client | setup | p50 (ms) | p99 (ms) | mean (ms) | max (ms) | changes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("one-server", one), ("two-server", two)):
        rows.append(
            f"| python | {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['mean']:.2f} "
            f"| {r['max']:.2f} | {r['count']} |"
        )
    rows.append(
        f"| python | two/one | {two['p50'] / one['p50']:.2f}x | {two['p99'] / one['p99']:.2f}x "
        f"| {two['mean'] / one['mean']:.2f}x | {two['max'] / one['max']:.2f}x | |"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=300, help="timed changes per setup")
    parser.add_argument("--docs", type=int, default=1, help="documents the changes go round")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--sync-interval", type=float, default=None, help="passed to every server")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds one change may take to arrive"
    )
    args = parser.parse_args(argv)
    if args.changes < 1 or args.docs < 1:
        parser.error("--changes and --docs must be at least 1")
    missing = missing_prerequisite()
    if missing is not None:
        print(f"cannot run PostgreSQL: {missing}", file=sys.stderr)
        return 2
    results = asyncio.run(run(args))
    print(table(results))
    if args.json:
        report = {
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "changes": args.changes,
            "docs": args.docs,
            "sync_interval": args.sync_interval,
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
