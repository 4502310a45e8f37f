"""``autosync/relay``: a kernel's sync server reached through the Jupyter server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import cbor2
import pytest
from tornado.httpclient import HTTPClientError
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from autosync_jupyter import SyncServer, fetch
from autosync_jupyter.core.protocol import Peer, decode
from autosync_jupyter.jupyter.discovery import SECRET_HEADER, SECRET_VARIABLE
from autosync_jupyter.serverext.base import AuthorizedWebSocketHandler
from autosync_jupyter.serverext.relay import relayable
from tests.interop.jspeer import JSPeer, Op, require_js_install

from .conftest import ApiCall, upgrade_status

RelayUrl = Callable[..., str]


@pytest.fixture
async def kernel_server() -> AsyncIterator[SyncServer]:
    """A sync server as ``%autosync serve`` runs it: ws:// on 127.0.0.1."""
    async with SyncServer(port=0, data_dir=None) as server:
        yield server


@pytest.fixture
def relay_url(http_server: Any, jp_http_port: int, jp_base_url: str, token: str) -> RelayUrl:
    """``relay_url(server_url)`` → the relay's URL for it (with the token unless told not)."""

    def make(server_url: str, *, with_token: bool = True) -> str:
        query = {"server": server_url, **({"token": token} if with_token else {})}
        base = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}autosync/relay"
        return f"{base}?{urllib.parse.urlencode(query)}"

    return make


async def announce(api: ApiCall, server_id: str, url: str) -> None:
    body = json.dumps({"url": url, "name": "test kernel", "documents": []})
    headers = {SECRET_HEADER: os.environ[SECRET_VARIABLE]}  # as the kernels inherit it
    assert (await api("servers", server_id, method="PUT", body=body, headers=headers))[0] == 200


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_js_client_syncs_with_a_kernel_server_through_the_relay(
    api: ApiCall, kernel_server: SyncServer, relay_url: RelayUrl
) -> None:
    """The official JS client, on the relay, syncs both ways with the kernel's server."""
    require_js_install()
    await announce(api, "k1", kernel_server.url)
    url = relay_url(kernel_server.url)
    async with JSPeer.start(url) as js:
        made = await js.create({"via": "relay"})
        doc_id = made["documentId"]
        await js.wait_synced(doc_id)  # acknowledged by the kernel's server itself
        assert await kernel_server.read_document(doc_id) == {"via": "relay"}
        await kernel_server.change_document(doc_id, lambda d: d.update({"kernel": 1}))
        await js.wait_for(doc_id, path="kernel", equals=1)
        await js.change(doc_id, [Op.set("browser", 2)])
        for _ in range(100):
            if (await kernel_server.read_document(doc_id)).get("browser") == 2:
                break
            await asyncio.sleep(0.05)
        assert await kernel_server.read_document(doc_id) == {
            "via": "relay",
            "kernel": 1,
            "browser": 2,
        }
    # Our own client goes through it too.
    assert (await fetch(url, doc_id)).to_py()["browser"] == 2


async def test_relay_refuses_what_it_must_not_relay(
    api: ApiCall, kernel_server: SyncServer, relay_url: RelayUrl
) -> None:
    """403 without Jupyter's token; 404 for unannounced or off-machine URLs; 502 if silent."""
    await announce(api, "k1", kernel_server.url)
    assert await upgrade_status(relay_url(kernel_server.url, with_token=False)) == 403
    assert await upgrade_status(relay_url(f"ws://127.0.0.1:{closed_port()}")) == 404
    for elsewhere in (
        "ws://10.1.2.3:8765",
        "wss://127.0.0.1:8765",
        "ws://127.0.0.1",
        f"{kernel_server.url}/admin?drop=all",  # a blind request to a loopback service
    ):
        body = json.dumps({"url": elsewhere, "documents": []})
        headers = {SECRET_HEADER: os.environ[SECRET_VARIABLE]}
        status, _ = await api("servers", "other", method="PUT", body=body, headers=headers)
        assert status == 400, elsewhere
        assert await upgrade_status(relay_url(elsewhere)) == 404, elsewhere
    silent = f"ws://127.0.0.1:{closed_port()}"
    await announce(api, "gone", silent)
    assert await upgrade_status(relay_url(silent)) == 502
    assert await upgrade_status(relay_url(kernel_server.url)) == 101


