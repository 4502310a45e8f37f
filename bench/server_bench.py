#!/usr/bin/env python3
"""Benchmark our sync server against the official JavaScript one, same load, same machine.

For each load and each server, one at a time: start the server on a free
loopback port with a fresh temporary data directory (the JS server is
``tests/interop/js/sync-server.mjs`` with NodeFS storage; ours is
``python -m autosync_jupyter serve``), run ``bench/loadgen.mjs`` (official JS
clients) against it, sample the server process with psutil, stop it, and
finally print a markdown table with ours/JS ratios.

    python bench/server_bench.py                     # both servers, loads 1, 10, 100
    python bench/server_bench.py --only js --loads 10
    python bench/server_bench.py --json bench/results/run.json
    python bench/server_bench.py --shape 10=10x20x20 --shape 100=100x10x2/10

Loads are named by client count. A shape is CxDxN[/W]: C clients, D documents
(created by client 0, found by all), N changes per writer per document, W
writers (default: all clients). Defaults: 1 = 1x20x50, 10 = 10x20x50,
100 = 100x10x2/10. The 100-client load has 10 writers because 100 clients all
writing every document makes every sync message carry ~100 concurrent heads
and saturates the JS client library (one Node process, 2 cores) long before
the server: the run then measures the load generator (and the JS server's
keep-alive drops its stalled sockets).

Metrics per run: throughput = changes / time until every change reached every
client and the server acknowledged every client's heads; p50/p99 = change
propagation latency between clients (for 1 client, where nobody else sees the
change: the time until the server acknowledges it, marked "ack"); CPU s = the
server's user+system CPU time over the run (including child processes); peak
RSS = the largest resident set (with children) polled every 50 ms; errors =
load generator errors (including ones the JS client library only logs) plus
non-convergence. Traffic stays on 127.0.0.1 and every run is bounded by
``--timeout``. This is a script, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

from jspeer import JS_DIR, node_executable  # noqa: E402
from servers import ServerProcess, js_sync_server, py_sync_server  # noqa: E402

LOADGEN = REPO_ROOT / "bench" / "loadgen.mjs"
SERVERS = ("js", "py")
SERVER_LABELS = {"js": "JS sync-server", "py": "autosync (ours)"}


@dataclass(frozen=True)
class Shape:
    """One load: C clients, D documents, N changes per writer per document, W writers."""

    clients: int
    docs: int
    changes: int
    writers: int | None = None
    interval_ms: int = 0

    @property
    def total_changes(self) -> int:
        """Changes made in the run."""
        return (self.writers or self.clients) * self.docs * self.changes

    def label(self) -> str:
        """``CxDxN`` or ``CxDxN/W``."""
        base = f"{self.clients}x{self.docs}x{self.changes}"
        return base if self.writers in (None, self.clients) else f"{base}/{self.writers}"


DEFAULT_SHAPES: dict[int, Shape] = {
    1: Shape(1, 20, 50),
    10: Shape(10, 20, 50),
    100: Shape(100, 10, 2, writers=10),
}

_SHAPE_RE = re.compile(r"(\d+)=(\d+)x(\d+)x(\d+)(?:/(\d+))?")


def parse_shape(text: str) -> tuple[int, Shape]:
    """Parse ``LOAD=CxDxN[/W]``."""
    match = _SHAPE_RE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"shape must look like 10=10x20x50 or 100=100x10x2/10: {text}"
        )
    load, c, d, n, w = match.groups()
    return int(load), Shape(int(c), int(d), int(n), int(w) if w else None)


# -- process sampling --------------------------------------------------------


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def cpu_seconds(proc: psutil.Process) -> float:
    """User+system CPU of the process, its live descendants and its reaped children."""
    total = 0.0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
            if p is proc:
                total += t.children_user + t.children_system
    return total


def rss_bytes(proc: psutil.Process) -> int:
    """Resident set size of the process and its descendants."""
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class PeakRSS(threading.Thread):
    """Poll a process tree's RSS every ``interval`` seconds, keeping the peak."""

    def __init__(self, proc: psutil.Process, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="peak-rss")
        self._proc = proc
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes(self._proc))
            self._stop_event.wait(self._interval)

    def stop(self) -> int:
        """Stop polling and return the peak in bytes."""
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_bytes(self._proc))
        return self.peak


