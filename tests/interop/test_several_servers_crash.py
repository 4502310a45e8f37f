"""Two `autosync serve --store-shared` on one database, JS clients on each, `kill -9` of one.

Writers on server A and on server B edit one document at once; A is killed
mid-write. Every change A acknowledged (heads its sync messages carried, as
the JS client records them) must be in the database and reach the client
on B; and what the two wrote converges there.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import automerge.core as am
from jspeer import JSPeer, Op
from servers import py_sync_server

from autosync_jupyter.ids import decode_heads

RUN_SECONDS = 2.0
WAIT = 60.0  # a bound on a hang, not a timing


async def writes(
    peer: JSPeer, doc_id: str, name: str, stop: asyncio.Event, acked: list[str]
) -> int:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await peer.change(doc_id, [Op.set(name, i), Op.push("log", f"{name}{i}")])
            if i % 5 == 0:
                info = await peer.sync_info(doc_id)
                if info["lastHeads"]:
                    acked[:] = info["lastHeads"]
        except Exception:
            if stop.is_set():
                break
            raise
    return i


async def hashes_of(peer: JSPeer, doc_id: str) -> set[bytes]:
    return {c.hash for c in am.Document.load(await peer.export(doc_id)).get_changes([])}


async def test_kill_9_of_one_shared_server_loses_nothing_it_acknowledged(
    tmp_path: Path, postgres_url: str
) -> None:
    shared = ("--store", postgres_url, "--store-shared")
    loop = asyncio.get_running_loop()
    async with py_sync_server(tmp_path / "b", *shared) as b, JSPeer.start(b.url) as on_b:
        async with (
            py_sync_server(tmp_path / "a", *shared, require_clean_exit=False) as a,
            JSPeer.start(a.url, retry_interval_ms=200) as on_a,
        ):
            doc_id = (await on_a.create({"log": []}))["documentId"]
            await on_a.wait_synced(doc_id)
            deadline = loop.time() + WAIT
            while (await on_b.find(doc_id))["state"] != "ready":  # B hears of it at the commit
                assert loop.time() < deadline, "B never served the document made through A"
            acked_a: list[str] = []
            acked_b: list[str] = []
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(writes(on_a, doc_id, "a", stop, acked_a)),
                asyncio.create_task(writes(on_b, doc_id, "b", stop, acked_b)),
            ]
            await asyncio.sleep(RUN_SECONDS)
            os.kill(a.pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            stop.set()
            counts = await asyncio.gather(*tasks)
        assert all(c > 10 for c in counts), counts
        assert acked_a, "no acknowledgement from A observed before the kill"
        wanted = set(decode_heads(acked_a))
        # Everything A acknowledged reaches the client on B (through the database).
        deadline = loop.time() + WAIT
        while not wanted <= (have := await hashes_of(on_b, doc_id)):
            assert loop.time() < deadline, f"acknowledged by A, lost: {wanted - have}"
            await asyncio.sleep(0.05)
        # A fresh client on B gets the same document as the writer on B.
        async with JSPeer.start(b.url) as reader:
            found = await reader.find(doc_id)
            assert found["state"] == "ready"
            mine = await on_b.heads(doc_id)
            deadline = loop.time() + WAIT
            while sorted(await reader.heads(doc_id)) != sorted(mine):
                assert loop.time() < deadline, "the reader on B never converged"
                await asyncio.sleep(0.05)


class FailoverProxy:
    """A TCP load balancer on loopback: each connection goes to the first backend that accepts.

    What HAProxy or nginx with two upstreams does when one dies: new
    connections go to the one still up. Bytes are passed through untouched.
    """

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.routes: list[int] = []  # the backend each connection went to
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> FailoverProxy:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.routes.append(port)
            break
        else:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            spawned = asyncio.create_task(task)
            self._pipes.add(spawned)
            spawned.add_done_callback(self._pipes.discard)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def test_clients_behind_a_load_balancer_move_to_the_other_server_after_a_kill_9(
    tmp_path: Path, postgres_url: str
) -> None:
    """kill -9 of a client's server: it reconnects through the balancer to the other, resyncs."""
    shared = ("--store", postgres_url, "--store-shared")
    loop = asyncio.get_running_loop()
    async with (
        py_sync_server(tmp_path / "b", *shared) as b,
        JSPeer.start(b.url) as on_b,
        py_sync_server(tmp_path / "a", *shared, require_clean_exit=False) as a,
        FailoverProxy([port_of(a.url), port_of(b.url)]) as balancer,
        JSPeer.start(balancer.url, retry_interval_ms=200) as roaming,
    ):
        doc_id = (await roaming.create({"n": 0}))["documentId"]
        await roaming.change(doc_id, [Op.set("before", True)])
        await roaming.wait_synced(doc_id)
        assert balancer.routes == [port_of(a.url)]
        os.kill(a.pid, signal.SIGKILL)
        # Edits made while no server is reachable, then after the move.
        await roaming.change(doc_id, [Op.set("during", True)])
        deadline = loop.time() + WAIT
        while port_of(b.url) not in balancer.routes:
            assert loop.time() < deadline, "the client never reconnected"
            await asyncio.sleep(0.05)
        await roaming.change(doc_id, [Op.set("after", True)])
        # Everything reaches a client of B, and B acknowledges the roaming client.
        found = await on_b.find(doc_id)
        assert found["state"] == "ready", found
        await on_b.wait_for(doc_id, path="after", equals=True, timeout=WAIT)
        assert await on_b.doc(doc_id) == {
            "n": 0,
            "before": True,
            "during": True,
            "after": True,
        }
        await roaming.wait_synced(doc_id, timeout=WAIT)
        await on_b.change(doc_id, [Op.set("from_b", 1)])
        await roaming.wait_for(doc_id, path="from_b", equals=1, timeout=WAIT)
