"""Edges of the extension (issue 11): an unreadable document, tokens in logs."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from autosync_jupyter import SyncServer

from .conftest import ApiCall, upgrade_status

SECRET = "tok-3f9a1c77e2d94b5f"  # a token a client got wrong (or leaked): never in a log


@pytest.fixture
def stored(jp_root_dir: Path) -> dict[str, str]:
    """Documents in the extension's data directory before it starts; "bad" cannot be read."""

    async def write() -> dict[str, str]:
        async with SyncServer(port=0, data_dir=jp_root_dir / ".autosync") as server:
            return {
                "good": await server.create_document({"good": 1}),
                "bad": await server.create_document({"bad": 1}),
            }

    ids = asyncio.run(write())
    bad = ids["bad"]
    (jp_root_dir / ".autosync" / bad[:2] / bad[2:] / "snapshot").symlink_to("snapshot")
    return ids


async def test_a_document_that_cannot_be_read_leaves_the_listing_working(
    stored: dict[str, str], api: ApiCall
) -> None:
    """200 with that document marked (it used to stop the hub: 503 on every route)."""
    status, listing = await api("documents")
    assert status == 200, listing
    assert {row["id"] for row in listing["documents"]} == set(stored.values())
    status, good = await api("documents", stored["good"])
    assert (status, good["content"]) == (200, {"good": 1})
    status, bad = await api("documents", stored["bad"])
    assert status == 503 and "cannot be read" in bad["message"]
    rows = {row["id"]: row for row in (await api("documents"))[1]["documents"]}
    assert rows[stored["good"]]["error"] is None
    assert rows[stored["bad"]]["error"].startswith("its files cannot be read")


@pytest.mark.parametrize("route", ["autosync/ws", "autosync/relay", "autosync/api/nothing-here"])
async def test_refusals_keep_the_token_out_of_the_log(
    http_server: Any,
    jp_http_port: int,
    jp_base_url: str,
    token: str,
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong token (403) and a right one refused further on (404) are logged redacted."""
    caplog.set_level(logging.DEBUG)
    base = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}{route}"
    query = {"server": "ws://127.0.0.1:1"} if route.endswith("relay") else {}
    for sent, expected in ((SECRET, {403}), (token, {404, 400})):
        url = f"{base}?{urllib.parse.urlencode({**query, 'token': sent})}"
        status = await upgrade_status(url)
        if route.endswith("ws") and sent == token:
            assert status == 101
            continue
        assert status in expected, (route, sent, status)
    logged = "\n".join(
        f"{r.name} {r.getMessage()}"
        for r in caplog.records
        if not r.name.startswith("websockets.client")  # the test's own client
    )
    assert SECRET not in logged and token not in logged
    assert "token=" in logged  # the refusals were logged (redacted)