# -- one run -----------------------------------------------------------------


async def run_loadgen(url: str, shape: Shape, timeout_s: float) -> tuple[dict[str, Any], str]:
    """Run loadgen.mjs against ``url``; return its JSON result and its stderr tail."""
    argv = [node_executable(), str(LOADGEN), "--url", url]
    argv += ["--clients", str(shape.clients), "--docs", str(shape.docs)]
    argv += ["--changes", str(shape.changes), "--interval-ms", str(shape.interval_ms)]
    argv += ["--timeout-s", str(timeout_s)]
    if shape.writers is not None:
        argv += ["--writers", str(shape.writers)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO_ROOT
    )
    try:
        # loadgen bounds itself by --timeout-s; the margin covers setup and exit.
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s + 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"loadgen did not finish within {timeout_s + 60} s") from None
    tail = "\n".join(stderr.decode("utf-8", "replace").splitlines()[-20:])
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen printed no result (status {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result, tail


async def run_one(
    kind: str, shape: Shape, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Start one server, run one load against it, stop it; return the measurements."""
    data_dir = workdir / f"{kind}-{shape.label().replace('/', 'w')}-data"
    server_cm = js_sync_server(data_dir) if kind == "js" else py_sync_server(data_dir, *args.py_arg)
    record: dict[str, Any] = {"server": kind, "shape": asdict(shape), "label": shape.label()}
    server: ServerProcess | None = None
    try:
        async with server_cm as server:
            proc = psutil.Process(server.pid)
            await asyncio.sleep(0.3)  # let start-up work finish before measuring
            record["rss_idle_mib"] = rss_bytes(proc) / 2**20
            sampler = PeakRSS(proc)
            cpu_before = cpu_seconds(proc)
            started = time.monotonic()
            sampler.start()
            try:
                result, tail = await run_loadgen(server.url, shape, args.timeout)
            finally:
                record["cpu_s"] = cpu_seconds(proc) - cpu_before
                record["peak_rss_mib"] = sampler.stop() / 2**20
                record["run_s"] = time.monotonic() - started
            record["loadgen"] = result
            record["loadgen_stderr_tail"] = tail
    except Exception as exc:  # a failed run is reported, the others still run
        record["failure"] = f"{type(exc).__name__}: {exc}"
        if server is not None:
            record["server_log_tail"] = server.logs()[-4000:]
    return record


# -- report ------------------------------------------------------------------


def _latency(record: dict[str, Any]) -> tuple[float | None, float | None, str]:
    lg = record.get("loadgen") or {}
    lat = lg.get("latency_ms") or {}
    if lat.get("count"):
        return lat.get("p50"), lat.get("p99"), ""
    ack = lg.get("ack_latency_ms") or {}
    return ack.get("p50"), ack.get("p99"), " ack"


def _errors(record: dict[str, Any]) -> int | str:
    if "failure" in record:
        return "FAILED"
    lg = record["loadgen"]
    errors = int(lg.get("errors", 0))
    return errors if lg.get("converged") else f"{errors} (not converged)"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}"


def markdown(records: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table, with an ours/JS ratio row per load."""
    head = (
        "| load (CxDxN[/W]) | server | changes/s | p50 ms | p99 ms | CPU s | peak RSS MiB "
        "| errors | msgs/change | loadgen CPU s |\n"
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"
    )
    rows = [head]
    by_load: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        by_load.setdefault(rec["label"], {})[rec["server"]] = rec
    for label, recs in by_load.items():
        values: dict[str, dict[str, float | None]] = {}
        for kind in SERVERS:
            run = recs.get(kind)
            if run is None:
                continue
            lg = run.get("loadgen") or {}
            p50, p99, tag = _latency(run)
            values[kind] = {
                "tput": lg.get("throughput_changes_per_s"),
                "p50": p50,
                "p99": p99,
                "cpu": run.get("cpu_s"),
                "rss": run.get("peak_rss_mib"),
            }
            v = values[kind]
            rows.append(
                f"| {label} | {SERVER_LABELS[kind]} | {_fmt(v['tput'], 0)} "
                f"| {_fmt(p50)}{tag} | {_fmt(p99)}{tag} | {_fmt(v['cpu'], 2)} "
                f"| {_fmt(v['rss'])} | {_errors(run)} | {_fmt(lg.get('messages_per_change'))} "
                f"| {_fmt(lg.get('loadgen_cpu_s'), 1)} |"
            )
        if "js" in values and "py" in values:
            ours, theirs = values["py"], values["js"]
            cells = [_ratio(ours[k], theirs[k]) for k in ("tput", "p50", "p99", "cpu", "rss")]
            rows.append(f"| {label} | **ours/JS** | {' | '.join(cells)} | | | |")
    notes = [
        "",
        "changes/s: higher is better; latency, CPU and RSS: lower is better.",
        "`ack`: single client, latency until the server acknowledged the change.",
        "msgs/change: messages between the clients and the server per change made.",
        "loadgen CPU s near the run time means the JS client library, not the server, "
        "was the bottleneck.",
    ]
    return "\n".join(rows + notes)


# -- main --------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the JSON results record about the machine they were measured on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 if any run failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    parser.add_argument(
        "--loads", default="1,10,100", help="comma-separated loads (client counts): 1,10,100"
    )
    parser.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        default=[],
        metavar="L=CxDxN[/W]",
        help="override the shape of load L (repeatable)",
    )
    parser.add_argument(
        "--interval-ms", type=int, default=0, help="pause between a client's rounds"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="bound per run, seconds")
    parser.add_argument("--json", type=Path, help="also write all measurements to this file")
    parser.add_argument(
        "--py-arg",
        action="append",
        default=[],
        help="extra argument for our server, e.g. --py-arg=--ephemeral (repeatable)",
    )
    args = parser.parse_args(argv)

    if not (JS_DIR / "node_modules").is_dir():
        parser.error("tests/interop/js/node_modules is missing: npm ci --prefix tests/interop/js")
    shapes = dict(DEFAULT_SHAPES)
    shapes.update(dict(args.shape))
    try:
        loads = [int(x) for x in args.loads.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--loads must be comma-separated integers: {args.loads}")
    unknown = [load for load in loads if load not in shapes]
    if unknown:
        parser.error(f"no shape for load(s) {unknown}; add --shape {unknown[0]}=CxDxN")
    kinds = [args.only] if args.only else list(SERVERS)

    records = asyncio.run(_run_all(kinds, [shapes[load] for load in loads], args, print_progress))
    table = markdown(records)
    print()
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"machine": machine_info(), "runs": records}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any("failure" in r for r in records) else 0


def print_progress(message: str) -> None:
    """Progress lines go to stderr so stdout is just the table."""
    print(message, file=sys.stderr, flush=True)


async def _run_all(
    kinds: Sequence[str],
    shapes: Sequence[Shape],
    args: argparse.Namespace,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    records = []
    with tempfile.TemporaryDirectory(prefix="autosync-bench-") as tmp:
        for shape in shapes:
            if args.interval_ms:
                shape = Shape(**{**asdict(shape), "interval_ms": args.interval_ms})
            for kind in kinds:
                progress(f"{SERVER_LABELS[kind]}: {shape.label()} ({shape.total_changes} changes)")
                record = await run_one(kind, shape, Path(tmp), args)
                if "failure" in record:
                    progress(f"  FAILED: {record['failure']}")
                else:
                    lg = record["loadgen"]
                    progress(
                        f"  {lg['throughput_changes_per_s']} changes/s, wall {lg['wall_s']} s, "
                        f"server CPU {record['cpu_s']:.2f} s, peak RSS "
                        f"{record['peak_rss_mib']:.1f} MiB, errors {lg['errors']}, "
                        f"converged {lg['converged']}"
                    )
                records.append(record)
    return records


if __name__ == "__main__":
    sys.exit(main())
