"""Interactive login (`get_token`, `get_token_device`) against a real local OIDC provider."""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from autosync_jupyter import SyncServer, fetch
from autosync_jupyter.auth.login import (
    get_token,
    get_token_blocking,
    get_token_device,
    get_token_device_blocking,
)
from autosync_jupyter.auth.oidc import AuthConfig
from autosync_jupyter.auth.tls import (
    client_ssl_context,
    make_self_signed_certificate,
    server_ssl_context,
)
from autosync_jupyter.errors import AuthError
from tests.oidc_provider import CLIENT_ID, OIDCProvider

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def browser(url: str) -> None:
    """The "browser": GET the authorize URL and follow its redirect to the loopback listener."""
    with _NO_PROXY.open(url, timeout=10) as response:
        assert response.status == 200
        assert b"close this tab" in response.read()


def forged_redirect(**params: str) -> Callable[[str], None]:
    """A "browser" that skips the provider and hits the loopback redirect with ``params``."""

    def open_browser(url: str) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        with _NO_PROXY.open(f"{query['redirect_uri']}?{urllib.parse.urlencode(params)}") as r:
            r.read()

    return open_browser


async def test_pkce_flow_returns_a_valid_id_token(
    provider: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Authorize (auto-consent) → loopback redirect → code exchange → a token the server accepts."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def open_browser(url: str) -> None:
        seen.append(url)
        browser(url)

    token = await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=open_browser)
    claims = await AuthConfig(CLIENT_ID, provider.issuer).authenticate(token)
    assert claims["email"] == "alice@company.com"
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen[0]).query))
    assert query["code_challenge_method"] == "S256" and query["scope"] == "openid email"
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    assert all(token not in r.getMessage() for r in caplog.records)


async def test_cached_token_is_reused(provider: OIDCProvider) -> None:
    """A second call returns the same unexpired token without a second authorize."""
    first = await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=browser)
    second = await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=browser)
    assert first == second
    assert provider.authorize_hits == 1 and provider.token_hits == 1


async def test_wrong_state_is_refused(provider: OIDCProvider) -> None:
    """A redirect whose state is not ours is refused (CSRF protection)."""
    forged = forged_redirect(code="stolen", state="not-ours")
    with pytest.raises(AuthError, match="State mismatch"):
        await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=forged)
    assert provider.token_hits == 0


async def test_provider_error_redirect_is_refused(provider: OIDCProvider) -> None:
    """The provider redirecting with error=access_denied gives a clear AuthError."""
    provider.consent = False
    with pytest.raises(AuthError, match="error=access_denied"):
        await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=browser)


async def test_no_redirect_times_out(provider: OIDCProvider) -> None:
    """Without a redirect, get_token gives up after its timeout."""
    with pytest.raises(AuthError, match="Timed out"):
        await get_token(
            CLIENT_ID, issuer=provider.issuer, open_browser=lambda url: None, timeout=0.2
        )


async def test_client_secret_is_required_and_sent(provider: OIDCProvider) -> None:
    """A client with a secret: without it the token endpoint refuses, with it a token comes."""
    provider.add_client("desktop-client", "not-so-secret")
    with pytest.raises(AuthError, match="Token endpoint failure: error=invalid_client"):
        await get_token("desktop-client", issuer=provider.issuer, open_browser=browser)
    token = await get_token(
        "desktop-client",
        issuer=provider.issuer,
        client_secret="not-so-secret",
        open_browser=browser,
    )
    assert (await AuthConfig("desktop-client", provider.issuer).authenticate(token))["sub"]


async def test_device_flow_approved(provider: OIDCProvider) -> None:
    """Device flow: the code is shown, approved elsewhere, and the poll yields a token."""
    shown: list[tuple[str, str]] = []

    def show(uri: str, user_code: str) -> None:
        shown.append((uri, user_code))
        threading.Timer(0.2, provider.approve_device, args=(user_code,)).start()

    token = await get_token_device(CLIENT_ID, issuer=provider.issuer, show=show, timeout=10)
    assert shown[0][0] == provider.issuer + "/device"
    assert (await AuthConfig(CLIENT_ID, provider.issuer).authenticate(token))["sub"] == "user-1"
    assert provider.token_hits >= 2  # at least one authorization_pending first


async def test_device_flow_denied(provider: OIDCProvider) -> None:
    """The user refusing the device sign-in gives an AuthError."""

    def show(uri: str, user_code: str) -> None:
        threading.Timer(
            0.1, provider.approve_device, args=(user_code,), kwargs={"approve": False}
        ).start()

    with pytest.raises(AuthError, match="access_denied"):
        await get_token_device(CLIENT_ID, issuer=provider.issuer, show=show, timeout=10)


async def test_device_flow_times_out(provider: OIDCProvider) -> None:
    """Nobody approving: the poll gives up at the timeout."""
    with pytest.raises(AuthError, match="Timed out"):
        await get_token_device(
            CLIENT_ID, issuer=provider.issuer, show=lambda u, c: None, timeout=0.3
        )


async def test_blocking_twins_refuse_a_running_loop() -> None:
    """Inside an event loop the blocking twins say what to use instead."""
    with pytest.raises(RuntimeError, match="await get_token"):
        get_token_blocking(CLIENT_ID)
    with pytest.raises(RuntimeError, match="await get_token_device"):
        get_token_device_blocking(CLIENT_ID)


def test_blocking_twin_returns_a_token(provider: OIDCProvider) -> None:
    """Outside a loop, get_token_blocking runs the flow."""
    token = get_token_blocking(CLIENT_ID, issuer=provider.issuer, open_browser=browser)
    assert token.count(".") == 2


async def test_end_to_end_get_token_then_fetch_over_wss(
    provider: OIDCProvider, tmp_path: Path
) -> None:
    """get_token() → token → fetch from a wss:// server with auth → the document."""
    tls = make_self_signed_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    auth = AuthConfig(CLIENT_ID, provider.issuer)
    async with SyncServer(port=0, data_dir=None, ssl=server_ssl_context(*tls), auth=auth) as srv:
        doc_id = await srv.create_document({"title": "hello"})
        token = await get_token(CLIENT_ID, issuer=provider.issuer, open_browser=browser)
        doc = await asyncio.wait_for(
            fetch(srv.url, doc_id, token=token, ssl=client_ssl_context(tls[0])), 10
        )
        assert srv.url.startswith("wss://")
        assert doc.to_py() == {"title": "hello"}
