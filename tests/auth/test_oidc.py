"""OIDC ID-token validation against a real local provider (protocol.md §9)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from autosync_jupyter.auth.oidc import AuthConfig, extract_bearer
from autosync_jupyter.errors import AuthError, AutosyncError
from tests.oidc_provider import CLIENT_ID, OIDCProvider, running_provider


@pytest.fixture
def provider() -> Iterator[OIDCProvider]:
    with running_provider() as running:
        yield running


def config(provider: OIDCProvider, **options: Any) -> AuthConfig:
    return AuthConfig(CLIENT_ID, provider.issuer, **options)


async def rejected(auth: AuthConfig, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await auth.authenticate(token)
    assert info.value.public_message == "Authentication failed"
    return info.value.reason


async def test_valid_rsa_token_returns_claims(provider: OIDCProvider) -> None:
    """A well-formed RS256 token yields its claims."""
    claims = await config(provider).authenticate(provider.mint())
    assert claims["sub"] == "user-1"
    assert claims["email"] == "alice@company.com"


async def test_valid_ec_token_returns_claims(provider: OIDCProvider) -> None:
    """An ES256 token signed with the published EC key is accepted."""
    claims = await config(provider).authenticate(provider.mint(kid=provider.ec_kid))
    assert claims["aud"] == CLIENT_ID


def test_auth_error_is_an_autosync_error() -> None:
    """AuthError is in the package's hierarchy and keeps the reason apart."""
    error = AuthError("Token expired")
    assert isinstance(error, AutosyncError)
    assert error.reason == "Token expired"
    assert error.public_message == "Authentication failed"


def test_config_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """client id and issuer come from the environment, the issuer falls back to Google."""
    monkeypatch.setenv("OIDC_CLIENT_ID", "env-client")
    monkeypatch.delenv("OIDC_ISSUER", raising=False)
    auth = AuthConfig()
    assert (auth.client_id, auth.issuer) == ("env-client", "https://accounts.google.com")
    monkeypatch.setenv("OIDC_ISSUER", "https://login.example")
    assert AuthConfig().issuer == "https://login.example"


def test_config_without_client_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a client id there is no audience to check, so construction fails."""
    monkeypatch.delenv("OIDC_CLIENT_ID", raising=False)
    with pytest.raises(ValueError, match="client_id"):
        AuthConfig()


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "Missing Authorization header"),
        ("", "Missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "Authorization header is not a Bearer token"),
        ("bearer abc", "Authorization header is not a Bearer token"),
    ],
)
def test_extract_bearer_rejects_missing_or_other_schemes(header: str | None, reason: str) -> None:
    """No header, or a scheme other than 'Bearer ', is refused."""
    with pytest.raises(AuthError) as info:
        extract_bearer(header)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "Missing token"),
        ("short.to.ken", "Token too short"),
        ("a" * 30 + " " + "b" * 10, "Token contains invalid characters"),
        ("abc+def/ghi=jkl.mno.pqr", "Token contains invalid characters"),
        ("a" * 40, "Invalid JWT format"),
        ("a" * 10 + "." + "b" * 10 + "." + "c" * 10 + "." + "d", "Invalid JWT format"),
        ("a" * 10 + "." + "b" * 10 + "." + "c" * 10, "Invalid JWT header"),
    ],
)
async def test_malformed_tokens_are_rejected(
    provider: OIDCProvider, token: str, reason: str
) -> None:
    """Tokens that fail the format checks are refused before any network access."""
    assert await rejected(config(provider), token) == reason
    assert provider.jwks_hits == 0


async def test_header_without_kid_is_rejected(provider: OIDCProvider) -> None:
    """A JWT header without a kid is an invalid header."""
    token = provider.mint(kid="")
    assert await rejected(config(provider), token) == "Invalid JWT header"


async def test_token_over_8_kib_is_rejected(provider: OIDCProvider) -> None:
    """A validly signed token longer than 8192 characters is refused unparsed."""
    token = provider.mint(provider.claims(padding="x" * 9000))
    assert len(token) > 8192
    assert await rejected(config(provider), token) == "Token too long"
    assert provider.jwks_hits == 0


async def test_alg_none_is_rejected(provider: OIDCProvider) -> None:
    """An unsigned token (alg: none) naming a real kid fails signature verification."""
    token = provider.mint(alg="none")
    assert await rejected(config(provider), token) == "Token signature verification failed"


async def test_hs256_signed_with_public_key_is_rejected(provider: OIDCProvider) -> None:
    """HS256 'signed' with the issuer's public RSA key (alg confusion) fails."""
    token = provider.mint(alg="HS256")
    assert await rejected(config(provider), token) == "Token signature verification failed"


