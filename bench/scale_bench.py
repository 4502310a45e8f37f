#!/usr/bin/env python3
"""Many documents on disk: start-up time and memory, ours against the JS sync server.

Writes ``--docs`` small documents in the NodeFS layout (one document's
saved bytes under many ids, so both servers read them), then for each
server, on its own copy of the directory: the time from process start to
its "listening" line, its RSS when idle, the time and RSS after one client
fetch of each of ``--touch`` documents (``--concurrency`` at once), its RSS
after ``--idle-wait`` seconds without traffic (ours runs with
``--idle-timeout``, so idle documents leave memory), and the RSS added by
``--connections`` joined connections that do nothing. Prints a markdown
table with ours/JS ratios.

    python bench/scale_bench.py                                   # 100k / 20k / 5k
    python bench/scale_bench.py --docs 20000 --touch 4000 --connections 1000
    python bench/scale_bench.py --only py --json bench/results/scale.json

Traffic stays on 127.0.0.1. Every phase is bounded: the touch phase stops
after ``--touch-timeout`` seconds (the JS server loads documents slowly) and
reports how far it got. This is a script, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))
sys.path.insert(0, str(REPO_ROOT))

from jspeer import JS_DIR  # noqa: E402
from servers import ServerError, ServerProcess, js_sync_server, py_sync_server  # noqa: E402

from autosync_jupyter.core.protocol import Join, encode  # noqa: E402
from autosync_jupyter.crdt.values import new_document  # noqa: E402
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id  # noqa: E402
from autosync_jupyter.runtime.client import fetch  # noqa: E402
from autosync_jupyter.storage.disk import heads_hash  # noqa: E402

SERVERS = ("py", "js")
LABELS = {"py": "autosync (ours)", "js": "JS sync-server"}
STORAGE_ID = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"


@dataclass
class Result:
    """What one server measured; None where a phase did not run or finish."""

    server: str
    listen_s: float | None = None
    rss_idle_mb: float | None = None
    touched: int = 0
    touch_s: float | None = None
    touch_finished: bool = False
    touch_errors: int = 0
    rss_touched_mb: float | None = None
    rss_after_idle_mb: float | None = None
    connections: int = 0
    rss_connections_delta_mb: float | None = None
    notes: list[str] = field(default_factory=list)


def populate(root: Path, ids: list[DocumentId], blob: bytes, name: str) -> None:
    """Write ``blob`` as the snapshot of every id, in the NodeFS layout."""
    (root / "st").mkdir(parents=True)
    (root / "st" / "orage-adapter-id").write_text(STORAGE_ID)
    for doc_id in ids:
        snapshot = root / doc_id[:2] / doc_id[2:] / "snapshot"
        snapshot.mkdir(parents=True)
        (snapshot / name).write_bytes(blob)


def rss_mb(pid: int) -> float:
    """Resident set of a process and its children, in MB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 1e6


async def touch(url: str, ids: list[DocumentId], concurrency: int, cap: float) -> tuple[int, int]:
    """Fetch each id once; stop at ``cap`` seconds. Returns (fetched, errors)."""
    queue = iter(ids)
    done = errors = 0
    deadline = time.monotonic() + cap

    async def worker() -> None:
        nonlocal done, errors
        for doc_id in queue:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await fetch(url, doc_id, timeout=min(30.0, left))
                done += 1
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


@contextlib.asynccontextmanager
async def joined(url: str, count: int, concurrency: int = 50) -> AsyncIterator[int]:
    """Hold ``count`` connections that joined and then say nothing."""
    conns: list[ClientConnection] = []
    todo = iter(range(count))

    async def opener() -> None:
        for i in todo:
            try:
                ws = await connect(url, max_size=None, ping_interval=None)
                await ws.send(encode(Join(PeerId(f"idle-{i}-{os.getpid()}"))))
                await asyncio.wait_for(ws.recv(), 30)
                conns.append(ws)
            except Exception:
                return

    try:
        await asyncio.gather(*(opener() for _ in range(concurrency)))
        yield len(conns)
    finally:
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def measure(kind: str, root: Path, ids: list[DocumentId], args: argparse.Namespace) -> Result:
    result = Result(kind)
    extra = [
        "--idle-timeout",
        str(args.idle_timeout),
        "--max-connections",
        str(args.connections + 100),
    ]
    started = time.monotonic()
    server_cm = (
        js_sync_server(root, startup_timeout=120, stop_timeout=30, require_clean_exit=False)
        if kind == "js"
        else py_sync_server(
            root, *extra, startup_timeout=120, stop_timeout=30, require_clean_exit=False
        )
    )
    try:
        await run_phases(server_cm, started, result, ids, args)
    except ServerError as exc:
        if result.connections == 0 and result.rss_after_idle_mb is None:
            raise
        # Measured already; only stopping it went wrong (the JS server may
        # take longer than the stop timeout to save what it loaded).
        result.notes.append(str(exc).splitlines()[0])
    return result


