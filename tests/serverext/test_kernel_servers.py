"""Kernel-hosted servers announce themselves to the server extension (for the JupyterLab panel)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from autosync_jupyter import SyncServer
from autosync_jupyter.jupyter.announce import ServerAnnouncer
from autosync_jupyter.serverext import registry

from .conftest import ApiCall

ANNOUNCEMENT = {
    "url": "ws://127.0.0.1:4321",
    "name": "analysis.ipynb",
    "documents": [
        {
            "id": "4NMNnkMhL8jXrdJ9jamS58PAVdXu",
            "url": "automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu",
            "size": 120,
            "heads": ["ab" * 32],
            "peers": 1,
            "last_change": None,
        }
    ],
}


async def test_announce_list_and_withdraw(api: ApiCall) -> None:
    assert await api("servers") == (200, {"servers": []})
    status, _ = await api("servers", "k1", method="PUT", body=json.dumps(ANNOUNCEMENT))
    assert status == 200
    status, body = await api("servers")
    (entry,) = body["servers"]
    assert entry["id"] == "k1" and entry["url"] == ANNOUNCEMENT["url"]
    assert entry["name"] == "analysis.ipynb" and entry["documents"] == ANNOUNCEMENT["documents"]
    assert (await api("servers", "k1", method="DELETE"))[0] == 204
    assert await api("servers") == (200, {"servers": []})
    assert (await api("servers", "k1", method="DELETE"))[0] == 404


@pytest.mark.parametrize(
    ("server_id", "body", "expected"),
    [
        ("k1", "[]", "JSON object"),
        ("k1", '{"url": "http://x"}', "ws://"),
        ("k1", '{"url": "ws://h", "name": 5}', "name"),
        ("k1", '{"url": "ws://h", "documents": [{"id": 1}]}', "'id'"),
        ("k1", '{"url": "ws://h", "documents": "x"}', "list"),
        ("bad%20id", '{"url": "ws://h"}', "server id"),
        ("k1", "not json", "Expecting value"),
    ],
)
async def test_bad_announcements_get_400(
    api: ApiCall, server_id: str, body: str, expected: str
) -> None:
    status, answer = await api("servers", server_id, method="PUT", body=body)
    assert status == 400 and expected in answer["message"]


async def test_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry.KernelServerRegistry()
    reg.put(registry.parse_announcement("a", ANNOUNCEMENT))
    assert [e.server_id for e in reg.entries()] == ["a"]
    later = time.time() + registry.EXPIRY + 1
    monkeypatch.setattr(registry.time, "time", lambda: later)
    assert reg.entries() == []


async def test_announcer_keeps_the_entry_current(
    api: ApiCall, jp_http_port: int, jp_base_url: str, token: str, http_server: Any
) -> None:
    """What %autosync serve does under Jupyter: announce, follow changes, withdraw."""
    async with SyncServer(port=0, data_dir=None) as server:
        announcer = ServerAnnouncer(server, f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)
        announcer.start()

        async def listed() -> list[dict[str, Any]]:
            for _ in range(100):
                _, body = await api("servers")
                if body["servers"] and len(body["servers"][0]["documents"]) == wanted:
                    return list(body["servers"])
                await asyncio.sleep(0.05)
            raise AssertionError(f"the announcement never listed {wanted} documents")

        wanted = 0
        (entry,) = await listed()
        assert entry["url"] == server.url
        wanted = 1
        doc_id = await server.create_document({"n": 1})
        (entry,) = await listed()
        assert entry["documents"][0]["id"] == doc_id
        await announcer.stop()
        assert await api("servers") == (200, {"servers": []})