async def test_closes_travel_across_the_relay(
    api: ApiCall, relay_url: RelayUrl, kernel_server: SyncServer
) -> None:
    """A leaving browser leaves the kernel's server; a stopping server closes the browser."""
    await announce(api, "k1", kernel_server.url)
    join = cbor2.dumps(
        {"type": "join", "senderId": "browser-1", "supportedProtocolVersions": ["1"]}
    )
    async with ws_connect(relay_url(kernel_server.url)) as ws:
        await ws.send(join)
        assert isinstance(decode(await asyncio.wait_for(ws.recv(), 5)), Peer)
        assert [p.peer_id for p in kernel_server.peers()] == ["browser-1"]
    for _ in range(100):
        if not kernel_server.peers():
            break
        await asyncio.sleep(0.05)
    assert kernel_server.peers() == []

    async with ws_connect(relay_url(kernel_server.url)) as ws:
        await ws.send(join)
        await asyncio.wait_for(ws.recv(), 5)
        await kernel_server.close()  # as %autosync stop does: peers get 1001
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_a_refused_upgrade_closes_the_kernel_side(
    api: ApiCall, jp_ws_fetch: Any, foreign_page_headers: dict[str, str]
) -> None:
    """A cookie login from another site gets 403, and the relay's own connection is closed."""
    opened: list[int] = []
    ended = asyncio.Event()

    async def kernel_side(ws: ServerConnection) -> None:
        opened.append(1)
        await ws.wait_closed()
        ended.set()

    async with serve(kernel_side, "127.0.0.1", 0) as fake_kernel_server:
        port = fake_kernel_server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        await announce(api, "k1", url)
        with pytest.raises(HTTPClientError) as refused:
            await jp_ws_fetch(
                "autosync", "relay", params={"server": url}, headers=foreign_page_headers
            )
        assert refused.value.code == 403
        assert opened == [1]  # checked after connecting, as tornado does
        await asyncio.wait_for(ended.wait(), 5)


async def test_both_websockets_send_without_nagle_delay(
    api: ApiCall,
    kernel_server: SyncServer,
    relay_url: RelayUrl,
    ws_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TCP_NODELAY on the hub's and the relay's sockets (with Nagle: ~40 ms per reply)."""
    calls: list[tuple[str, bool]] = []
    original = AuthorizedWebSocketHandler.set_nodelay

    def record(self: AuthorizedWebSocketHandler, value: bool) -> None:
        calls.append((type(self).__name__, value))
        original(self, value)

    monkeypatch.setattr(AuthorizedWebSocketHandler, "set_nodelay", record)
    await announce(api, "k1", kernel_server.url)
    for url in (ws_url, relay_url(kernel_server.url)):
        async with ws_connect(url) as ws:
            await ws.ping()
    assert calls == [("SyncWebSocketHandler", True), ("KernelServerRelayHandler", True)]


def test_only_loopback_ws_urls_are_relayable() -> None:
    assert relayable("ws://127.0.0.1:1") and relayable("ws://[::1]:3")
    assert relayable("ws://127.0.0.1:4/sync")
    for url in (
        "ws://127.0.0.1",
        "ws://localhost:2",  # a name may resolve anywhere
        "ws://127.0.0.2:1",
        "wss://localhost:1",
        "ws://[::1]:x",
        "ws://",
        "ws://127.0.0.1:5/x?y=1",
        "ws://127.0.0.1:6/../admin",
    ):
        assert not relayable(url), url