async def test_token_signed_by_foreign_key_is_rejected(provider: OIDCProvider) -> None:
    """A token naming a published kid but signed with another key fails."""
    from joserfc.jwk import RSAKey

    token = provider.mint(key=RSAKey.generate_key(2048))
    assert await rejected(config(provider), token) == "Token signature verification failed"


async def test_unknown_kid_refreshes_once_then_rejects(provider: OIDCProvider) -> None:
    """An unknown kid causes exactly one JWKS refresh, then the token is refused."""
    auth = config(provider)
    await auth.authenticate(provider.mint())
    assert provider.jwks_hits == 1
    token = provider.mint(kid="no-such-kid", key=provider.keys[provider.rsa_kid])
    assert await rejected(auth, token) == "Unable to verify token signature"
    assert provider.jwks_hits == 2


async def test_rotated_key_is_accepted_after_one_refresh(provider: OIDCProvider) -> None:
    """After rotation, the new kid is found with one refresh and the old one is gone."""
    auth = config(provider)
    old_kid = provider.rsa_kid
    await auth.authenticate(provider.mint())
    new_kid = provider.add_key("RSA")
    provider.remove_key(old_kid)
    claims = await auth.authenticate(provider.mint(kid=new_kid))
    assert claims["sub"] == "user-1"
    assert provider.jwks_hits == 2
    await auth.authenticate(provider.mint(kid=new_kid))
    assert provider.jwks_hits == 2


async def test_flood_of_random_kids_refreshes_at_most_once(provider: OIDCProvider) -> None:
    """Many tokens with made-up kids cost at most one forced refresh per interval."""
    auth = config(provider)
    await auth.authenticate(provider.mint())
    key = provider.keys[provider.rsa_kid]
    tokens = [provider.mint(kid=uuid.uuid4().hex, key=key) for _ in range(30)]
    results = await asyncio.gather(
        *(auth.authenticate(token) for token in tokens), return_exceptions=True
    )
    assert all(isinstance(result, AuthError) for result in results)
    assert provider.jwks_hits == 2


async def test_forced_refresh_allowed_again_after_interval(provider: OIDCProvider) -> None:
    """Once the minimum interval has passed, an unknown kid may refresh again."""
    auth = config(provider, jwks_refresh_min_interval=0.05)
    key = provider.keys[provider.rsa_kid]
    await rejected(auth, provider.mint(kid="unknown-1", key=key))
    hits = provider.jwks_hits
    await asyncio.sleep(0.1)
    await rejected(auth, provider.mint(kid="unknown-2", key=key))
    assert provider.jwks_hits == hits + 1


async def test_jwks_cached_within_max_age(provider: OIDCProvider) -> None:
    """Within Cache-Control max-age, further tokens do not refetch discovery or JWKS."""
    auth = config(provider)
    for _ in range(3):
        await auth.authenticate(provider.mint())
    assert (provider.discovery_hits, provider.jwks_hits) == (1, 1)


async def test_jwks_refetched_when_max_age_is_zero() -> None:
    """With max-age=0 the JWKS is refetched for every token (discovery stays cached)."""
    with running_provider(max_age=0) as provider:
        auth = config(provider)
        for _ in range(3):
            await auth.authenticate(provider.mint())
        assert (provider.discovery_hits, provider.jwks_hits) == (1, 3)


