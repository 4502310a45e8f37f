"""Auth: who a peer is, and keeping secrets out of logs.

- :mod:`.oidc` checks OIDC ID tokens (signature, issuer, audience, expiry,
  allow-lists) for the sync server;
- :mod:`.login` gets a token for a client (browser redirect or device flow)
  and caches it;
- :mod:`.tls` makes self-signed certificates and SSL contexts;
- :mod:`.redact` keeps tokens out of ``websockets``' logs.

It knows nothing of documents or the sync protocol.
"""

from .oidc import DEFAULT_ISSUER, MAX_TOKEN_LENGTH, MIN_TOKEN_LENGTH, AuthConfig, extract_bearer

__all__ = ["DEFAULT_ISSUER", "MAX_TOKEN_LENGTH", "MIN_TOKEN_LENGTH", "AuthConfig", "extract_bearer"]
