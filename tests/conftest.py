"""Fixtures shared by the tests of several layers."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from autosync_jupyter.auth.login import clear_token_cache
from tests.ci import skip_or_fail
from tests.oidc_provider import OIDCProvider, running_provider
from tests.postgres_server import PostgresServer, missing_prerequisite, running_postgres


def pytest_configure(config: pytest.Config) -> None:
    if sys.version_info < (3, 11):
        # Python 3.10's SSL transport never marks itself closed when the peer
        # closes an established connection first, so its __del__ warns
        # "unclosed transport" for a socket that is already closed (the
        # rewritten sslproto of 3.11 does not). Not a leak of ours.
        config.addinivalue_line(
            "filterwarnings",
            "ignore:Exception ignored in. <function _SSLProtocolTransport.__del__"
            ":pytest.PytestUnraisableExceptionWarning",
        )


@pytest.fixture
def provider() -> Iterator[OIDCProvider]:
    """The local OIDC provider, with an empty token cache before and after."""
    clear_token_cache()
    with running_provider() as running:
        yield running
    clear_token_cache()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster for the session (skipped here, failed in CI, if absent)."""
    skip_or_fail(missing_prerequisite())
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