async def run_phases(
    server_cm: contextlib.AbstractAsyncContextManager[ServerProcess],
    started: float,
    result: Result,
    ids: list[DocumentId],
    args: argparse.Namespace,
) -> None:
    server: ServerProcess
    async with server_cm as server:
        result.listen_s = time.monotonic() - started
        await asyncio.sleep(2)
        result.rss_idle_mb = rss_mb(server.pid)
        chosen = ids[: args.touch]
        t0 = time.monotonic()
        done, errors = await touch(server.url, chosen, args.concurrency, args.touch_timeout)
        result.touch_s = time.monotonic() - t0
        result.touched, result.touch_errors = done, errors
        result.touch_finished = done == len(chosen)
        if not result.touch_finished:
            result.notes.append(
                f"touch: {done} of {len(chosen)} in {result.touch_s:.0f} s "
                f"(cap {args.touch_timeout:.0f} s, {errors} errors)"
            )
        result.rss_touched_mb = rss_mb(server.pid)
        await asyncio.sleep(args.idle_wait)
        result.rss_after_idle_mb = rss_mb(server.pid)
        before = rss_mb(server.pid)
        async with joined(server.url, args.connections) as opened:
            await asyncio.sleep(2)
            result.connections = opened
            result.rss_connections_delta_mb = rss_mb(server.pid) - before


def fmt(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{value:.1f}{unit}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}x"


def table(results: dict[str, Result], args: argparse.Namespace) -> str:
    rows = [
        ("start → listening (s)", "listen_s"),
        ("RSS idle (MB)", "rss_idle_mb"),
        (f"touch {args.touch} docs (s)", "touch_s"),
        ("RSS after touch (MB)", "rss_touched_mb"),
        (f"RSS after {args.idle_wait:.0f} s idle (MB)", "rss_after_idle_mb"),
        (f"RSS delta, {args.connections} idle connections (MB)", "rss_connections_delta_mb"),
    ]
    kinds = [k for k in SERVERS if k in results]
    head = "| metric | " + " | ".join(LABELS[k] for k in kinds)
    head += " | ours/JS |" if len(kinds) == 2 else " |"
    lines = [head, "|---" * (len(kinds) + 1 + (len(kinds) == 2)) + "|"]
    for label, attr in rows:
        values = [getattr(results[k], attr) for k in kinds]
        cells = []
        for k, v in zip(kinds, values, strict=True):
            cell = fmt(v)
            if attr == "touch_s" and not results[k].touch_finished:
                cell = f"did not finish in {fmt(v)} s ({results[k].touched} done)"
            cells.append(cell)
        line = f"| {label} | " + " | ".join(cells)
        if len(kinds) == 2:
            both = [results["py"].touch_finished, results["js"].touch_finished]
            comparable = attr != "touch_s" or all(both)
            line += f" | {ratio(values[0], values[1]) if comparable else '—'} |"
        else:
            line += " |"
        lines.append(line)
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--touch", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--touch-timeout", type=float, default=300.0, metavar="S")
    parser.add_argument("--idle-timeout", type=float, default=2.0, metavar="S")
    parser.add_argument("--idle-wait", type=float, default=5.0, metavar="S")
    parser.add_argument("--only", choices=SERVERS, action="append")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    kinds = args.only or list(SERVERS)
    if "js" in kinds and not (JS_DIR / "node_modules").is_dir():
        parser.error("tests/interop/js/node_modules is missing: npm ci --prefix tests/interop/js")
    document = new_document({"title": "a small document", "items": [1, 2, 3]})
    blob, name = document.save(), heads_hash(document.get_heads())
    ids = [generate_document_id() for _ in range(args.docs)]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="autosync-scale-") as tmp:
        for kind in kinds:
            root = Path(tmp) / kind
            t0 = time.monotonic()
            populate(root, ids, blob, name)
            took = time.monotonic() - t0
            print(f"{kind}: wrote {args.docs} documents in {took:.1f} s", flush=True)
            results[kind] = await measure(kind, root, ids, args)
            print(json.dumps(asdict(results[kind])), flush=True)
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(
        f"{args.docs} documents on disk, {args.touch} touched ({args.concurrency} at once), "
        f"ours with --idle-timeout {args.idle_timeout}"
    )
    print(table(results, args))
    for kind, result in results.items():
        for note in result.notes:
            print(f"- {LABELS[kind]}: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": vars(args) | {"json": str(args.json)}, "results": results}
        args.json.write_text(
            json.dumps({**payload, "results": {k: asdict(r) for k, r in results.items()}}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
