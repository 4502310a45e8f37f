"""Fixtures for the tests that drive real Jupyter kernels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.jspeer import require_js_install
from tests.jupyter.kernel import Kernel, running_kernel


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A fresh kernel, working directory ``tmp_path``, with the extension loaded."""
    with running_kernel(tmp_path) as k:
        k.run("%load_ext autosync_jupyter\nimport asyncio, autosync_jupyter")
        yield k


@pytest.fixture
def require_js() -> None:
    """Skip (locally) or fail (in CI) when the JS packages are not installed."""
    require_js_install()
