"""`SyncServer` with OIDC authentication, against a real local OIDC provider."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from autosync_jupyter import SyncServer
from autosync_jupyter.auth.oidc import AuthConfig
from autosync_jupyter.auth.tls import (
    client_ssl_context,
    make_self_signed_certificate,
    server_ssl_context,
)
from autosync_jupyter.core.hub import PeerInfo
from autosync_jupyter.core.protocol import Error, Join, Peer, decode, encode
from autosync_jupyter.ids import DocumentId, PeerId
from tests.oidc_provider import CLIENT_ID, OIDCProvider, running_provider


@pytest.fixture
def provider() -> Iterator[OIDCProvider]:
    with running_provider() as p:
        yield p


@pytest.fixture
def tls(tmp_path: Path) -> tuple[str, str]:
    return make_self_signed_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")


@pytest.fixture
async def server(provider: OIDCProvider, tls: tuple[str, str]) -> AsyncIterator[SyncServer]:
    auth = AuthConfig(CLIENT_ID, provider.issuer)
    async with SyncServer(port=0, data_dir=None, ssl=server_ssl_context(*tls), auth=auth) as srv:
        yield srv


async def join(url: str, tls: tuple[str, str] | None, **kwargs: Any) -> Any:
    """Open a connection, send `join`; return `peer`, or (first message, close code)."""
    ssl = client_ssl_context(tls[0]) if tls else None
    async with connect(url, ssl=ssl, **kwargs) as ws:
        received: list[Any] = []
        try:
            # A refused peer is told at once, before it could send its join.
            with contextlib.suppress(asyncio.TimeoutError):
                received.append(decode(await asyncio.wait_for(ws.recv(), 0.3)))
            if not received:
                await ws.send(encode(Join(PeerId("p"))))
                received.append(decode(await asyncio.wait_for(ws.recv(), 5)))
            if isinstance(received[0], Peer):
                return received[0]
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            return (received or [None])[0], closed.rcvd.code if closed.rcvd else None
        raise AssertionError(f"no close after {received}")


def test_auth_without_tls_is_refused_at_construction(provider: OIDCProvider) -> None:
    """Authentication over plain ws:// is refused unless the loopback-only escape hatch is set."""
    auth = AuthConfig(CLIENT_ID, provider.issuer)
    with pytest.raises(ValueError, match="TLS"):
        SyncServer(port=0, data_dir=None, auth=auth)
    with pytest.raises(ValueError, match="loopback"):
        SyncServer(host="0.0.0.0", port=0, data_dir=None, auth=auth, insecure_auth_on_loopback=True)
    SyncServer(port=0, data_dir=None, auth=auth, insecure_auth_on_loopback=True)


async def test_bearer_header_is_accepted(
    server: SyncServer, provider: OIDCProvider, tls: Any
) -> None:
    """A valid ID token in `Authorization: Bearer` gets `peer`."""
    headers = {"Authorization": f"Bearer {provider.mint()}"}
    assert isinstance(await join(server.url, tls, additional_headers=headers), Peer)


async def test_token_query_parameter_is_accepted_over_wss(
    server: SyncServer, provider: OIDCProvider, tls: Any
) -> None:
    """The browser channel: `?token=` on a wss:// URL gets `peer`."""
    assert isinstance(await join(f"{server.url}/?token={provider.mint()}", tls), Peer)


@pytest.mark.parametrize("case", ["none", "expired", "wrong audience", "garbage"])
async def test_failed_check_gets_error_and_1008_and_no_peer(
    server: SyncServer,
    provider: OIDCProvider,
    tls: Any,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missing or bad token: one `error` without targetId, close 1008, never a peer."""
    caplog.set_level(logging.DEBUG)
    tokens = {
        "none": None,
        "expired": provider.mint(provider.claims(exp=1, iat=0)),
        "wrong audience": provider.mint(provider.claims(aud="someone-else")),
        "garbage": "x" * 40,
    }
    token = tokens[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply, code = await join(server.url, tls, additional_headers=headers)
    assert isinstance(reply, Error) and reply.message == "Authentication failed"
    assert reply.target_id is None and code == 1008
    assert server.peers() == []
    if token:  # (the raw test client's own websockets logger is not ours)
        ours = [r for r in caplog.records if not r.name.startswith("websockets.client")]
        assert all(token not in r.getMessage() for r in ours)
    assert any("authentication failed" in r.getMessage() for r in caplog.records)


async def test_token_in_plain_ws_url_is_refused(provider: OIDCProvider, caplog: Any) -> None:
    """A token in the URL of a plain ws:// server is refused, and never logged."""
    caplog.set_level(logging.DEBUG)
    auth = AuthConfig(CLIENT_ID, provider.issuer)
    token = provider.mint()
    async with SyncServer(port=0, data_dir=None, auth=auth, insecure_auth_on_loopback=True) as srv:
        reply, code = await join(f"{srv.url}/?token={token}", None)
        assert isinstance(reply, Error) and code == 1008
        # The header channel still works on loopback in this test-only mode.
        headers = {"Authorization": f"Bearer {token}"}
        assert isinstance(await join(srv.url, None, additional_headers=headers), Peer)
    ours = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert ours and all(token not in r.getMessage() for r in ours)


async def test_policy_sees_the_authenticated_email(provider: OIDCProvider, tls: Any) -> None:
    """A share policy can let each user see only their own documents."""
    owners: dict[DocumentId, str] = {}

    def policy(peer: PeerInfo, doc_id: DocumentId) -> bool | None:
        owner = owners.get(doc_id)
        return None if owner is None or owner == peer.email else False

    auth = AuthConfig(CLIENT_ID, provider.issuer)
    async with SyncServer(
        port=0, data_dir=None, ssl=server_ssl_context(*tls), auth=auth, share=policy
    ) as srv:
        alice_doc = await srv.create_document({"owner": "alice"})
        owners[alice_doc] = "alice@company.com"
        from autosync_jupyter import fetch
        from autosync_jupyter.errors import DocumentUnavailable

        ssl = client_ssl_context(tls[0])
        alice = provider.mint()
        bob = provider.mint(provider.claims(email="bob@company.com", sub="user-2"))
        doc = await fetch(srv.url, alice_doc, token=alice, ssl=ssl)
        assert doc.to_py() == {"owner": "alice"}
        with pytest.raises(DocumentUnavailable):
            await fetch(srv.url, alice_doc, token=bob, ssl=ssl)
