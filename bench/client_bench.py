#!/usr/bin/env python3
"""Benchmark our client against the official JavaScript client, same server, same machine.

For each server (the official JS sync server, then ours, as subprocesses on
free loopback ports with fresh data directories) a JS peer creates a small
document and a large one (random bytes, so it stays over 5 MB), then:

* fetch latency, small and large document: ours is :func:`fetch` (a
  throwaway connection: connect, join, request, sync until complete, close);
  the JS client is a fresh ``Repo`` with a ``BrowserWebSocketClientAdapter``
  until ``repo.find(id)`` resolves (``bench/js_client_bench.mjs``). Both run
  in a warm process, so neither counts interpreter or module start-up.
* live change round trip: two live connections on one document; A sets
  ``ping``, B answers with ``pong`` as soon as it sees it, A waits for it,
  then pauses ``--pause-ms`` (50 ms: a person typing) before the next one.
  Ours: two :class:`~autosync_jupyter.runtime.connection.Connection` objects; JS: two
  Repos.

The servers (``--servers``): ``js``, the JS sync server of the interop tests
(automerge-repo 2.5.6); ``js028``, the published sync server 0.2.8
(``bench/bench_servers.py``); ``py``, ours; ``--py-tree NAME=DIR`` adds ours
from another copy of the package (the code before a change, say).

It prints a markdown table with medians, p90 and ours/JS ratios (below 1 means
ours is faster), then the in-process small-document fetch latency against an
in-process :class:`~autosync_jupyter.SyncServer` (the project's aim: under
20 ms).

    python bench/client_bench.py                # both servers
    python bench/client_bench.py --only py --runs 50
    python bench/client_bench.py --json results.json
    python bench/client_bench.py --measure roundtrip --servers js,js028,py --py-tree before=DIR

Needs the interop install (``npm ci --prefix tests/interop/js``). This is a
script, never a timed test.
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
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

from jspeer import JSPeer, node_executable  # noqa: E402
from servers import ServerProcess, js_sync_server, py_sync_server  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_servers import parse_tree, published_sync_server, py_tree_server  # noqa: E402

from autosync_jupyter import SyncServer  # noqa: E402
from autosync_jupyter.runtime.client import fetch  # noqa: E402
from autosync_jupyter.runtime.connection import connect  # noqa: E402

JS_BENCH = REPO_ROOT / "bench" / "js_client_bench.mjs"
LARGE_BYTES = 5_500_000
SERVER_LABELS = {
    "js": "JS sync-server (repo 2.5.6)",
    "js028": "published sync-server 0.2.8",
    "py": "autosync server (ours)",
}


def summary(times_ms: list[float]) -> dict[str, float]:
    """Median, p90 and mean of a list of milliseconds."""
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median": statistics.median(ordered),
        "p90": p90,
        "mean": statistics.fmean(ordered),
        "n": len(ordered),
    }


async def js_client(
    url: str, mode: str, doc_id: str, runs: int, pause_ms: float = 0
) -> list[float]:
    """Run bench/js_client_bench.mjs and return its timings."""
    proc = await asyncio.create_subprocess_exec(
        node_executable(),
        str(JS_BENCH),
        "--url",
        url,
        "--mode",
        mode,
        "--doc",
        doc_id,
        "--runs",
        str(runs),
        "--pause-ms",
        str(pause_ms),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"js_client_bench failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    times: list[float] = json.loads(out)["times_ms"]
    return times


async def py_fetch(url: str, doc_id: str, runs: int) -> list[float]:
    """Time ``runs`` fetches of one document."""
    await fetch(url, doc_id, timeout=120)  # warm up (imports, caches)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fetch(url, doc_id, timeout=120)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def py_roundtrip(url: str, doc_id: str, runs: int, pause_ms: float = 0) -> list[float]:
    """Ping-pong between two live connections; time per round trip."""
    async with connect(url) as conn_a, connect(url) as conn_b:
        a = await conn_a.open(doc_id)
        b = await conn_b.open(doc_id)
        answered: asyncio.Event = asyncio.Event()
        expected: list[int] = [0]

        def on_b(event: Any) -> None:
            if event.origin != "remote":
                return
            ping, pong = b.doc.get("ping"), b.doc.get("pong")
            if ping is not None and ping != pong:
                with b.doc.change() as d:
                    d["pong"] = ping

        def on_a(event: Any) -> None:
            if event.origin == "remote" and a.doc.get("pong") == expected[0]:
                answered.set()

        b.on_change(on_b)
        a.on_change(on_a)
        times = []
        base = int(time.time() * 1000)
        for i in range(runs):
            expected[0] = base + i
            answered.clear()
            started = time.perf_counter()
            with a.doc.change() as d:
                d["ping"] = base + i
            await asyncio.wait_for(answered.wait(), 30)
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(pause_ms / 1000)
    return times


async def in_process_fetch(runs: int) -> dict[str, float]:
    """Small-document fetch latency with our server in the same process."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document(small_content())
        return summary(await py_fetch(server.url, doc_id, runs))


def small_content() -> dict[str, Any]:
    """A small document: a title, a short list, a nested map."""
    return {"title": "hello", "items": [1, 2, 3], "meta": {"owner": "bench", "done": False}}


