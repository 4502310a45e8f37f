"""OIDC ID-token validation for sync servers (protocol.md §9).

:class:`AuthConfig` holds what a server accepts (client id, issuer,
allow-lists, a custom validator) and checks a token with
:meth:`AuthConfig.authenticate`: the signature against the issuer's JWKS
(found through ``/.well-known/openid-configuration``), then the claims, in
the order of the table of protocol.md §9. Every failure raises
:class:`~autosync_jupyter.errors.AuthError` whose ``reason`` names the check
(for the server log) and whose ``public_message`` is the generic
``"Authentication failed"`` (for the peer).

JWT and JWK handling is joserfc's; this module only decides which keys and
algorithms are acceptable and checks the claims. Tokens are never logged:
log lines carry the reason and, on success, ``sub`` and ``email``.

>>> extract_bearer("Bearer abc.def.ghi")
'abc.def.ghi'
>>> AuthConfig("my-client", "https://issuer.example").issuer
'https://issuer.example'
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from ..errors import AuthError

__all__ = [
    "DEFAULT_ISSUER",
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "AuthConfig",
    "extract_bearer",
]

logger = logging.getLogger("autosync_jupyter.auth")

#: The issuer used when neither the argument nor ``OIDC_ISSUER`` gives one.
DEFAULT_ISSUER = "https://accounts.google.com"
#: Shortest token accepted before any parsing (protocol.md §9 header checks).
MIN_TOKEN_LENGTH = 20
#: Longest token accepted (8 KiB); longer ones are refused unparsed.
MAX_TOKEN_LENGTH = 8192

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_DEFAULT_JWKS_MAX_AGE = 3600.0
_MAX_HTTP_BODY = 1 << 20

# Algorithms a verification key may be used with, by key type (and curve).
# Symmetric (HS*) and "none" are never accepted: an ID token must be signed
# with one of the issuer's published asymmetric keys.
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
_OKP_ALGORITHMS = ("EdDSA",)
_ASYMMETRIC_ALGORITHMS = frozenset((*_RSA_ALGORITHMS, *_EC_ALGORITHMS.values(), *_OKP_ALGORITHMS))

_Key = RSAKey | ECKey | OKPKey
Validator = Callable[[dict[str, Any]], bool]


def extract_bearer(header_value: str | None) -> str:
    """Return the token of an ``Authorization: Bearer <token>`` header value.

    Raises:
        AuthError: the header is missing or empty, or is not ``Bearer``.
    """
    if not header_value:
        raise AuthError("Missing Authorization header")
    if not header_value.startswith("Bearer "):
        raise AuthError("Authorization header is not a Bearer token")
    return header_value[len("Bearer ") :]


class _VerificationKey:
    """One key of the issuer's JWKS with the algorithms it may verify."""

    __slots__ = ("algorithms", "key")

    def __init__(self, key: _Key, algorithms: frozenset[str]) -> None:
        self.key = key
        self.algorithms = algorithms


