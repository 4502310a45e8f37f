#!/usr/bin/env python3
"""Benchmark our sync server against the official JavaScript ones, same load, same machine.

For each load and each server, one at a time: start the server on a free
loopback port with a fresh temporary data directory, run ``bench/loadgen.mjs``
(official JS clients) against it, sample the server process with psutil, stop
it, and finally print a markdown table with ratios of ours to the better JS
server. The servers: ``js`` is ``tests/interop/js/sync-server.mjs``
(automerge-repo 2.5.6, NodeFS storage); ``js028`` is the published
``@automerge/automerge-repo-sync-server`` 0.2.8 on automerge-repo 1.2.1
(what sync.automerge.org runs; ``npm ci --prefix bench/published-sync-server``);
``py`` is ours, ``python -m autosync_jupyter serve``. ``--py-tree`` adds our
server run from another copy of the package, to compare before and after a
change in one run.

    python bench/server_bench.py                     # every server, every load
    python bench/server_bench.py --servers js,py --loads 10
    python bench/server_bench.py --loads loop,fan1,fan10 --py-tree before=/tmp/before
    python bench/server_bench.py --json bench/results/run.json
    python bench/server_bench.py --shape 10=10x20x20 --shape 100=100x10x2/10
    python bench/server_bench.py --loads 10,100 --loadgen-workers 2

A shape is CxDxN[/W][@Ims][+loop]: C clients, D documents (created by client
0, found by all), N changes per writer per document, W writers (default: all
clients), a pause of I ms between a writer's rounds, and ``+loop`` for a
closed loop (a writer's next change waits until its last one reached every
other client). Defaults: 1 = 1x20x50, 10 = 10x20x50, 100 = 100x10x2/10,
loop = 20x1x150/2+loop (two live editors among 20 clients of one document),
fan1 = 51x1x100/1@50ms (one writer, 50 viewers) and fan10 = 50x1x50/10@100ms
(10 writers, 40 viewers). The 100-client load has 10 writers because 100
clients all writing every document makes every sync message carry ~100
concurrent heads and saturates the JS client library (one Node process, 2
cores) long before the server: the run then measures the load generator (and
the JS server's keep-alive drops its stalled sockets). Even so, one Node
thread playing every client keeps its core busy on the 10- and 100-client
loads (loadgen CPU s near the run's length), and their latency is partly
its backlog; ``--loadgen-workers K`` spreads the clients over K threads.

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
import statistics
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

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_servers import (  # noqa: E402
    INSTALL_HINT,
    installed,
    parse_tree,
    published_sync_server,
    py_tree_server,
)

LOADGEN = REPO_ROOT / "bench" / "loadgen.mjs"
SERVERS = ("js", "js028", "py")
JS_SERVERS = ("js", "js028")
SERVER_LABELS = {
    "js": "JS sync-server (repo 2.5.6)",
    "js028": "published sync-server 0.2.8",
    "py": "autosync (ours)",
}


@dataclass(frozen=True)
class Shape:
    """One load: C clients, D documents, N changes per writer per document, W writers."""

    clients: int
    docs: int
    changes: int
    writers: int | None = None
    interval_ms: int = 0
    closed_loop: bool = False

    @property
    def total_changes(self) -> int:
        """Changes made in the run."""
        return (self.writers or self.clients) * self.docs * self.changes

    def label(self) -> str:
        """``CxDxN[/W][@Ims][+loop]``."""
        base = f"{self.clients}x{self.docs}x{self.changes}"
        if self.writers not in (None, self.clients):
            base += f"/{self.writers}"
        if self.interval_ms:
            base += f"@{self.interval_ms}ms"
        return base + ("+loop" if self.closed_loop else "")


DEFAULT_SHAPES: dict[str, Shape] = {
    "1": Shape(1, 20, 50),
    "10": Shape(10, 20, 50),
    "100": Shape(100, 10, 2, writers=10),
    # Two live editors of one document among 20 connected clients, each
    # editing again as soon as the other clients have its last change: the
    # relay's pacing of a busy document, not a backlog, sets the latency.
    "loop": Shape(20, 1, 150, writers=2, closed_loop=True),
    # Fan-out of one document: one writer (then ten) typing every 50 ms
    # (100 ms), every other client only watching.
    "fan1": Shape(51, 1, 100, writers=1, interval_ms=50),
    "fan10": Shape(50, 1, 50, writers=10, interval_ms=100),
}
DEFAULT_LOADS = "1,10,100,loop,fan1,fan10"

_SHAPE_RE = re.compile(r"(\w+)=(\d+)x(\d+)x(\d+)(?:/(\d+))?(?:@(\d+)ms)?(\+loop)?")


def parse_shape(text: str) -> tuple[str, Shape]:
    """Parse ``LOAD=CxDxN[/W][@Ims][+loop]``."""
    match = _SHAPE_RE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            "shape must look like 10=10x20x50, 100=100x10x2/10, fan=51x1x100/1@50ms "
            f"or loop=20x1x100/2+loop: {text}"
        )
    load, c, d, n, w, interval, loop = match.groups()
    shape = Shape(int(c), int(d), int(n), int(w) if w else None, int(interval or 0), bool(loop))
    return load, shape


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


async def run_loadgen(
    url: str, shape: Shape, timeout_s: float, workers: int = 1
) -> tuple[dict[str, Any], str]:
    """Run loadgen.mjs against ``url``; return its JSON result and its stderr tail."""
    argv = [node_executable(), str(LOADGEN), "--url", url]
    # A closed loop needs every client in one thread.
    argv += ["--workers", str(1 if shape.closed_loop else workers)]
    argv += ["--clients", str(shape.clients), "--docs", str(shape.docs)]
    argv += ["--changes", str(shape.changes), "--interval-ms", str(shape.interval_ms)]
    argv += ["--timeout-s", str(timeout_s)]
    if shape.writers is not None:
        argv += ["--writers", str(shape.writers)]
    if shape.closed_loop:
        argv.append("--closed-loop")
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
    # A fresh directory per run: repeated runs (--runs) never see earlier data.
    prefix = f"{kind}-{re.sub(r'[^0-9a-z]', '_', shape.label())}-data-".replace(":", "_")
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    if kind == "js":
        server_cm = js_sync_server(data_dir)
    elif kind == "js028":
        server_cm = published_sync_server(data_dir)
    elif kind.startswith("py:"):
        server_cm = py_tree_server(dict(args.py_tree)[kind[3:]], data_dir, *args.py_arg)
    else:
        server_cm = py_sync_server(data_dir, *args.py_arg)
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
                result, tail = await run_loadgen(
                    server.url, shape, args.timeout, args.loadgen_workers
                )
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


def _values(run: dict[str, Any]) -> dict[str, float | None]:
    lg = run.get("loadgen") or {}
    p50, p99, _ = _latency(run)
    return {
        "tput": lg.get("throughput_changes_per_s"),
        "p50": p50,
        "p99": p99,
        "cpu": run.get("cpu_s"),
        "rss": run.get("peak_rss_mib"),
    }


def _best_js(recs: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Per metric, the better of the JS servers' figures (higher throughput, else lower)."""
    best: dict[str, float | None] = {}
    for kind in JS_SERVERS:
        run = recs.get(kind)
        if run is None or "failure" in run:
            continue
        for key, value in _values(run).items():
            if value is None:
                continue
            held = best.get(key)
            if held is None or (value > held if key == "tput" else value < held):
                best[key] = value
    return best


