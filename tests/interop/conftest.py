"""Interop tests against the official JavaScript automerge-repo packages.

They need Node.js and ``npm ci --prefix tests/interop/js``. Without that install
the tests are skipped on a developer machine, but fail in CI (``CI`` set): a CI
run that silently skipped every interop test would prove nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jspeer import require_js_install
from servers import ServerProcess, js_sync_server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/interop with ``interop``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture(autouse=True)
def _require_js_install() -> None:
    """Skip (locally) or fail (in CI) when the JS packages are not installed."""
    require_js_install()


@pytest.fixture
async def js_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """The official JS sync server on a free port, storing in a temp directory."""
    async with js_sync_server(tmp_path / "js-server-data") as server:
        yield server
