"""Interactive OIDC login for clients: get an ID token to present to a server.

:func:`get_token` runs the Authorization Code flow with PKCE (S256) and a
loopback redirect on a random port of ``127.0.0.1`` (RFC 8252): it opens the
provider's authorization page in a browser, waits for the redirect on a tiny
local HTTP listener, checks ``state``, exchanges the code at the token
endpoint and returns the ``id_token``. :func:`get_token_device` runs the
device authorization grant (RFC 8628) for places where no browser can reach
a loopback port (a remote kernel): the user opens a URL elsewhere and types
a short code. Both find the endpoints through the issuer's discovery
document and share an in-memory cache of unexpired tokens.

Tokens and authorization codes are never logged.

>>> _unverified_exp("a.eyJleHAiOjEyM30.c")
123.0
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from ..errors import AuthError
from ..nesting import run_blocking
from .oidc import DEFAULT_ISSUER, _get_json

__all__ = [
    "clear_token_cache",
    "get_token",
    "get_token_blocking",
    "get_token_device",
    "get_token_device_blocking",
    "get_token_with_redirect",
]

logger = logging.getLogger("autosync_jupyter.login")

#: Seconds before ``exp`` at which a cached token is no longer reused.
CACHE_MARGIN = 60.0
_HTTP_TIMEOUT = 10.0
_MAX_HTTP_BODY = 1 << 20
_MAX_REQUEST_HEAD = 16 * 1024

_CLOSE_TAB_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    "<body style='font-family: sans-serif'><h1>{title}</h1>"
    "<p>You can close this tab and return to your notebook.</p></body></html>"
)

_CacheKey = tuple[str, str, tuple[str, ...]]
_cache: dict[_CacheKey, tuple[str, float]] = {}


def clear_token_cache() -> None:
    """Forget every cached token."""
    _cache.clear()


def _unverified_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (cache bookkeeping only)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp)
    return None


def _settings(
    client_id: str | None, issuer: str | None, scopes: Iterable[str]
) -> tuple[str, str, tuple[str, ...]]:
    client_id = client_id or os.environ.get("OIDC_CLIENT_ID")
    if not client_id:
        raise ValueError("get_token needs a client_id (or the OIDC_CLIENT_ID variable)")
    issuer = issuer or os.environ.get("OIDC_ISSUER") or DEFAULT_ISSUER
    return client_id, issuer, tuple(scopes)


def _cached(key: _CacheKey) -> str | None:
    entry = _cache.get(key)
    if entry is None:
        return None
    token, exp = entry
    if exp - CACHE_MARGIN > time.time():
        logger.debug("reusing the cached ID token for %s", key[0])
        return token
    del _cache[key]
    return None


def _remember(key: _CacheKey, token: str) -> None:
    exp = _unverified_exp(token)
    if exp is not None:
        _cache[key] = (token, exp)


async def _discover(issuer: str) -> Mapping[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        document, _ = await asyncio.to_thread(_get_json, url, _HTTP_TIMEOUT)
    except (OSError, ValueError) as exc:
        raise AuthError(f"Cannot load the discovery document of {issuer}: {exc}") from None
    if not isinstance(document, Mapping):
        raise AuthError(f"The discovery document of {issuer} is not a JSON object")
    return document


def _endpoint(document: Mapping[str, Any], name: str, issuer: str) -> str:
    url = document.get(name)
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise AuthError(f"The discovery document of {issuer} names no {name}")
    return url


def _post_form_sync(url: str, form: Mapping[str, str]) -> tuple[int, Any]:
    """POST a form (blocking); return the status and the JSON body (None if not JSON)."""
    data = urllib.parse.urlencode(form).encode("ascii")
    request = urllib.request.Request(
        url,
        data=data,
        headers={
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:
            status, body = response.status, response.read(_MAX_HTTP_BODY + 1)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(_MAX_HTTP_BODY + 1)
        error.close()
    try:
        return status, json.loads(body) if len(body) <= _MAX_HTTP_BODY else None
    except ValueError:
        return status, None


async def _post_form(url: str, form: Mapping[str, str]) -> tuple[int, Any]:
    try:
        return await asyncio.to_thread(_post_form_sync, url, form)
    except OSError as exc:
        raise AuthError(f"Token endpoint failure: {exc}") from None


def _client_form(client_id: str, client_secret: str | None) -> dict[str, str]:
    form = {"client_id": client_id}
    if client_secret is not None:
        form["client_secret"] = client_secret
    return form


def _id_token_of(status: int, body: Any) -> str:
    if status == 200 and isinstance(body, dict):
        token = body.get("id_token")
        if isinstance(token, str) and token:
            return token
        raise AuthError("Token endpoint failure: the response has no id_token")
    error = body.get("error") if isinstance(body, dict) else None
    detail = body.get("error_description") if isinstance(body, dict) else None
    reason = f"error={error}" if error else f"HTTP {status}"
    raise AuthError(f"Token endpoint failure: {reason}{f' ({detail})' if detail else ''}")


# -- Authorization Code + PKCE with a loopback redirect ----------------------


class _Redirect:
    """A one-shot HTTP listener on 127.0.0.1 that receives the redirect's query."""

    def __init__(self) -> None:
        self.result: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self.server: asyncio.Server | None = None
        self.uri = ""

    async def __aenter__(self) -> _Redirect:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.uri = f"http://127.0.0.1:{port}/callback"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > _MAX_REQUEST_HEAD:
                raise ValueError("request head too long")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            target = urllib.parse.urlsplit(parts[1]) if len(parts) == 3 else None
            if parts[0] != "GET" or target is None or target.path != "/callback":
                await self._reply(writer, "404 Not Found", "Not found")
                return
            query = dict(urllib.parse.parse_qsl(target.query, keep_blank_values=True))
            if "code" not in query and "error" not in query:
                await self._reply(writer, "400 Bad Request", "Unexpected request")
                return
            failed = "error" in query
            title = "Sign-in failed" if failed else "Signed in"
            await self._reply(writer, "200 OK", title)
            if not self.result.done():
                self.result.set_result(query)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.TimeoutError:
            pass
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: str, title: str) -> None:
        body = _CLOSE_TAB_PAGE.format(title=title).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
            + body
        )
        await writer.drain()


