"""The official JS client authenticating through the browser channel (`?token=`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jspeer import JSPeer

from autosync_jupyter import SyncServer
from autosync_jupyter.auth.oidc import AuthConfig
from autosync_jupyter.auth.tls import make_self_signed_certificate, server_ssl_context
from tests.oidc_provider import CLIENT_ID, running_provider


async def test_js_client_with_token_in_url_syncs_and_without_is_refused(tmp_path: Path) -> None:
    """JS peers with a valid `?token=` sync via an authenticated server; bad ones get no peer."""
    cert, key = make_self_signed_certificate(tmp_path / "c.pem", tmp_path / "k.pem")
    with running_provider() as provider:
        auth = AuthConfig(CLIENT_ID, provider.issuer)
        async with SyncServer(
            port=0, data_dir=tmp_path / "d", ssl=server_ssl_context(cert, key), auth=auth
        ) as server:
            good = f"{server.url}/?token={provider.mint()}"
            async with (
                JSPeer.start(good, ca_file=cert) as alice,
                JSPeer.start(good, ca_file=cert) as bob,
            ):
                doc_id = (await alice.create({"secret": 42}))["documentId"]
                await alice.wait_synced(doc_id)
                found = await bob.find(doc_id)
                assert found["doc"] == {"secret": 42}, found
                emails = {p.email for p in server.peers()}
                assert emails == {"alice@company.com"}
            bad = f"{server.url}/?token={provider.mint(provider.claims(aud='other'))}"
            async with JSPeer.start(bad, ca_file=cert, wait_connected=False) as eve:
                await asyncio.sleep(1.0)
                assert not eve.events_of("peer")
                assert server.peers() == []