def markdown(records: Sequence[dict[str, Any]], labels: dict[str, str]) -> str:
    """The results as a markdown table, with ours/(better JS) ratio rows per load."""
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
        for kind, run in recs.items():
            lg = run.get("loadgen") or {}
            _, _, tag = _latency(run)
            v = _values(run)
            rows.append(
                f"| {label} | {labels[kind]} | {_fmt(v['tput'], 0)} "
                f"| {_fmt(v['p50'])}{tag} | {_fmt(v['p99'])}{tag} | {_fmt(v['cpu'], 2)} "
                f"| {_fmt(v['rss'])} | {_errors(run)} | {_fmt(lg.get('messages_per_change'))} "
                f"| {_fmt(lg.get('loadgen_cpu_s'), 1)} |"
            )
        best = _best_js(recs)
        if not best:
            continue
        for kind, run in recs.items():
            if kind in JS_SERVERS:
                continue
            ours = _values(run)
            keys = ("tput", "p50", "p99", "cpu", "rss")
            cells = [_ratio(ours[k], best.get(k)) for k in keys]
            rows.append(f"| {label} | **{labels[kind]} / best JS** | {' | '.join(cells)} | | | |")
    notes = [
        "",
        "changes/s: higher is better; latency, CPU and RSS: lower is better.",
        "best JS: per column, the better figure of the JS servers run.",
        "`ack`: single client, latency until the server acknowledged the change.",
        "msgs/change: messages between the clients and the server per change made.",
        "loadgen CPU s near the run time means the JS client library, not the server, "
        "was the bottleneck.",
    ]
    runs = max((len(rec.get("runs", ())) for rec in records), default=0)
    if runs > 1:
        notes.append(f"each figure is the median of {runs} runs, the servers taking turns.")
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
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to run, of " + ", ".join(SERVERS) + " (default: all)",
    )
    parser.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    parser.add_argument(
        "--loads",
        default=DEFAULT_LOADS,
        help=f"comma-separated loads, of {', '.join(DEFAULT_SHAPES)} (default: {DEFAULT_LOADS})",
    )
    parser.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        default=[],
        metavar="L=CxDxN[/W][@Ims][+loop]",
        help="override the shape of load L (repeatable)",
    )
    parser.add_argument(
        "--interval-ms", type=int, default=0, help="pause between a client's rounds"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="bound per run, seconds")
    parser.add_argument(
        "--loadgen-workers",
        type=int,
        default=1,
        metavar="K",
        help="threads of the load generator that host the clients (closed loops use 1): "
        "one thread saturates its core on the large loads, so their latency is then "
        "the load generator's backlog",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run each server on each load this many times, taking turns, and report "
        "the median of each figure (the saturating loads swing by 15%% run to run)",
    )
    parser.add_argument("--json", type=Path, help="also write all measurements to this file")
    parser.add_argument(
        "--py-arg",
        action="append",
        default=[],
        help="extra argument for our server, e.g. --py-arg=--ephemeral (repeatable)",
    )
    parser.add_argument(
        "--py-tree",
        action="append",
        default=[],
        type=parse_tree,
        metavar="NAME=DIR",
        help="also run our server from another copy of the package (DIR holds "
        "autosync_jupyter/), e.g. the code before a change, side by side (repeatable)",
    )
    args = parser.parse_args(argv)

    if not (JS_DIR / "node_modules").is_dir():
        parser.error("tests/interop/js/node_modules is missing: npm ci --prefix tests/interop/js")
    shapes = dict(DEFAULT_SHAPES)
    shapes.update(dict(args.shape))
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    unknown = [load for load in loads if load not in shapes]
    if unknown:
        parser.error(f"no shape for load(s) {unknown}; add --shape {unknown[0]}=CxDxN")
    kinds = [args.only] if args.only else [k.strip() for k in args.servers.split(",") if k]
    if bad := [k for k in kinds if k not in SERVERS]:
        parser.error(f"unknown server(s) {bad}: choose from {', '.join(SERVERS)}")
    if "js028" in kinds and not installed():
        parser.error(f"the published sync server is not installed: {INSTALL_HINT}")
    labels = dict(SERVER_LABELS)
    for name, tree in args.py_tree:
        kinds.append(f"py:{name}")
        labels[f"py:{name}"] = f"ours, {name} ({tree})"
    args.labels = labels

    records = asyncio.run(_run_all(kinds, [shapes[load] for load in loads], args, print_progress))
    table = markdown(records, labels)
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
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            # Servers take turns run after run, so a slow spell of the
            # machine falls on all of them alike.
            for _ in range(max(1, args.runs)):
                for kind in kinds:
                    runs[kind].append(await _run_reported(kind, shape, Path(tmp), args, progress))
            records.extend(median_record(runs[kind]) for kind in kinds)
    return records