async def test_unreachable_issuer_is_rejected() -> None:
    """If discovery cannot be fetched, the signature cannot be verified."""
    with running_provider() as provider:
        token = provider.mint()
        issuer = provider.issuer
    auth = AuthConfig(CLIENT_ID, issuer, http_timeout=1.0)
    assert await rejected(auth, token) == "Unable to verify token signature"


async def test_wrong_issuer_is_rejected(provider: OIDCProvider) -> None:
    """iss must equal the configured issuer exactly."""
    token = provider.mint(provider.claims(iss=provider.issuer + "/"))
    assert await rejected(config(provider), token) == "Invalid token issuer"


@pytest.mark.parametrize("aud", ["someone-else", ["someone-else", "another"], [], 42])
async def test_wrong_audience_is_rejected(provider: OIDCProvider, aud: Any) -> None:
    """aud must be the client id or a list containing it."""
    token = provider.mint(provider.claims(aud=aud))
    assert await rejected(config(provider), token) == "Invalid token audience"


async def test_audience_list_containing_client_id_is_accepted(provider: OIDCProvider) -> None:
    """A list audience containing the client id is accepted (with azp naming us)."""
    token = provider.mint(provider.claims(aud=["other", CLIENT_ID], azp=CLIENT_ID))
    assert (await config(provider).authenticate(token))["aud"] == ["other", CLIENT_ID]


async def test_expired_token_is_rejected(provider: OIDCProvider) -> None:
    """exp older than the 30 s leeway is refused; within the leeway it passes."""
    now = int(time.time())
    auth = config(provider)
    assert await rejected(auth, provider.mint(provider.claims(exp=now - 60))) == "Token expired"
    await auth.authenticate(provider.mint(provider.claims(exp=now - 10)))


async def test_missing_exp_is_rejected(provider: OIDCProvider) -> None:
    """A token without exp never expires, so it is refused."""
    token = provider.mint(provider.claims(exp=None))
    assert await rejected(config(provider), token) == "Token expired"


async def test_token_issued_in_the_future_is_rejected(provider: OIDCProvider) -> None:
    """iat beyond now + leeway is refused."""
    token = provider.mint(provider.claims(iat=int(time.time()) + 600))
    assert await rejected(config(provider), token) == "Token issued in the future"


@pytest.mark.parametrize("verified", [False, "false", "true", 0, 1, None, []])
async def test_only_a_json_true_email_verified_passes(
    provider: OIDCProvider, verified: Any
) -> None:
    """email_verified other than the boolean true is refused, even without allow-lists."""
    claims = provider.claims()
    claims["email_verified"] = verified
    token = provider.mint(claims)
    assert await rejected(config(provider), token) == "Email not verified"


async def test_a_token_not_valid_yet_is_rejected(provider: OIDCProvider) -> None:
    """nbf a day ahead is refused; within the 30 s leeway it passes."""
    now = int(time.time())
    auth = config(provider)
    early = provider.mint(provider.claims(nbf=now + 86_400))
    assert await rejected(auth, early) == "Token not valid yet (nbf)"
    await auth.authenticate(provider.mint(provider.claims(nbf=now + 10)))


@pytest.mark.parametrize(
    ("aud", "azp", "accepted"),
    [
        (["other", CLIENT_ID], None, False),  # several audiences: azp required
        (["other", CLIENT_ID], "other", False),
        (["other", CLIENT_ID], CLIENT_ID, True),
        (CLIENT_ID, "someone-else", False),  # present: must be us
        (CLIENT_ID, CLIENT_ID, True),
        (CLIENT_ID, None, True),
    ],
)
async def test_authorized_party_rules(
    provider: OIDCProvider, aud: Any, azp: str | None, accepted: bool
) -> None:
    """OIDC Core 3.1.3.7: azp is required with several audiences and must be our client id."""
    token = provider.mint(provider.claims(aud=aud, azp=azp))
    if accepted:
        await config(provider).authenticate(token)
    else:
        assert await rejected(config(provider), token) == "Invalid authorized party (azp)"


