#!/usr/bin/env python3
"""What the Jupyter server's relay (``autosync/relay``) costs a kernel server's peers.

A kernel-style sync server (``python -m autosync_jupyter serve``, in-memory,
its own process as in a kernel) and a Jupyter server with the extension
(``python -m jupyter_server``, token auth) run on loopback. The kernel server
is announced to the extension as a kernel's announcer does, then the same
measurements run twice: peers connected straight to the kernel server, and
peers connected through ``{base}autosync/relay?server=...`` (what the
JupyterLab panel's tabs do):

* live change round trip: two of our ``Connection`` objects on one document;
  A sets ``ping``, B answers ``pong`` as soon as it sees it, A waits for it
  (so each round trip crosses the relay four times);
* a paced load from the official JS client (``bench/loadgen.mjs``, 5 clients
  x 4 documents x 80 changes every 250 ms, as in ``kernel_bench.py``),
  change propagation p50/p99 as seen by the other clients.

It prints a markdown table with medians and relay/direct ratios (1.00 = the
relay costs nothing). There is no relay in the JS sync server to compare
with: the ratio against the direct connection is the figure.

    python bench/relay_bench.py
    python bench/relay_bench.py --sync-interval 0   # the relay's own cost per hop
    python bench/relay_bench.py --runs 300 --json relay.json

Needs the interop install (``npm ci --prefix tests/interop/js``). A script,
never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from client_bench import py_roundtrip, summary  # noqa: E402
from server_bench import Shape, machine_info, run_loadgen  # noqa: E402
from servers import py_sync_server  # noqa: E402

from autosync_jupyter.runtime.connection import connect  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def jupyter_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """A Jupyter server with the extension; yields (http URL with slash, token)."""
    port, token = free_port(), secrets.token_hex(16)
    root = workdir / "root"
    root.mkdir()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "JUPYTER_DATA_DIR": str(workdir / "data"),
    }
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--allow-root",
    ]
    log = (workdir / "jupyter.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited ({proc.returncode}); see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not start within 60 s") from None
                time.sleep(0.2)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def announce(jupyter_url: str, token: str, server_url: str) -> None:
    body = json.dumps({"url": server_url, "name": "relay bench", "documents": []}).encode()
    request = urllib.request.Request(
        f"{jupyter_url}autosync/api/servers/relay-bench",
        data=body,
        method="PUT",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


#: The paced load of ``kernel_bench.py``: 5 clients x 4 documents x 80 changes, every 250 ms.
LOAD = Shape(clients=5, docs=4, changes=80, interval_ms=250)


async def measure(url: str, runs: int, timeout_s: float) -> dict[str, Any]:
    async with connect(url) as conn:
        handle = await conn.create({"ping": 0, "pong": 0})
        doc_id = handle.document_id
        await handle.flush()  # the server holds it before the round trips start
    roundtrip = summary(await py_roundtrip(url, doc_id, runs))
    load, _tail = await run_loadgen(url, LOAD, timeout_s)
    return {"roundtrip_ms": roundtrip, "load": load}


def ratio(relay: float | None, direct: float | None) -> str:
    if not relay or not direct:
        return "—"
    return f"{relay / direct:.2f}"


def latency(load: dict[str, Any], key: str) -> float | None:
    value = load.get("latency_ms", {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="round trips per mode")
    parser.add_argument("--timeout", type=float, default=120.0, help="loadgen bound, seconds")
    parser.add_argument(
        "--sync-interval",
        type=float,
        help="the kernel server's --sync-interval (default: its own, 0.1 s); 0 takes its "
        "per-document batching out of the round trip, leaving the relay's own cost",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"json": None}}
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        workdir = Path(tmp)
        extra = ["--ephemeral"]
        if args.sync_interval is not None:
            extra += ["--sync-interval", str(args.sync_interval)]
        async with py_sync_server(workdir / "kernel", *extra) as kernel:
            with jupyter_server(workdir) as (jupyter_url, token):
                ws_base = "ws" + jupyter_url[len("http") :]
                query = urllib.parse.urlencode({"server": kernel.url, "token": token})
                relay_url = f"{ws_base}autosync/relay?{query}"
                for mode, url in (("direct", kernel.url), ("relay", relay_url)):
                    # Announced just before, as a kernel refreshes its entry (they expire).
                    announce(jupyter_url, token, kernel.url)
                    print(f"measuring {mode} …", file=sys.stderr)
                    results[mode] = await measure(url, args.runs, args.timeout)

    direct, relay = results["direct"], results["relay"]
    rows = [
        (
            "change round trip, p50 ms",
            direct["roundtrip_ms"]["median"],
            relay["roundtrip_ms"]["median"],
        ),
        ("change round trip, p90 ms", direct["roundtrip_ms"]["p90"], relay["roundtrip_ms"]["p90"]),
        (
            "paced load 5x4x80 every 250 ms: propagation p50 ms",
            latency(direct["load"], "p50"),
            latency(relay["load"], "p50"),
        ),
        (
            "paced load 5x4x80 every 250 ms: propagation p99 ms",
            latency(direct["load"], "p99"),
            latency(relay["load"], "p99"),
        ),
    ]
    print("| | direct to the kernel server | through the Jupyter relay | relay/direct |")
    print("|---|---:|---:|---:|")
    for label, d, r in rows:
        d_text = "—" if d is None else f"{d:.1f}"
        r_text = "—" if r is None else f"{r:.1f}"
        print(f"| {label} | {d_text} | {r_text} | {ratio(r, d)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
