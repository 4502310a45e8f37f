"""The rule for tests whose prerequisites are missing: skip here, fail in CI."""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str | None) -> None:
    """Nothing if ``reason`` is None; else skip locally and fail when ``$CI`` is set.

    A CI run that silently skipped every test needing a browser or the JS
    packages would prove nothing.
    """
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)