async def test_allowlist_requires_verified_email(provider: OIDCProvider) -> None:
    """With an allow-list, a missing email_verified is not enough."""
    auth = config(provider, allowed_domains=["company.com"])
    token = provider.mint(provider.claims(email_verified=None))
    assert await rejected(auth, token) == "Email not verified"


@pytest.mark.parametrize("email", [None, ""])
async def test_allowlist_requires_email(provider: OIDCProvider, email: str | None) -> None:
    """With an allow-list, a token without a (non-empty) email is refused."""
    auth = config(provider, allowed_emails=["alice@company.com"])
    token = provider.mint(provider.claims(email=email))
    assert await rejected(auth, token) == "Token has no email claim"


async def test_allowed_emails_exact_membership(provider: OIDCProvider) -> None:
    """allowed_emails is exact and case-sensitive."""
    auth = config(provider, allowed_emails=["alice@company.com"])
    await auth.authenticate(provider.mint())
    token = provider.mint(provider.claims(email="Alice@company.com"))
    assert await rejected(auth, token) == "Email not in allowlist"


async def test_allowed_domain_accepts_exact_domain(provider: OIDCProvider) -> None:
    """An email of an allowed domain passes."""
    auth = config(provider, allowed_domains=["company.com"])
    assert (await auth.authenticate(provider.mint()))["email"] == "alice@company.com"


@pytest.mark.parametrize(
    "email", ["alice@company.com.evil.com", "alice@sub.company.com", "alice@evilcompany.com"]
)
async def test_allowed_domain_is_not_a_suffix_match(provider: OIDCProvider, email: str) -> None:
    """Look-alike and sub-domains of an allowed domain are refused."""
    auth = config(provider, allowed_domains=["company.com"])
    token = provider.mint(provider.claims(email=email))
    assert await rejected(auth, token) == "Domain not allowed"


@pytest.mark.parametrize("email", ["alice@evil.com@company.com", "company.com", "@company.com"])
async def test_malformed_email_is_rejected(provider: OIDCProvider, email: str) -> None:
    """An email with two '@' (or none, or no local part) is invalid."""
    auth = config(provider, allowed_domains=["company.com"])
    token = provider.mint(provider.claims(email=email))
    assert await rejected(auth, token) == "Invalid email"


@pytest.mark.parametrize(
    ("validator", "accepted"),
    [
        (lambda claims: claims["sub"] == "user-1", True),
        (lambda claims: False, False),
        (lambda claims: 1 / 0, False),
        (lambda claims: "yes", False),
    ],
)
async def test_custom_validator(provider: OIDCProvider, validator: Any, accepted: bool) -> None:
    """The validator must return True; False, non-True values and exceptions refuse."""
    auth = config(provider, validator=validator)
    if accepted:
        await auth.authenticate(provider.mint())
    else:
        assert await rejected(auth, provider.mint()) == "Custom validation failed"


async def test_tokens_never_reach_the_logs(
    provider: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """No token text appears in any log record, for accepted and refused tokens."""
    caplog.set_level(logging.DEBUG)
    auth = config(provider, allowed_domains=["company.com"])
    key = provider.keys[provider.rsa_kid]
    good = provider.mint()
    bad = [
        provider.mint(alg="none"),
        provider.mint(alg="HS256"),
        provider.mint(kid="unknown-kid", key=key),
        provider.mint(provider.claims(email="alice@company.com.evil.com")),
        provider.mint(provider.claims(exp=int(time.time()) - 600)),
    ]
    await auth.authenticate(good)
    for token in bad:
        await rejected(auth, token)
    assert caplog.records
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for token in [good, *bad]:
        for part in filter(None, token.split(".")):
            assert part not in logged
