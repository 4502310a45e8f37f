"""A real, minimal OIDC provider on 127.0.0.1 for the authentication tests.

It serves discovery (``/.well-known/openid-configuration``) and the JWKS
(``/jwks``, with a configurable ``Cache-Control: max-age``) over HTTP from a
``ThreadingHTTPServer`` in a thread, counts the requests so tests can assert
caching and refresh behaviour, rotates keys, and mints ID tokens with
joserfc, including deliberately bad ones (``alg: none``, HS256 signed with a
public key, unknown ``kid``).

For the interactive login it also serves ``/authorize`` (auto-consent, PKCE
S256, loopback redirect URIs only), ``/token`` (authorization-code and
device-code grants, client secrets checked for clients that have one) and
``/device_authorization``; :meth:`OIDCProvider.approve_device` plays the user
approving (or denying) a device sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

__all__ = ["CLIENT_ID", "OIDCProvider", "running_provider"]

CLIENT_ID = "autosync-test-client"

_Key = RSAKey | ECKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class OIDCProvider:
    """An OIDC provider serving discovery and JWKS; start it with :meth:`start`."""

    def __init__(self, *, max_age: int = 3600) -> None:
        self.max_age = max_age
        self.keys: dict[str, _Key] = {}
        self.jwks_hits = 0
        self.discovery_hits = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.rsa_kid = self.add_key("RSA")
        self.ec_kid = self.add_key("EC")
        # Interactive login: registered clients (id -> secret or None), the
        # consent given by the auto-consent /authorize, issued codes and
        # device codes, and request counters.
        self.clients: dict[str, str | None] = {CLIENT_ID: None}
        self.consent = True
        self.device_interval = 0.05
        self.authorize_hits = 0
        self.token_hits = 0
        self.codes: dict[str, dict[str, Any]] = {}
        self.device_codes: dict[str, dict[str, Any]] = {}

    # -- keys -----------------------------------------------------------------

    def add_key(self, kty: str = "RSA", kid: str | None = None) -> str:
        """Publish a new signing key (``"RSA"`` or ``"EC"``) and return its kid."""
        kid = kid or f"{kty.lower()}-{len(self.keys) + 1}-{time.monotonic_ns()}"
        key: _Key
        if kty == "RSA":
            key = RSAKey.generate_key(2048, parameters={"kid": kid})
        else:
            key = ECKey.generate_key("P-256", parameters={"kid": kid})
        with self._lock:
            self.keys[kid] = key
        return kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing the key ``kid``."""
        with self._lock:
            del self.keys[kid]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document."""
        with self._lock:
            return {"keys": [key.as_dict(private=False) for key in self.keys.values()]}

    # -- tokens ---------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid default ID-token claims, with ``overrides`` (None removes a claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": "user-1",
            "email": "alice@company.com",
            "email_verified": True,
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        alg: str | None = None,
        key: _Key | OctKey | None = None,
    ) -> str:
        """Issue an ID token: ``claims`` (default :meth:`claims`), signed with
        the published key ``kid`` (default the RSA key) or with ``key``.

        ``alg="none"`` yields an unsigned token; ``alg="HS256"`` without a key
        signs with the *public* JWK of ``kid`` as an HMAC secret (the
        algorithm-confusion attack).
        """
        claims = self.claims() if claims is None else claims
        kid = self.rsa_kid if kid is None else kid
        published = self.keys.get(kid) or self.keys[self.rsa_kid]
        if alg == "none":
            header = {"alg": "none", "kid": kid, "typ": "JWT"}
            return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
        if alg == "HS256" and key is None:
            key = OctKey.import_key(json.dumps(published.as_dict(private=False)).encode())
        if key is None:
            key = published
        if alg is None:
            alg = "ES256" if isinstance(key, ECKey) else "RS256"
        header = {"alg": alg, "kid": kid} if kid else {"alg": alg}
        return jwt.encode(header, claims, key, algorithms=[alg])

    # -- interactive login ----------------------------------------------------

    def add_client(self, client_id: str, secret: str | None = None) -> None:
        """Register an OAuth client, confidential when ``secret`` is given."""
        with self._lock:
            self.clients[client_id] = secret

    def approve_device(self, user_code: str, *, approve: bool = True) -> None:
        """Approve (or, with ``approve=False``, deny) the device sign-in ``user_code``."""
        with self._lock:
            for entry in self.device_codes.values():
                if entry["user_code"] == user_code:
                    entry["status"] = "approved" if approve else "denied"
                    return
        raise KeyError(user_code)

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        """Auto-consent: a redirect URL (status 302) or a JSON error (400)."""
        with self._lock:
            self.authorize_hits += 1
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        target = urllib.parse.urlsplit(redirect_uri)
        if client_id not in self.clients:
            return 400, {"error": "invalid_client"}
        if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost", "::1"):
            return 400, {"error": "invalid_request", "error_description": "redirect_uri"}
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, {"error": "invalid_request"}
        reply: dict[str, str] = {"state": query.get("state", "")}
        if not self.consent:
            reply["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self.codes[code] = {
                    "client_id": client_id,
                    "redirect_uri": redirect_uri,
                    "challenge": query.get("code_challenge", ""),
                }
            reply["code"] = code
        return 302, f"{redirect_uri}?{urllib.parse.urlencode(reply)}"

    def _client_ok(self, form: dict[str, str]) -> bool:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            return False
        secret = self.clients[client_id]
        return secret is None or form.get("client_secret") == secret

    def _issue(self, client_id: str) -> dict[str, Any]:
        return {
            "id_token": self.mint(self.claims(aud=client_id)),
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
        }

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_hits += 1
        if not self._client_ok(form):
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with self._lock:
                entry = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "").encode("ascii")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
            if (
                entry is None
                or entry["client_id"] != form.get("client_id")
                or entry["redirect_uri"] != form.get("redirect_uri")
                or challenge.rstrip(b"=").decode() != entry["challenge"]
            ):
                return 400, {"error": "invalid_grant"}
            return 200, self._issue(entry["client_id"])
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            with self._lock:
                device = self.device_codes.get(form.get("device_code", ""))
                if device is None or device["client_id"] != form.get("client_id"):
                    return 400, {"error": "invalid_grant"}
                status = device["status"]
                if status != "pending":
                    del self.device_codes[form["device_code"]]
            if status == "pending":
                return 400, {"error": "authorization_pending"}
            if status == "denied":
                return 400, {"error": "access_denied"}
            return 200, self._issue(device["client_id"])
        return 400, {"error": "unsupported_grant_type"}

    def _device_authorization(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not self._client_ok(form):
            return 401, {"error": "invalid_client"}
        device_code = secrets.token_urlsafe(24)
        user_code = f"{secrets.randbelow(10**8):08d}"
        with self._lock:
            self.device_codes[device_code] = {
                "client_id": form["client_id"],
                "user_code": user_code,
                "status": "pending",
            }
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": self.issuer + "/device",
            "expires_in": 600,
            "interval": self.device_interval,
        }

    # -- HTTP -----------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        assert self._server is not None, "start the provider first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    with provider._lock:
                        provider.discovery_hits += 1
                    body: dict[str, Any] = {
                        "issuer": provider.issuer,
                        "jwks_uri": provider.issuer + "/jwks",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        "authorization_endpoint": provider.issuer + "/authorize",
                        "token_endpoint": provider.issuer + "/token",
                        "device_authorization_endpoint": provider.issuer + "/device_authorization",
                        "code_challenge_methods_supported": ["S256"],
                    }
                    self._send(body, None)
                elif self.path == "/jwks":
                    with provider._lock:
                        provider.jwks_hits += 1
                    self._send(provider.jwks(), f"public, max-age={provider.max_age}")
                elif self.path.startswith("/authorize?"):
                    query = urllib.parse.urlsplit(self.path).query
                    status, reply = provider._authorize(dict(urllib.parse.parse_qsl(query)))
                    if isinstance(reply, str):
                        self.send_response(302)
                        self.send_header("Location", reply)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self._send(reply, None, status)
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode("ascii")))
                if self.path == "/token":
                    status, reply = provider._token(form)
                elif self.path == "/device_authorization":
                    status, reply = provider._device_authorization(form)
                else:
                    self.send_error(404)
                    return
                self._send(reply, "no-store", status)

            def _send(
                self, body: dict[str, Any], cache_control: str | None, status: int = 200
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if cache_control:
                    self.send_header("Cache-Control", cache_control)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def running_provider(*, max_age: int = 3600) -> Iterator[OIDCProvider]:
    """Run an :class:`OIDCProvider` for the duration of the ``with`` block."""
    provider = OIDCProvider(max_age=max_age)
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