def start_server(
    kind: str, data_dir: Path, trees: dict[str, Path]
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The server ``kind`` names (js, js028, py, or py:NAME of ``--py-tree``)."""
    if kind == "js":
        return js_sync_server(data_dir)
    if kind == "js028":
        return published_sync_server(data_dir)
    if kind.startswith("py:"):
        return py_tree_server(trees[kind[3:]], data_dir)
    return py_sync_server(data_dir)


async def bench_server(
    kind: str, args: argparse.Namespace, trees: dict[str, Path]
) -> dict[str, Any]:
    """Every measurement, ours and JS's, against one server."""
    runs, large_runs, pause = args.runs, args.large_runs, args.pause_ms
    with tempfile.TemporaryDirectory(prefix=f"client-bench-{kind}-") as tmp:
        server: ServerProcess
        async with start_server(kind, Path(tmp) / "data", trees) as server:
            async with JSPeer.start(server.url) as seeder:
                small = (await seeder.create(small_content()))["documentId"]
                big = {"blob": os.urandom(LARGE_BYTES), "items": list(range(2000))}
                large = (await seeder.create(big))["documentId"]
                ping = (await seeder.create({"ping": 0, "pong": 0}))["documentId"]
                for doc_id in (small, large, ping):
                    await seeder.wait_synced(doc_id, timeout=120)
            # The seeder is gone: each fetch is the document's only peer.
            print(f"[{kind}] documents ready on {server.url}", file=sys.stderr)
            results: dict[str, Any] = {}
            if args.measure == "roundtrip":
                results["change round trip"] = {
                    "py": summary(await py_roundtrip(server.url, ping, runs, pause)),
                    "js": summary(await js_client(server.url, "roundtrip", ping, runs, pause)),
                }
                return results
            results["fetch small"] = {
                "py": summary(await py_fetch(server.url, small, runs)),
                "js": summary(await js_client(server.url, "fetch", small, runs)),
            }
            results["fetch large (5.5 MB)"] = {
                "py": summary(await py_fetch(server.url, large, large_runs)),
                "js": summary(await js_client(server.url, "fetch", large, large_runs)),
            }
            # With another peer holding the document open, a server that
            # throttles a busy document's sync rounds may hold the reply back.
            async with JSPeer.start(server.url) as holder:
                await holder.find(small)
                results["fetch small, doc open elsewhere"] = {
                    "py": summary(await py_fetch(server.url, small, runs)),
                    "js": summary(await js_client(server.url, "fetch", small, runs)),
                }
            results["change round trip"] = {
                "py": summary(await py_roundtrip(server.url, ping, runs, pause)),
                "js": summary(await js_client(server.url, "roundtrip", ping, runs, pause)),
            }
            print(f"[{kind}] done", file=sys.stderr)
    return results


def table(all_results: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """A markdown table of the results with ours/JS ratios."""
    lines = [
        "| server | measurement | ours median (p90) ms | JS client median (p90) ms | ours/JS |",
        "|---|---|---|---|---|",
    ]
    for kind, results in all_results.items():
        for name, pair in results.items():
            py, js = pair["py"], pair["js"]
            ratio = py["median"] / js["median"] if js["median"] else float("nan")
            lines.append(
                f"| {labels[kind]} | {name} | {py['median']:.1f} ({py['p90']:.1f}) | "
                f"{js['median']:.1f} ({js['p90']:.1f}) | {ratio:.2f} |"
            )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=list(SERVER_LABELS), help="against one server only")
    parser.add_argument(
        "--servers", default="js,py", help="comma-separated: js, js028, py (default: js,py)"
    )
    parser.add_argument(
        "--py-tree",
        action="append",
        default=[],
        type=parse_tree,
        metavar="NAME=DIR",
        help="also against our server from another copy of the package (repeatable)",
    )
    parser.add_argument(
        "--measure", choices=["all", "roundtrip"], default="all", help="what to measure"
    )
    parser.add_argument(
        "--pause-ms", type=float, default=50.0, help="pause between two round trips (50)"
    )
    parser.add_argument("--runs", type=int, default=30, help="runs per small measurement")
    parser.add_argument("--large-runs", type=int, default=5, help="runs per large fetch")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    kinds = [args.only] if args.only else [k.strip() for k in args.servers.split(",") if k]
    if bad := [k for k in kinds if k not in SERVER_LABELS]:
        parser.error(f"unknown server(s) {bad}: choose from {', '.join(SERVER_LABELS)}")
    trees = dict(args.py_tree)
    labels = dict(SERVER_LABELS)
    for name, tree in trees.items():
        kinds.append(f"py:{name}")
        labels[f"py:{name}"] = f"autosync server, {name} ({tree})"
    all_results = {kind: await bench_server(kind, args, trees) for kind in kinds}
    local = await in_process_fetch(max(args.runs, 50))
    print()
    print(f"client benchmark — {platform.platform()}, Python {platform.python_version()}")
    print()
    print(table(all_results, labels))
    print()
    print(
        f"in-process small-document fetch (our client and server in one process): "
        f"median {local['median']:.2f} ms, p90 {local['p90']:.2f} ms (aim: < 20 ms)"
    )
    if args.json:
        args.json.write_text(json.dumps({"servers": all_results, "in_process": local}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
