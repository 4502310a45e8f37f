"""`LoginWidget`: a "Sign in" button for OIDC, in a notebook.

>>> login = LoginWidget("my-client-id", issuer="https://accounts.google.com")  # doctest: +SKIP
>>> login                                          # click "Sign in"  # doctest: +SKIP
>>> token = await login.wait()                     # doctest: +SKIP

The button opens a popup in its click handler (so popup blockers let it
through), and the kernel runs the Authorization Code flow with PKCE
(:func:`~autosync_jupyter.get_token`), sending the popup to the
provider. The redirect comes back to a listener on the kernel's
``127.0.0.1``, so that flow needs the browser to run on the kernel's
machine. Elsewhere (JupyterHub, a remote server) the provider redirects
the popup to the Jupyter server extension's callback page
(``{base_url}autosync/oidc/callback``, to be registered with the OAuth
client), which hands the redirect back to this page and so to the kernel
(:func:`~autosync_jupyter.get_token_with_redirect`). Without that
page, with ``flow="device"``, or when the popup was blocked, the widget
runs the device flow (:func:`~autosync_jupyter.get_token_device`) and
shows the address to open and the code to type there.

The token stays in the kernel: it is never sent to the front end.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import anywidget
import traitlets

from ..auth.login import clear_token_cache, get_token, get_token_device, get_token_with_redirect
from ..errors import AuthError, AutosyncError, SyncTimeout
from .live_view import STATIC, in_loop_thread, running_loop

__all__ = ["LoginFlow", "LoginWidget", "unverified_claims"]

logger = logging.getLogger("autosync_jupyter.jupyter.login_widget")

#: ``"auto"``: PKCE with a loopback redirect when the browser runs on the
#: kernel's machine; else PKCE through the Jupyter server's callback page
#: when the server extension serves one; else the device flow.
#: ``"browser"``: always the loopback redirect; ``"callback"``: always the
#: callback page (its URL must be registered with the OAuth client);
#: ``"device"``: always the device flow.
LoginFlow = Literal["auto", "browser", "callback", "device"]
_FLOWS = ("auto", "browser", "callback", "device")
_Method = Literal["loopback", "callback", "device"]
_REDIRECT_KEYS = ("code", "state", "error", "error_description")


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded WITHOUT checking its signature: for display only.

    Never base a decision on these claims; the server verifies the token.

    >>> unverified_claims("e30.eyJzdWIiOiAiYSJ9.c")
    {'sub': 'a'}
    >>> unverified_claims("not a token")
    {}
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


class LoginWidget(anywidget.AnyWidget):
    """A "Sign in" button that gets an OIDC ID token for this kernel.

    Args:
        client_id: the OAuth client (default ``$OIDC_CLIENT_ID``).
        issuer: the OIDC provider (default ``$OIDC_ISSUER``, then Google).
        client_secret: for clients that have one (not confidential for
            desktop-type clients).
        scopes: the requested scopes.
        flow: ``"auto"`` (PKCE in a popup: redirected to the kernel's
            loopback when the browser runs on the kernel's machine, else to
            the Jupyter server extension's callback page; the device flow
            when neither can work), ``"browser"``, ``"callback"`` or
            ``"device"`` (see :data:`LoginFlow`).
        timeout: seconds a sign-in may take before it fails.

    Synced to the front end (never the token): ``status``
    (``"signed-out"``, ``"waiting"``, ``"signed-in"`` or ``"error"``),
    ``who`` (the email, else the subject, of the signed-in user),
    ``message``, ``user_code`` and ``verification_uri`` (device flow) and
    ``issuer``.

    Raises:
        ValueError: ``flow`` is not one of the three.
        AutosyncError: created outside a running event loop.
    """

    _esm = STATIC / "login.js"
    _css = STATIC / "widgets.css"

    status = traitlets.Unicode("signed-out").tag(sync=True)
    who = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    user_code = traitlets.Unicode("").tag(sync=True)
    verification_uri = traitlets.Unicode("").tag(sync=True)
    issuer = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        client_id: str | None = None,
        *,
        issuer: str | None = None,
        client_secret: str | None = None,
        scopes: Iterable[str] = ("openid", "email"),
        flow: LoginFlow = "auto",
        timeout: float = 300.0,
    ) -> None:
        if flow not in _FLOWS:
            raise ValueError(f"flow is one of {', '.join(map(repr, _FLOWS))}, not {flow!r}")
        loop = running_loop("LoginWidget")
        super().__init__()
        self._loop = loop
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = tuple(scopes)
        self.flow: LoginFlow = flow
        self.timeout = timeout
        self.issuer = issuer or ""
        self._token: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._redirect: asyncio.Future[dict[str, str]] | None = None
        self._callbacks: list[Callable[[str], object]] = []
        self._waiters: list[asyncio.Future[str]] = []
        self.on_msg(in_loop_thread(loop, self._on_msg))

    # -- Python API --------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The ID token once signed in (pass it as ``token=`` to ``connect``), else None."""
        return self._token

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, unverified: for display only (empty when signed out)."""
        return unverified_claims(self._token) if self._token else {}

    def on_login(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(token)`` after each successful sign-in; returns a remover."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def wait(self, timeout: float | None = None) -> str:
        """Return the token, waiting for a sign-in if there is none yet.

        A failed attempt does not end the wait: the widget shows the error
        and the user can try again.

        Raises:
            SyncTimeout: nobody signed in within ``timeout`` seconds.
        """
        if self._token is not None:
            return self._token
        waiter: asyncio.Future[str] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise SyncTimeout(f"nobody signed in within {timeout:g} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def sign_in(self, *, loopback: bool = True, popup: bool = False) -> asyncio.Task[None]:
        """Start a sign-in from Python, as the button does; returns its task.

        Without a popup of the front end the browser flow cannot show the
        provider's page, so ``flow="auto"`` runs the device flow here.
        """
        return self._start(loopback=loopback, popup=popup)

    def sign_out(self) -> None:
        """Forget the token (and every cached token of this process)."""
        self._cancel()
        clear_token_cache()
        self._token = None
        with self.hold_sync():
            self.status = "signed-out"
            self.who = ""
            self.message = ""
            self.user_code = ""
            self.verification_uri = ""
        self.send({"type": "done"})

    def __repr__(self) -> str:
        where = self.issuer or "the default issuer"
        if self.status == "signed-in":
            return f"<LoginWidget signed in as {self.who} at {where}>"
        detail = f": {self.message}" if self.message else ""
        return f"<LoginWidget {self.status} ({where}){detail}>"

    # -- front end ---------------------------------------------------------------------

    def _on_msg(self, widget: Any, content: Any, buffers: list[bytes]) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "start":
            callback = content.get("callback")
            self._start(
                loopback=bool(content.get("loopback")),
                popup=bool(content.get("popup")),
                callback=callback if isinstance(callback, str) else None,
            )
        elif kind == "redirect":
            self._relay_redirect(content.get("params"))
        elif kind == "cancel":
            self._cancel()
            with self.hold_sync():
                self.status = "signed-out" if self._token is None else "signed-in"
                self.message = "sign-in cancelled"
        elif kind == "sign-out":
            self.sign_out()
        else:
            logger.debug("ignoring a front-end message of type %r", kind)

    def _method(self, loopback: bool, popup: bool, callback: str | None) -> _Method:
        if self.flow == "device":
            return "device"
        if self.flow == "browser":
            return "loopback"
        if self.flow == "callback":
            return "callback"
        if loopback and popup:
            return "loopback"
        if popup and callback:
            return "callback"
        return "device"

    def _start(
        self, *, loopback: bool, popup: bool, callback: str | None = None
    ) -> asyncio.Task[None]:
        self._cancel()
        method = self._method(loopback, popup, callback)
        with self.hold_sync():
            self.status = "waiting"
            self.user_code = ""
            self.verification_uri = ""
            self.message = (
                "waiting for the device code…"
                if method == "device"
                else "complete the sign-in in the popup…"
            )
        self._task = self._loop.create_task(self._sign_in(method, callback))
        return self._task

    def _relay_redirect(self, params: Any) -> None:
        # The callback page's query, relayed by the front end. Only strings of
        # the known keys pass; `state` is checked by the flow itself.
        if self._redirect is None or self._redirect.done() or not isinstance(params, dict):
            return
        clean = {k: v for k, v in params.items() if k in _REDIRECT_KEYS and isinstance(v, str)}
        self._redirect.set_result(clean)

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def _sign_in(self, method: _Method, callback: str | None) -> None:
        options: dict[str, Any] = {
            "issuer": self.issuer or None,
            "client_secret": self.client_secret,
            "scopes": self.scopes,
            "timeout": self.timeout,
        }
        try:
            if method == "device":
                token = await get_token_device(self.client_id, show=self._show_code, **options)
            elif method == "loopback":
                token = await get_token(self.client_id, open_browser=self._open_in_popup, **options)
            else:
                if not callback:
                    raise AutosyncError(
                        "no sign-in callback page: the autosync_jupyter server extension is "
                        "not enabled on this Jupyter server (use flow='device')"
                    )
                self._redirect = self._loop.create_future()
                token = await get_token_with_redirect(
                    callback,
                    self._redirect,
                    self.client_id,
                    open_browser=self._open_in_popup,
                    **options,
                )
        except asyncio.CancelledError:
            raise
        except (AuthError, ValueError, OSError, AutosyncError) as exc:
            logger.info("sign-in failed: %s", exc)
            with self.hold_sync():
                self.status = "error"
                self.message = str(exc)
            self.send({"type": "done"})
            return
        self._signed_in(token)

    def _open_in_popup(self, url: str) -> None:
        # get_token calls this in a worker thread; widgets belong to the loop's.
        self._loop.call_soon_threadsafe(self.send, {"type": "navigate", "url": url})

    def _show_code(self, verification_uri: str, user_code: str) -> None:
        with self.hold_sync():
            self.verification_uri = verification_uri
            self.user_code = user_code
            self.message = "open the address and enter the code to sign in"
        self.send({"type": "navigate", "url": verification_uri, "device": True})

    def _signed_in(self, token: str) -> None:
        self._token = token
        claims = unverified_claims(token)
        who = claims.get("email") or claims.get("sub") or "(unknown user)"
        with self.hold_sync():
            self.status = "signed-in"
            self.who = str(who)
            self.message = ""
            self.user_code = ""
            self.verification_uri = ""
            if not self.issuer and isinstance(claims.get("iss"), str):
                self.issuer = claims["iss"]
        self.send({"type": "done"})
        logger.debug("signed in as %s", who)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(token)
        for callback in list(self._callbacks):
            try:
                callback(token)
            except Exception:
                logger.exception("an on_login callback failed")
