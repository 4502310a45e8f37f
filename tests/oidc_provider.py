"""A real, minimal OIDC provider on 127.0.0.1 for the authentication tests.

It serves discovery (``/.well-known/openid-configuration``) and the JWKS
(``/jwks``, with a configurable ``Cache-Control: max-age``) over HTTP from a
``ThreadingHTTPServer`` in a thread, counts the requests so tests can assert
caching and refresh behaviour, rotates keys, and mints ID tokens with
joserfc, including deliberately bad ones (``alg: none``, HS256 signed with a
public key, unknown ``kid``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
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
                    }
                    self._send(body, None)
                elif self.path == "/jwks":
                    with provider._lock:
                        provider.jwks_hits += 1
                    self._send(provider.jwks(), f"public, max-age={provider.max_age}")
                else:
                    self.send_error(404)

            def _send(self, body: dict[str, Any], cache_control: str | None) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
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
