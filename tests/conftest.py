"""Fixtures shared by the tests of several layers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autosync_jupyter.login import clear_token_cache
from tests.oidc_provider import OIDCProvider, running_provider


@pytest.fixture
def provider() -> Iterator[OIDCProvider]:
    """The local OIDC provider, with an empty token cache before and after."""
    clear_token_cache()
    with running_provider() as running:
        yield running
    clear_token_cache()