def _parse_jwks(document: Any) -> dict[str, _VerificationKey]:
    """Index the usable signing keys of a JWKS document by ``kid``.

    Keys without a ``kid``, symmetric keys, keys not meant for signatures and
    keys joserfc cannot import are skipped (with a debug log line).
    """
    keys: dict[str, _VerificationKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            logger.debug("skipping a JWKS key without kid")
            continue
        if entry.get("use", "sig") != "sig":
            logger.debug("skipping JWKS key %r: use is not 'sig'", kid)
            continue
        try:
            key = import_key(entry)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            logger.debug("skipping JWKS key %r: %s", kid, exc)
            continue
        if isinstance(key, RSAKey):
            allowed = frozenset(_RSA_ALGORITHMS)
        elif isinstance(key, ECKey):
            crv = _EC_ALGORITHMS.get(str(entry.get("crv")))
            allowed = frozenset((crv,)) if crv else frozenset()
        elif isinstance(key, OKPKey):
            allowed = frozenset(_OKP_ALGORITHMS)
        else:
            logger.debug("skipping JWKS key %r: not an asymmetric key", kid)
            continue
        declared = entry.get("alg")
        if declared is not None:
            allowed = allowed & {declared} if declared in _ASYMMETRIC_ALGORITHMS else frozenset()
        if allowed:
            keys[kid] = _VerificationKey(key, allowed)
    return keys


def _max_age(cache_control: str | None) -> float:
    """Seconds a JWKS response may be cached (``max-age``, default 3600)."""
    if cache_control:
        match = _MAX_AGE.search(cache_control)
        if match:
            return float(match.group(1))
    return _DEFAULT_JWKS_MAX_AGE


def _get_json(url: str, timeout: float) -> tuple[Any, str | None]:
    """GET ``url`` (blocking) and return its JSON body and Cache-Control header."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{url} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(_MAX_HTTP_BODY + 1)
        cache_control = response.headers.get("Cache-Control")
    if len(body) > _MAX_HTTP_BODY:
        raise ValueError(f"{url} answered more than {_MAX_HTTP_BODY} bytes")
    return json.loads(body), cache_control


def _is_number(value: object) -> TypeGuard[int | float]:
    """True for an int or float that is not a bool (a NumericDate)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class AuthConfig:
    """What a server accepts as an OIDC ID token, and the checks that enforce it.

    Args:
        client_id: the expected audience; defaults to ``$OIDC_CLIENT_ID``.
        issuer: the expected ``iss``, compared exactly; defaults to
            ``$OIDC_ISSUER``, then to ``https://accounts.google.com``.
        allowed_emails: if given, only these emails (exact, case-sensitive).
        allowed_domains: if given, only emails whose text after the last
            ``@`` is one of these domains exactly (no sub-domains). When both
            lists are given, a token must pass both, as in R.
        validator: a synchronous callable of the claims, called last; the
            token is refused unless it returns ``True`` (an exception counts
            as a refusal).
        leeway: clock skew, in seconds, tolerated for ``exp``, ``iat`` and ``nbf``.
        http_timeout: seconds allowed for each discovery or JWKS request.
        jwks_refresh_min_interval: seconds between two JWKS refreshes forced
            by an unknown ``kid``, so that a flood of made-up key ids costs
            the issuer at most one request per interval.

    Raises:
        ValueError: no client id was given and ``$OIDC_CLIENT_ID`` is unset.
    """

    def __init__(
        self,
        client_id: str | None = None,
        issuer: str | None = None,
        *,
        allowed_emails: Iterable[str] = (),
        allowed_domains: Iterable[str] = (),
        validator: Validator | None = None,
        leeway: float = 30,
        http_timeout: float = 5.0,
        jwks_refresh_min_interval: float = 60.0,
    ) -> None:
        client_id = client_id or os.environ.get("OIDC_CLIENT_ID")
        if not client_id:
            raise ValueError("AuthConfig needs a client_id (or the OIDC_CLIENT_ID variable)")
        self.client_id: str = client_id
        self.issuer: str = issuer or os.environ.get("OIDC_ISSUER") or DEFAULT_ISSUER
        self.allowed_emails = frozenset(allowed_emails)
        self.allowed_domains = frozenset(allowed_domains)
        self.validator = validator
        self.leeway = float(leeway)
        self.http_timeout = float(http_timeout)
        self.jwks_refresh_min_interval = float(jwks_refresh_min_interval)
        self._jwks_uri: str | None = None
        self._keys: dict[str, _VerificationKey] = {}
        self._keys_expire_at = float("-inf")
        self._last_forced_refresh = float("-inf")
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AuthConfig(client_id={self.client_id!r}, issuer={self.issuer!r})"

    async def authenticate(self, token: str) -> dict[str, Any]:
        """Verify an ID token and return its claims.

        Raises:
            AuthError: the token failed a check; ``reason`` says which.
        """
        try:
            claims = await self._verify(token)
        except AuthError as exc:
            logger.info("authentication failed: %s", exc.reason)
            raise
        logger.info("authenticated sub=%r email=%r", claims.get("sub"), claims.get("email"))
        return claims

    # -- the checks, in the order of protocol.md §9 ---------------------------

    async def _verify(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise AuthError("Missing token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("Token too long")
        if len(token) < MIN_TOKEN_LENGTH:
            raise AuthError("Token too short")
        if not _TOKEN_CHARS.fullmatch(token):
            raise AuthError("Token contains invalid characters")
        if token.count(".") != 2:
            raise AuthError("Invalid JWT format")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError):
            raise AuthError("Invalid JWT header") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("Invalid JWT header")

        entry = await self._key_for(kid)
        if entry is None:
            raise AuthError("Unable to verify token signature")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in entry.algorithms:
            logger.debug("algorithm %r is not allowed for key %r", alg, kid)
            raise AuthError("Token signature verification failed")
        try:
            decoded = jwt.decode(token, entry.key, algorithms=[alg])
        except (JoseError, ValueError, TypeError):
            raise AuthError("Token signature verification failed") from None
        claims = decoded.claims
        if not isinstance(claims, dict):
            raise AuthError("Token signature verification failed")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise AuthError("Invalid token issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.client_id not in audiences:
            raise AuthError("Invalid token audience")
        # OIDC Core 3.1.3.7: with several audiences, the authorized party
        # must be present and be us; when present, it must be us anyway.
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.client_id:
            raise AuthError("Invalid authorized party (azp)")
        exp = claims.get("exp")
        if not _is_number(exp) or exp < now - self.leeway:
            raise AuthError("Token expired")
        iat = claims.get("iat")
        if iat is not None and not (_is_number(iat) and iat <= now + self.leeway):
            raise AuthError("Token issued in the future")
        nbf = claims.get("nbf")
        if nbf is not None and not (_is_number(nbf) and nbf <= now + self.leeway):
            raise AuthError("Token not valid yet (nbf)")
        # Only the JSON boolean true means verified ("false", 0, "true" do not).
        if "email_verified" in claims and claims["email_verified"] is not True:
            raise AuthError("Email not verified")

        email = claims.get("email")
        if self.allowed_emails or self.allowed_domains:
            if not isinstance(email, str) or not email:
                raise AuthError("Token has no email claim")
            if claims.get("email_verified") is not True:
                raise AuthError("Email not verified")
        if email is not None:
            self._check_email_shape(email)
        if self.allowed_emails and email not in self.allowed_emails:
            raise AuthError("Email not in allowlist")
        if self.allowed_domains:
            domain = str(email).rpartition("@")[2]
            if domain not in self.allowed_domains:
                raise AuthError("Domain not allowed")

        if self.validator is not None:
            try:
                accepted = self.validator(claims)
            except Exception as exc:
                logger.warning("custom validator raised %s", type(exc).__name__)
                raise AuthError("Custom validation failed") from None
            if accepted is not True:
                raise AuthError("Custom validation failed")

    @staticmethod
    def _check_email_shape(email: Any) -> None:
        """Refuse an email that is not a string with exactly one ``@``."""
        if not isinstance(email, str) or email.count("@") != 1:
            raise AuthError("Invalid email")
        local, _, domain = email.partition("@")
        if not local or not domain:
            raise AuthError("Invalid email")

    # -- discovery and the JWKS cache ----------------------------------------

    async def _key_for(self, kid: str) -> _VerificationKey | None:
        """The verification key for ``kid``, fetching the JWKS as needed.

        The JWKS is fetched when the cache is empty or past its max-age, and
        refreshed once more on an unknown ``kid`` unless such a forced
        refresh already happened within ``jwks_refresh_min_interval``.
        """
        async with self._lock:
            try:
                refreshed = False
                if time.monotonic() >= self._keys_expire_at:
                    await self._refresh_jwks()
                    refreshed = True
                entry = self._keys.get(kid)
                now = time.monotonic()
                if (
                    entry is None
                    and not refreshed
                    and now - self._last_forced_refresh >= self.jwks_refresh_min_interval
                ):
                    self._last_forced_refresh = now
                    logger.debug("unknown key id %r: refreshing the JWKS", kid)
                    await self._refresh_jwks()
                    entry = self._keys.get(kid)
            except (OSError, ValueError) as exc:
                logger.warning("cannot load the JWKS of %s: %s", self.issuer, exc)
                return self._keys.get(kid)
            if entry is None:
                logger.debug("no key %r in the JWKS of %s", kid, self.issuer)
            return entry

    async def _refresh_jwks(self) -> None:
        jwks_uri = await self._discover()
        document, cache_control = await asyncio.to_thread(_get_json, jwks_uri, self.http_timeout)
        self._keys = _parse_jwks(document)
        self._keys_expire_at = time.monotonic() + _max_age(cache_control)
        logger.debug("loaded %d keys from %s", len(self._keys), jwks_uri)

    async def _discover(self) -> str:
        """The issuer's ``jwks_uri`` (fetched once, then cached)."""
        if self._jwks_uri is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document, _ = await asyncio.to_thread(_get_json, url, self.http_timeout)
            jwks_uri = document.get("jwks_uri") if isinstance(document, Mapping) else None
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError(f"{url} names no jwks_uri")
            self._jwks_uri = jwks_uri
        return self._jwks_uri