async def get_token(
    client_id: str | None = None,
    *,
    issuer: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] = ("openid", "email"),
    open_browser: Callable[[str], object] | None = None,
    timeout: float = 300.0,
) -> str:
    """Sign in through the browser and return an OIDC ID token.

    Runs the Authorization Code flow with PKCE (S256), the redirect coming
    back to a listener on a random port of ``127.0.0.1``. An unexpired token
    obtained earlier for the same issuer, client and scopes is reused.

    Args:
        client_id: the OAuth client; defaults to ``$OIDC_CLIENT_ID``.
        issuer: defaults to ``$OIDC_ISSUER``, then ``https://accounts.google.com``.
        client_secret: for clients that have one (Google "Desktop app"
            clients, whose secret is not confidential).
        scopes: the requested scopes.
        open_browser: called with the authorization URL; defaults to
            :func:`webbrowser.open`.
        timeout: seconds to wait for the redirect.

    Raises:
        AuthError: the provider refused, ``state`` did not match, no redirect
            came within ``timeout``, or the token endpoint failed.
        ValueError: no client id was given and ``$OIDC_CLIENT_ID`` is unset.
    """
    client_id, issuer, scope_list = _settings(client_id, issuer, scopes)
    cached = _cached((issuer, client_id, scope_list))
    if cached is not None:
        return cached
    async with _Redirect() as redirect:
        return await get_token_with_redirect(
            redirect.uri,
            redirect.result,
            client_id,
            issuer=issuer,
            client_secret=client_secret,
            scopes=scope_list,
            open_browser=open_browser,
            timeout=timeout,
        )


async def get_token_with_redirect(
    redirect_uri: str,
    redirect: asyncio.Future[dict[str, str]],
    client_id: str | None = None,
    *,
    issuer: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] = ("openid", "email"),
    open_browser: Callable[[str], object] | None = None,
    timeout: float = 300.0,
) -> str:
    """The flow of :func:`get_token` with a redirect page served by someone else.

    For browsers that cannot reach this machine's loopback (a remote
    kernel): the provider redirects to ``redirect_uri`` (the Jupyter server
    extension's ``{base_url}autosync/oidc/callback``, registered with the
    OAuth client), and whoever receives that redirect resolves ``redirect``
    with its query parameters (the login widget relays them from the
    callback page). ``state`` is checked and the code exchanged with the
    PKCE verifier here, so the relay never sees a token.

    Raises:
        AuthError: as :func:`get_token`.
    """
    client_id, issuer, scope_list = _settings(client_id, issuer, scopes)
    key = (issuer, client_id, scope_list)
    cached = _cached(key)
    if cached is not None:
        return cached
    document = await _discover(issuer)
    authorization_endpoint = _endpoint(document, "authorization_endpoint", issuer)
    token_endpoint = _endpoint(document, "token_endpoint", issuer)

    state = generate_token(32)
    verifier = generate_token(64)
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scope_list),
            "state": state,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if "?" in authorization_endpoint else "?"
    url = f"{authorization_endpoint}{separator}{query}"
    logger.info("opening the sign-in page of %s", issuer)
    opener = open_browser if open_browser is not None else webbrowser.open
    await asyncio.to_thread(opener, url)
    try:
        params = await asyncio.wait_for(asyncio.shield(redirect), timeout)
    except asyncio.TimeoutError:
        raise AuthError(f"Timed out after {timeout:g} s waiting for the sign-in redirect") from None

    if "error" in params:
        detail = params.get("error_description")
        raise AuthError(
            f"The provider returned error={params['error']}{f' ({detail})' if detail else ''}"
        )
    if params.get("state") != state:
        raise AuthError("State mismatch in the sign-in redirect")
    code = params.get("code")
    if not code:
        raise AuthError("The sign-in redirect carries no code")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        **_client_form(client_id, client_secret),
    }
    token = _id_token_of(*await _post_form(token_endpoint, form))
    _remember(key, token)
    logger.info("signed in with %s", issuer)
    return token


