#!/usr/bin/env python3
"""What running our sync server inside a Jupyter kernel costs the notebook, in a real kernel.

    python bench/kernel_bench.py                  # full run, about 2.5 minutes
    python bench/kernel_bench.py --quick          # fewer repetitions, shorter loads
    python bench/kernel_bench.py --json bench/results/kernel.json

The script starts one IPython kernel (jupyter_client, ``tests/jupyter/kernel.py``),
loads the extension, and measures two things. Everything runs on 127.0.0.1 and is
bounded in time; the kernel, the JS server and the load generator are stopped
in ``finally``. This is a script, never a timed test.

1. How long ``%autosync serve`` blocks a cell. ``%autosync serve --port 0
   --data-dir DIR`` returns once the server listens, and until then the cell is
   busy. Repeated serve/stop cycles, each with a fresh data directory:

   * *serve cell round trip*: client-side time from the execute request to the
     execute reply of the serve cell (what the notebook shows as "running");
   * *serve cost the user sees*: that minus the median round trip of an empty
     cell (``pass``) measured the same way, i.e. what ``%autosync serve`` adds
     to any cell;
   * *in-kernel time reported by the magic*: the ``(N ms)`` it prints (whole
     milliseconds), only the server start inside the cell;
   * the first serve in the kernel is reported on its own (cold: first use of
     the server code) and left out of the median;
   * for comparison, the time to start the official JS sync server
     (``tests/interop/js/sync-server.mjs``) as a process until its port accepts
     a TCP connection. The ratio "ours/JS" compares a cell that returns when
     the in-kernel server listens with a process start (Node start-up, module
     loading), so it says how the wait compares, not which server starts
     faster internally.

2. How much a busy in-kernel server slows unrelated cells. Two probe cells are
   run alternately, ``--reps`` times each, with ``--gap`` seconds between pairs:

   * a fixed CPU-bound cell (``sum(i * i for i in range(3_000_000))``), timed
     inside the kernel with ``time.perf_counter``;
   * an empty cell (``pass``), timed from the client: execute request to
     execute reply (how responsive the notebook feels).

   Conditions: *idle* (the in-kernel server runs, nobody is connected), *busy*
   (``bench/loadgen.mjs``, the official JS automerge-repo client, drives the
   in-kernel server with a steady, non-saturating load), and the same two with
   the official JS sync server as a separate process on the same machine (the
   kernel then has no server). Busy samples count only when they finished while
   the load was still running (column "n (in load / tried)"); probing starts
   ``--settle`` seconds after the load (connect and document setup). Ratios are
   busy/idle.

   The load is 5 clients x 4 documents, every client changing every document
   every 250 ms (~80 changes/s for ~21 s; quick: ~10 s). A faster load (e.g. 10
   documents every 20 ms) saturates the load generator itself (its CPU time
   equals its wall time, above all against the JS server, which sends ~20
   messages per change): the run then measures the JS client library, and
   contention for the 2 cores, rather than the server.

   How to read it. The in-kernel server shares the kernel's single asyncio
   loop with the kernel's own message handling: a ``pass`` cell waits while
   the loop is serving sync messages, so the ``pass`` round trip is where a
   busy in-kernel server shows. A synchronous cell holds that loop for as long
   as it runs, so the server *pauses* during a CPU-bound cell (changes queue in
   the socket buffers and are served after the cell), which is why the CPU cell
   itself barely slows: it mostly measures CPU contention with the load
   generator (and, in the JS case, with the JS server process too; the machine
   may have only 2 cores). The pause shows on the other side: the load table
   reports loadgen's results with and without the probe cells running, for
   both servers; for the in-kernel server, the difference in p99/max latency is
   the cells' pauses ("loop held" = total CPU-cell time during the load / the
   load's wall time). The JS server keeps serving while cells run; its
   difference is only CPU contention.

   Load results: changes/s = changes made / time until every change reached
   every client and the server acknowledged every client's heads (with a
   steady load this is set by the load's pace, ~80 changes/s, so similar
   numbers mean both servers kept up); p50/p99/max = change propagation
   latency between clients; errors = loadgen errors plus non-convergence.

   Noise: with 10 samples per condition and one ~20 s load per row, medians
   move by ~10-30% between runs on a shared 2-core machine, and p99/max
   latency (a handful of changes) much more. Compare ratios within one run,
   and repeat the run before reading anything into a difference under ~1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import queue
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_ROOT))

from server_bench import JS_DIR, Shape, _ratio, machine_info, run_loadgen  # noqa: E402
from servers import js_sync_server  # noqa: E402  (tests/interop, put on sys.path by server_bench)

from tests.jupyter.kernel import Kernel, running_kernel  # noqa: E402

T = TypeVar("T")

CPU_CELL = (
    "import time as _bench_time\n"
    "_bench_t0 = _bench_time.perf_counter()\n"
    "_bench_sum = sum(i * i for i in range(3_000_000))\n"
    "print(_bench_time.perf_counter() - _bench_t0)"
)
EMPTY_CELL = "pass"
_SERVE_RE = re.compile(r"listening on (ws://\S+) \(data: .*; (\d+) ms\)")

# 5 clients, 4 documents, one change to each document every 250 ms per client:
# ~80 changes/s for ~21 s (quick: ~10 s). Far below what either server or the
# load generator can do (loadgen CPU ~40% of one core against the JS server),
# so the load is steady, not saturating.
FULL_LOAD = Shape(clients=5, docs=4, changes=80, interval_ms=250)
QUICK_LOAD = Shape(clients=5, docs=4, changes=40, interval_ms=250)


# -- Ctrl-C ------------------------------------------------------------------

_INTERRUPTED = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raise KeyboardInterrupt after Ctrl-C, even if some library swallowed the first one."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def wait_for(future: concurrent.futures.Future[T], timeout: float) -> T:
    """``future.result(timeout)``, polling so that Ctrl-C is never lost."""
    deadline = time.monotonic() + timeout
    while True:
        check_interrupted()
        try:
            return future.result(min(0.5, max(0.0, deadline - time.monotonic())))
        except concurrent.futures.TimeoutError:
            if time.monotonic() >= deadline:
                raise


# -- statistics --------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    """Median, or None for no values."""
    return statistics.median(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    """90th percentile by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summary_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, median and p90 in milliseconds, plus the raw samples."""
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "median_ms": median(ms), "p90_ms": p90(ms), "samples_ms": ms}


# -- the kernel --------------------------------------------------------------


@dataclass
class CellRun:
    """One executed cell: client-side round trip and what it printed."""

    seconds: float
    stdout: str = ""
    stderr: str = ""


def execute(kernel: Kernel, code: str, *, timeout: float = 60.0) -> CellRun:
    """Run ``code``; time from the execute request to the execute reply (client side).

    Then drain the cell's IOPub messages up to its idle status (not timed) to
    collect its output. Raises RuntimeError if the cell failed.
    """
    check_interrupted()
    client = kernel.client
    started = time.perf_counter()
    msg_id = client.execute(code, store_history=False)
    deadline = started + timeout
    while True:
        reply = client.get_shell_msg(timeout=max(0.01, deadline - time.perf_counter()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    run = CellRun(time.perf_counter() - started)
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.01, deadline - time.perf_counter()))
        except queue.Empty:
            raise RuntimeError(f"no idle status for cell {code!r} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                run.stdout += content["text"]
            else:
                run.stderr += content["text"]
        elif kind == "status" and content["execution_state"] == "idle":
            break
    content = reply["content"]
    if content["status"] != "ok":
        raise RuntimeError(
            f"cell {code!r} failed: {content.get('ename')}: {content.get('evalue')}\n"
            f"stdout: {run.stdout}\nstderr: {run.stderr}"
        )
    return run


def serve(kernel: Kernel, data_dir: Path) -> tuple[CellRun, str, float]:
    """``%autosync serve`` in the kernel: the cell, the server URL, the reported ms."""
    run = execute(kernel, f"%autosync serve --port 0 --data-dir {data_dir}")
    match = _SERVE_RE.search(run.stdout)
    if not match:
        raise RuntimeError(f"unexpected %autosync serve output:\n{run.stdout}\n{run.stderr}")
    return run, match.group(1), float(match.group(2))


def stop(kernel: Kernel) -> CellRun:
    """``%autosync stop`` in the kernel."""
    run = execute(kernel, "%autosync stop")
    if "stopped the server" not in run.stdout:
        raise RuntimeError(f"unexpected %autosync stop output:\n{run.stdout}\n{run.stderr}")
    return run


# -- async work (JS server, loadgen) in a background loop -------------------


class Background:
    """An asyncio loop in a thread, so the kernel client stays synchronous in the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="bg")
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` in the loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float = 120.0, *, cleanup: bool = False
    ) -> T:
        """Run ``coro`` in the loop and wait for its result (``cleanup``: even after Ctrl-C)."""
        future = self.submit(coro)
        return future.result(timeout) if cleanup else wait_for(future, timeout)

    def close(self) -> None:
        """Cancel what still runs, then stop the loop and its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=30, cleanup=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


@contextlib.contextmanager
def js_server(bg: Background, data_dir: Path) -> Iterator[str]:
    """The official JS sync server as a process (entered in the background loop)."""
    manager = js_sync_server(data_dir)
    server = bg.run(manager.__aenter__(), timeout=60)
    try:
        yield server.url
    except BaseException as exc:
        bg.run(manager.__aexit__(type(exc), exc, exc.__traceback__), timeout=60, cleanup=True)
        raise
    bg.run(manager.__aexit__(None, None, None), timeout=60, cleanup=True)


async def _js_start_once(data_dir: Path) -> float:
    started = time.perf_counter()
    async with js_sync_server(data_dir) as server:
        parts = urlsplit(server.url)
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        elapsed = time.perf_counter() - started
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return elapsed


def kill_leftover_children() -> None:
    """Kill processes this script started that are still alive (by pid, after a failure)."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


# -- part 1: how long %autosync serve blocks a cell --------------------------


def bench_serve(
    kernel: Kernel, bg: Background, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Serve/stop cycles in the kernel, empty-cell baseline, JS process starts."""
    for _ in range(3):  # warm the shell channel
        execute(kernel, EMPTY_CELL)
    empty = [execute(kernel, EMPTY_CELL).seconds for _ in range(args.serve_reps)]
    empty_median = statistics.median(empty)

    cells: list[float] = []
    reported: list[float] = []
    stops: list[float] = []
    for i in range(args.serve_reps + 1):  # cycle 0 is the cold start
        run, _url, ms = serve(kernel, workdir / f"serve-{i}")
        stops.append(stop(kernel).seconds)
        cells.append(run.seconds)
        reported.append(ms / 1000)
    progress(
        f"serve: cell median {statistics.median(cells[1:]) * 1000:.1f} ms, "
        f"empty cell median {empty_median * 1000:.2f} ms"
    )

    js = [
        bg.run(_js_start_once(workdir / f"js-start-{i}"), timeout=60) for i in range(args.js_reps)
    ]
    progress(f"JS server start: median {statistics.median(js) * 1000:.1f} ms")
    return {
        "empty_cell": summary_ms(empty),
        "serve_cell": summary_ms(cells[1:]),
        "serve_cost": summary_ms([c - empty_median for c in cells[1:]]),
        "serve_reported": summary_ms(reported[1:]),
        "serve_cold": {"cell_ms": cells[0] * 1000, "reported_ms": reported[0] * 1000},
        "stop_cell": summary_ms(stops),
        "js_start": summary_ms(js),
    }


# -- part 2: unrelated cells while a server is busy --------------------------


def probe(kernel: Kernel) -> tuple[float, float, float]:
    """One CPU cell and one empty cell: (CPU in-kernel s, CPU cell round trip s, empty s)."""
    cpu = execute(kernel, CPU_CELL)
    empty = execute(kernel, EMPTY_CELL)
    return float(cpu.stdout.strip().splitlines()[-1]), cpu.seconds, empty.seconds


def sample_cells(
    kernel: Kernel, reps: int, gap: float, load: concurrent.futures.Future[Any] | None = None
) -> dict[str, Any]:
    """``reps`` probe pairs; with ``load``, only pairs that finished while it still ran."""
    cpu: list[float] = []
    cpu_cell: list[float] = []
    empty: list[float] = []
    attempted = 0
    while len(cpu) < reps:
        if load is not None and load.done():
            break
        attempted += 1
        c, cc, e = probe(kernel)
        if load is not None and load.done():
            break  # the load ended during this pair: it was not (fully) busy
        cpu.append(c)
        cpu_cell.append(cc)
        empty.append(e)
        time.sleep(gap)
        check_interrupted()
    return {
        "cpu_cell": summary_ms(cpu),
        "cpu_cell_round_trip": summary_ms(cpu_cell),
        "empty_cell": summary_ms(empty),
        "attempted": attempted,
        "cpu_seconds_total": sum(cpu),
    }


def run_load(
    bg: Background,
    url: str,
    shape: Shape,
    args: argparse.Namespace,
    kernel: Kernel | None = None,
) -> dict[str, Any]:
    """Run loadgen against ``url``; with ``kernel``, sample probe cells meanwhile."""
    started = time.perf_counter()
    future = bg.submit(run_loadgen(url, shape, args.load_timeout))
    record: dict[str, Any] = {}
    try:
        if kernel is not None:
            time.sleep(args.settle)  # let the clients connect and find the documents
            record["cells"] = sample_cells(kernel, args.reps, args.gap, future)
            record["cells_done_s"] = time.perf_counter() - started
        result, tail = wait_for(future, args.load_timeout + 90)
    finally:
        if not future.done():
            future.cancel()
    record["loadgen"] = result
    record["loadgen_stderr_tail"] = tail
    return record


def describe_load(name: str, record: dict[str, Any]) -> None:
    """A progress line about one load run."""
    lg = record["loadgen"]
    lat = lg.get("latency_ms") or {}
    extra = ""
    if "cells" in record:
        extra = f", {record['cells']['empty_cell']['n']} probe pairs during the load"
    progress(
        f"{name}: {lg['throughput_changes_per_s']} changes/s, wall {lg['wall_s']} s, "
        f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, errors {lg['errors']}, "
        f"converged {lg['converged']}{extra}"
    )


def bench_load(
    kernel: Kernel, bg: Background, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Idle vs busy probe cells, in-kernel server and JS server process."""
    shape = args.shape
    out: dict[str, Any] = {"shape": asdict(shape), "label": shape.label()}

    # In-kernel server: idle, then busy with probe cells.
    _run, url, _ms = serve(kernel, workdir / "kernel-busy")
    try:
        out["kernel_idle"] = sample_cells(kernel, args.reps, args.gap)
        progress("in-kernel server idle: sampled")
        out["kernel_busy"] = run_load(bg, url, shape, args, kernel)
        describe_load("in-kernel server + cells", out["kernel_busy"])
    finally:
        stop(kernel)
    # In-kernel server: the same load without cells (what it delivers undisturbed).
    _run, url, _ms = serve(kernel, workdir / "kernel-alone")
    try:
        out["kernel_load_only"] = run_load(bg, url, shape, args)
        describe_load("in-kernel server, no cells", out["kernel_load_only"])
    finally:
        stop(kernel)

    # JS server process (no server in the kernel): idle, busy with cells, load only.
    with js_server(bg, workdir / "js-busy") as url:
        out["js_idle"] = sample_cells(kernel, args.reps, args.gap)
        progress("JS server idle: sampled")
        out["js_busy"] = run_load(bg, url, shape, args, kernel)
        describe_load("JS server + cells", out["js_busy"])
    with js_server(bg, workdir / "js-alone") as url:
        out["js_load_only"] = run_load(bg, url, shape, args)
        describe_load("JS server, no cells", out["js_load_only"])
    return out


# -- report ------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _row(label: str, s: dict[str, Any], digits: int = 1) -> str:
    return f"| {label} | {s['n']} | {_fmt(s['median_ms'], digits)} | {_fmt(s['p90_ms'], digits)} |"


def _load_errors(lg: dict[str, Any]) -> str:
    errors = int(lg.get("errors", 0))
    return str(errors) if lg.get("converged") else f"{errors} (not converged)"


def markdown(serve_part: dict[str, Any] | None, load_part: dict[str, Any] | None) -> str:
    """Both parts as markdown tables."""
    out: list[str] = []
    if serve_part is not None:
        s = serve_part
        out += [
            "### How long `%autosync serve` blocks a cell",
            "",
            "| measure | n | median ms | p90 ms |",
            "|---|---:|---:|---:|",
            _row("empty cell (`pass`) round trip", s["empty_cell"], 2),
            _row("`%autosync serve` cell round trip", s["serve_cell"]),
            _row("**serve cost the user sees** (serve - empty median)", s["serve_cost"]),
            _row("in-kernel time the magic reports", s["serve_reported"], 0),
            f"| first serve in this kernel (cold; not in the rows above) | 1 "
            f"| {_fmt(s['serve_cold']['cell_ms'])} (reports {s['serve_cold']['reported_ms']:.0f}) "
            "| — |",
            _row("`%autosync stop` cell round trip", s["stop_cell"]),
            _row("JS sync server: process start until its port accepts", s["js_start"]),
            f"| **ours/JS** (serve cost / JS process start) | "
            f"| {_ratio(s['serve_cost']['median_ms'], s['js_start']['median_ms'])} "
            f"| {_ratio(s['serve_cost']['p90_ms'], s['js_start']['p90_ms'])} |",
            "",
        ]
    if load_part is not None:
        lp = load_part
        out += [
            f"### Unrelated cells while the server is busy (load {lp['label']}, "
            f"interval {lp['shape']['interval_ms']} ms)",
            "",
            "| condition | CPU cell median ms | CPU cell p90 ms | `pass` round trip median ms "
            "| `pass` p90 ms | n (in load / tried) |",
            "|---|---:|---:|---:|---:|---|",
        ]

        def cells_row(label: str, c: dict[str, Any], busy: bool) -> str:
            n = f"{c['empty_cell']['n']} / {c['attempted']}" if busy else str(c["empty_cell"]["n"])
            return (
                f"| {label} | {_fmt(c['cpu_cell']['median_ms'])} | {_fmt(c['cpu_cell']['p90_ms'])} "
                f"| {_fmt(c['empty_cell']['median_ms'], 2)} | {_fmt(c['empty_cell']['p90_ms'], 2)} "
                f"| {n} |"
            )

        def ratio_row(label: str, busy: dict[str, Any], idle: dict[str, Any]) -> str:
            cells = [
                _ratio(busy[k][q], idle[k][q])
                for k in ("cpu_cell", "empty_cell")
                for q in ("median_ms", "p90_ms")
            ]
            return f"| **{label}** | {' | '.join(cells)} | |"

        for kind, idle_label, busy_label in (
            ("kernel", "idle: in-kernel server, no clients", "busy: load → in-kernel server"),
            ("js", "idle: JS server process, no clients", "busy: load → JS server process"),
        ):
            idle = lp[f"{kind}_idle"]
            busy = lp[f"{kind}_busy"]["cells"]
            out.append(cells_row(idle_label, idle, busy=False))
            out.append(cells_row(busy_label, busy, busy=True))
            who = "in-kernel" if kind == "kernel" else "JS process"
            out.append(ratio_row(f"busy/idle ({who})", busy, idle))
        out += [
            "",
            "### The load's own results, with and without the probe cells",
            "",
            "| server | probe cells | changes/s | p50 ms | p99 ms | max ms | wall s | loop held "
            "| errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for kind, name in (("kernel", "in-kernel (ours)"), ("js", "JS sync-server process")):
            for key, with_cells in ((f"{kind}_load_only", "no"), (f"{kind}_busy", "yes")):
                rec = lp[key]
                lg = rec["loadgen"]
                lat = lg.get("latency_ms") or {}
                held = "—"
                if "cells" in rec and lg.get("wall_s"):
                    share = rec["cells"]["cpu_seconds_total"] / lg["wall_s"]
                    held = f"{share * 100:.0f}%" if kind == "kernel" else f"({share * 100:.0f}%)"
                out.append(
                    f"| {name} | {with_cells} | {_fmt(lg.get('throughput_changes_per_s'), 0)} "
                    f"| {_fmt(lat.get('p50'))} | {_fmt(lat.get('p99'))} | {_fmt(lat.get('max'))} "
                    f"| {_fmt(lg.get('wall_s'))} | {held} | {_load_errors(lg)} |"
                )
        k, j = lp["kernel_busy"]["loadgen"], lp["js_busy"]["loadgen"]
        kl, jl = k.get("latency_ms") or {}, j.get("latency_ms") or {}
        out.append(
            f"| **in-kernel/JS, with cells** | | "
            f"{_ratio(k.get('throughput_changes_per_s'), j.get('throughput_changes_per_s'))} "
            f"| {_ratio(kl.get('p50'), jl.get('p50'))} | {_ratio(kl.get('p99'), jl.get('p99'))} "
            f"| {_ratio(kl.get('max'), jl.get('max'))} | | | |"
        )
        out += [
            "",
            "CPU cell: `sum(i * i for i in range(3_000_000))` timed inside the kernel. "
            "`pass` round trip: execute request → execute reply, from the client.",
            "loop held: CPU-cell time during the load / the load's wall time; the in-kernel "
            "server pauses for that long (in parentheses for the JS server, which keeps serving).",
            "Latency: change propagation between loadgen clients; for the in-kernel server "
            "with cells it includes the pauses.",
        ]
    return "\n".join(out)


# -- main --------------------------------------------------------------------


def progress(message: str) -> None:
    """Progress lines go to stderr so stdout is just the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 if a load had errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter loads")
    parser.add_argument("--only", choices=("serve", "load"), help="run one part only")
    parser.add_argument("--json", type=Path, help="also write all measurements to this file")
    parser.add_argument("--serve-reps", type=int, help="serve/stop cycles (default 15, quick 6)")
    parser.add_argument("--js-reps", type=int, help="JS server starts (default 5, quick 3)")
    parser.add_argument("--reps", type=int, help="probe pairs per condition (default 10, quick 5)")
    parser.add_argument("--gap", type=float, help="pause between probe pairs, s (1.5, quick 1)")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="wait after starting the load before probing, s"
    )
    parser.add_argument("--load-timeout", type=float, default=90.0, help="bound per load, s")
    args = parser.parse_args(argv)
    quick = args.quick
    args.serve_reps = args.serve_reps or (6 if quick else 15)
    args.js_reps = args.js_reps or (3 if quick else 5)
    args.reps = args.reps or (5 if quick else 10)
    args.gap = args.gap if args.gap is not None else (1.0 if quick else 1.5)
    args.shape = QUICK_LOAD if quick else FULL_LOAD
    if not (JS_DIR / "node_modules").is_dir():
        parser.error("tests/interop/js/node_modules is missing: npm ci --prefix tests/interop/js")

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    serve_part: dict[str, Any] | None = None
    load_part: dict[str, Any] | None = None
    bg = Background()
    clean = False
    try:
        with (
            tempfile.TemporaryDirectory(prefix="autosync-kbench-") as tmp,
            running_kernel(Path(tmp)) as kernel,
        ):
            workdir = Path(tmp)
            execute(kernel, "%load_ext autosync_jupyter")
            progress("kernel started, extension loaded")
            if args.only != "load":
                serve_part = bench_serve(kernel, bg, workdir, args)
            if args.only != "serve":
                load_part = bench_load(kernel, bg, workdir, args)
        clean = True
    finally:
        bg.close()
        if not clean:
            kill_leftover_children()

    print()
    print(markdown(serve_part, load_part))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"machine": machine_info(), "args": {**vars(args), "shape": asdict(args.shape)}}
        data |= {"serve": serve_part, "load": load_part}
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    if load_part is not None:
        for key in ("kernel_busy", "kernel_load_only", "js_busy", "js_load_only"):
            lg = load_part[key]["loadgen"]
            if lg.get("errors") or not lg.get("converged"):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
