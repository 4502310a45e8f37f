"""Fixtures for the server extension tests: a real Jupyter server from pytest-jupyter.

pytest-jupyter is not loaded as a plugin for the whole suite (its hooks would
take over every async test); its fixtures are brought in here only. Its
fixtures drive the server with ``jp_asyncio_loop.run_until_complete`` while
pytest-asyncio runs the test coroutines in its own loop: the override of
``jp_asyncio_loop`` below makes them one loop, so the server the fixtures
start is the one the test talks to.

Fixtures:

- ``jp_server_config``: a server with only this extension enabled.
- ``autosync_ext``: the running :class:`AutosyncExtension` (its hub started).
- ``token``: the server's token; ``ws_url``: the sync route's ``ws://`` URL
  with ``?token=``; ``api``: JSON calls on ``autosync/api/...``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_jupyter.jupyter_core as _core_plugin
import pytest_jupyter.jupyter_server as _server_plugin
import pytest_jupyter.pytest_tornasync as _tornasync_plugin
from tornado.httpclient import HTTPClientError, HTTPResponse
from traitlets.config import Config
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from autosync_jupyter.jupyter.discovery import SECRET_HEADER
from autosync_jupyter.serverext import AutosyncExtension

# The plugin's fixtures (not its hooks): jp_serverapp, jp_fetch, jp_ws_fetch, ...
for _plugin in (_core_plugin, _tornasync_plugin, _server_plugin):
    globals().update(
        {
            name: value
            for name, value in vars(_plugin).items()
            if name.startswith(("jp_", "http_server", "io_loop", "echo_kernel_spec"))
        }
    )


@pytest.fixture
async def jp_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """pytest-asyncio's loop, for pytest-jupyter's fixtures (not closed by them)."""
    yield asyncio.get_running_loop()


@pytest.fixture
def jp_server_config() -> Config:
    """A Jupyter server with this extension enabled (and nothing else)."""
    return Config({"ServerApp": {"jpserver_extensions": {"autosync_jupyter": True}}})


@pytest.fixture
def autosync_ext(jp_serverapp: Any) -> AutosyncExtension:
    """The extension instance the server loaded."""
    ext = jp_serverapp.web_app.settings["autosync_jupyter"]
    assert isinstance(ext, AutosyncExtension)
    return ext


@pytest.fixture
def token(jp_serverapp: Any) -> str:
    """The Jupyter server's token."""
    value = jp_serverapp.identity_provider.token
    assert isinstance(value, str) and value
    return value


@pytest.fixture
def ws_url(http_server: Any, jp_http_port: int, jp_base_url: str, token: str) -> str:
    """``ws://127.0.0.1:<port>{base_url}autosync/ws?token=<token>`` (the server listening)."""
    return f"ws://127.0.0.1:{jp_http_port}{jp_base_url}autosync/ws?token={token}"


ApiCall = Callable[..., Awaitable[tuple[int, Any]]]


async def upgrade_status(url: str) -> int:
    """101 when a WebSocket upgrade at ``url`` is accepted, else the HTTP status answered."""
    try:
        async with ws_connect(url, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture
def kernel_headers(autosync_ext: AutosyncExtension) -> dict[str, str]:
    """The header with which kernels of this server announce theirs (the secret they inherit)."""
    return {SECRET_HEADER: autosync_ext.kernel_secret}


@pytest.fixture
def api(jp_fetch: Any) -> ApiCall:
    """``await api("documents", method="POST", body=...)`` → (status, parsed JSON body).

    HTTP errors are returned, not raised, so tests can look at 4xx answers.
    """

    async def call(*parts: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            response: HTTPResponse = await jp_fetch("autosync", "api", *parts, **kwargs)
        except HTTPClientError as exc:
            assert exc.response is not None
            response = exc.response
        text = response.body.decode("utf-8") if response.body else ""
        body = json.loads(text) if text else None
        return response.code, body

    return call


@pytest.fixture
async def login_cookie(jp_fetch: Any, token: str) -> str:
    """Jupyter's login cookie (``username-...=...``), as a browser holds it after sign-in.

    Jupyter sets it when a page is opened with ``?token=``; requests that
    carry only the cookie are "cookie-authenticated": Origin and XSRF checks apply.
    """
    response = await jp_fetch(
        "api", "status", params={"token": token}, headers={"Authorization": ""}
    )
    cookies = [c.split(";", 1)[0] for c in response.headers.get_list("Set-Cookie")]
    login = [c for c in cookies if c.startswith("username-")]
    assert login, f"no login cookie in {cookies}"
    return login[0]


@pytest.fixture
def foreign_page_headers(login_cookie: str, jp_http_port: int) -> dict[str, str]:
    """Headers of a signed-in browser's request made by a page of another site.

    The cookie is named after the host it was set for (127.0.0.1:<port>).
    """
    return {
        "Authorization": "",
        "Cookie": login_cookie,
        "Host": f"127.0.0.1:{jp_http_port}",
        "Origin": "http://evil.example",
    }