# -- Device authorization grant (RFC 8628) -----------------------------------


def _print_prompt(verification_uri: str, user_code: str) -> None:
    print(f"To sign in, open {verification_uri} and enter the code {user_code}", flush=True)


async def get_token_device(
    client_id: str | None = None,
    *,
    issuer: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] = ("openid", "email"),
    show: Callable[[str, str], object] = _print_prompt,
    timeout: float = 600.0,
) -> str:
    """Sign in with the device flow (RFC 8628) and return an OIDC ID token.

    ``show(verification_uri, user_code)`` tells the user where to go and what
    to type (by default, printed); the token endpoint is then polled every
    ``interval`` seconds (slowed down when the provider asks) until the user
    approves, refuses, the code expires or ``timeout`` passes. Shares the
    cache of :func:`get_token`.

    Raises:
        AuthError: the provider has no device endpoint or refused, the user
            denied access, the device code expired, or time ran out.
    """
    client_id, issuer, scope_list = _settings(client_id, issuer, scopes)
    key = (issuer, client_id, scope_list)
    cached = _cached(key)
    if cached is not None:
        return cached
    document = await _discover(issuer)
    device_endpoint = _endpoint(document, "device_authorization_endpoint", issuer)
    token_endpoint = _endpoint(document, "token_endpoint", issuer)

    client = _client_form(client_id, client_secret)
    status, body = await _post_form(device_endpoint, {**client, "scope": " ".join(scope_list)})
    if status != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise AuthError(f"Device authorization failed: {f'error={error}' if error else status}")
    device_code, user_code = body.get("device_code"), body.get("user_code")
    verification_uri = body.get("verification_uri") or body.get("verification_url")
    if not all(isinstance(v, str) and v for v in (device_code, user_code, verification_uri)):
        raise AuthError("Device authorization failed: incomplete response")
    interval = float(body.get("interval", 5))
    expires_in = float(body.get("expires_in", timeout))
    show(str(verification_uri), str(user_code))

    deadline = time.monotonic() + min(timeout, expires_in)
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": str(device_code),
        **client,
    }
    while True:
        status, body = await _post_form(token_endpoint, form)
        error = body.get("error") if isinstance(body, dict) and status != 200 else None
        if error == "authorization_pending":
            pass
        elif error == "slow_down":
            interval += 5
        elif error == "expired_token":
            raise AuthError("The device code expired before the sign-in was approved")
        elif error == "access_denied":
            raise AuthError("The provider returned error=access_denied")
        else:
            token = _id_token_of(status, body)
            _remember(key, token)
            logger.info("signed in with %s (device flow)", issuer)
            return token
        if time.monotonic() + interval >= deadline:
            raise AuthError("Timed out waiting for the device sign-in to be approved")
        await asyncio.sleep(interval)


# -- blocking twins -----------------------------------------------------------


def get_token_blocking(client_id: str | None = None, **options: Any) -> str:
    """Blocking twin of :func:`get_token`, for scripts.

    Raises:
        RuntimeError: called from async code outside a notebook cell.
    """
    return run_blocking(
        get_token(client_id, **options), name="get_token_blocking", alternative="await get_token()"
    )


def get_token_device_blocking(client_id: str | None = None, **options: Any) -> str:
    """Blocking twin of :func:`get_token_device`, for scripts.

    Raises:
        RuntimeError: called from async code outside a notebook cell.
    """
    return run_blocking(
        get_token_device(client_id, **options),
        name="get_token_device_blocking",
        alternative="await get_token_device()",
    )