def median_record(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for several runs of a server on a load: each figure's median.

    A failed run makes the whole record that failure; ``runs`` keeps them all.
    """
    failed = [run for run in runs if "failure" in run]
    if len(runs) == 1 or failed:
        return failed[0] if failed else runs[0]

    def median(values: list[Any]) -> Any:
        known = sorted(v for v in values if v is not None)
        return statistics.median(known) if known else None

    record = dict(runs[0], runs=runs)
    for key in ("cpu_s", "peak_rss_mib", "run_s", "rss_idle_mib"):
        record[key] = median([run.get(key) for run in runs])
    loadgens = [run["loadgen"] for run in runs]
    loadgen = dict(loadgens[0])
    for key in ("throughput_changes_per_s", "messages_per_change", "loadgen_cpu_s", "wall_s"):
        loadgen[key] = median([lg.get(key) for lg in loadgens])
    for latency in ("latency_ms", "ack_latency_ms"):
        if isinstance(loadgen.get(latency), dict):
            loadgen[latency] = {
                **loadgen[latency],
                **{
                    key: median([(lg.get(latency) or {}).get(key) for lg in loadgens])
                    for key in ("p50", "p99")
                },
            }
    loadgen["converged"] = all(lg.get("converged") for lg in loadgens)
    loadgen["errors"] = sum(int(lg.get("errors", 0)) for lg in loadgens)
    record["loadgen"] = loadgen
    return record


async def _run_reported(
    kind: str,
    shape: Shape,
    workdir: Path,
    args: argparse.Namespace,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    progress(f"{args.labels[kind]}: {shape.label()} ({shape.total_changes} changes)")
    record = await run_one(kind, shape, workdir, args)
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
    return record


if __name__ == "__main__":
    sys.exit(main())
