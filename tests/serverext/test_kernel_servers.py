"""Kernel-hosted servers announce themselves to the server extension (for the JupyterLab panel)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from typing import Any

import pytest

from autosync_jupyter import DocumentSummary, SyncServer, generate_document_id
from autosync_jupyter.jupyter.announce import ServerAnnouncer
from autosync_jupyter.jupyter.discovery import MAX_ANNOUNCEMENT
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
            "heads": ["2Jc6VooH5wxteNEnVgqR8hNw3Pb58bphqk1myKZpXwrCfzJMhM"],
            "peers": 1,
            "last_change": None,
            "title": "draft",
        }
    ],
}


async def test_announce_list_and_withdraw(api: ApiCall, kernel_headers: dict[str, str]) -> None:
    assert await api("servers") == (200, {"servers": []})
    body = json.dumps(ANNOUNCEMENT)
    status, _ = await api("servers", "k1", method="PUT", body=body, headers=kernel_headers)
    assert status == 200
    status, answer = await api("servers")
    (entry,) = answer["servers"]
    assert entry["id"] == "k1" and entry["url"] == ANNOUNCEMENT["url"]
    assert entry["name"] == "analysis.ipynb" and entry["documents"] == ANNOUNCEMENT["documents"]
    assert entry["document_count"] == 1
    assert (await api("servers", "k1", method="DELETE", headers=kernel_headers))[0] == 204
    assert await api("servers") == (200, {"servers": []})
    assert (await api("servers", "k1", method="DELETE", headers=kernel_headers))[0] == 404


@pytest.mark.parametrize("secret", [None, "", "not-the-secret"])
async def test_only_kernels_of_this_server_announce(
    api: ApiCall, kernel_headers: dict[str, str], secret: str | None
) -> None:
    """A signed-in user without the kernels' secret can neither announce nor withdraw (403)."""
    (header,) = kernel_headers
    headers = {} if secret is None else {header: secret}
    body = json.dumps(ANNOUNCEMENT)
    assert (await api("servers", "k1", method="PUT", body=body, headers=headers))[0] == 403
    await api("servers", "k1", method="PUT", body=body, headers=kernel_headers)
    assert (await api("servers", "k1", method="DELETE", headers=headers))[0] == 403
    assert len((await api("servers"))[1]["servers"]) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:22/any/path?query=1",
        "ws://127.0.0.1:4321#fragment",
        "ws://10.0.0.5:4321",
        "ws://localhost:4321",
        "wss://127.0.0.1:4321",
        "ws://user:pw@127.0.0.1:4321",
        "ws://127.0.0.1:0",
        "ws://127.0.0.1:99999",
        "http://127.0.0.1:4321",
    ],
)
async def test_only_kernel_server_urls_are_announced(
    api: ApiCall, kernel_headers: dict[str, str], url: str
) -> None:
    """The relay connects to announced URLs: anything but ws://127.0.0.1:PORT[/path] is 400."""
    body = json.dumps({**ANNOUNCEMENT, "url": url})
    status, answer = await api("servers", "k1", method="PUT", body=body, headers=kernel_headers)
    assert status == 400 and "ws://127.0.0.1:PORT" in answer["message"]


async def test_announcements_are_small(api: ApiCall, kernel_headers: dict[str, str]) -> None:
    """At most 40 documents and 16 KiB per announcement (98 x 4 MiB took 230 MB before)."""
    many = {**ANNOUNCEMENT, "documents": ANNOUNCEMENT["documents"] * 41}
    status, answer = await api(
        "servers", "k1", method="PUT", body=json.dumps(many), headers=kernel_headers
    )
    assert status == 400 and "at most 40" in answer["message"]
    huge = {**ANNOUNCEMENT, "name": "x" * 200, "pad": "y" * 20_000}
    status, _ = await api(
        "servers", "k1", method="PUT", body=json.dumps(huge), headers=kernel_headers
    )
    assert status == 413


@pytest.mark.parametrize(
    ("server_id", "body", "expected"),
    [
        ("k1", "[]", "JSON object"),
        ("k1", '{"url": "http://x"}', "ws://"),
        ("k1", '{"url": "ws://127.0.0.1:1", "name": 5}', "name"),
        ("k1", '{"url": "ws://127.0.0.1:1", "documents": [{"id": 1}]}', "'id'"),
        ("k1", '{"url": "ws://127.0.0.1:1", "documents": "x"}', "list"),
        ("k1", '{"url": "ws://127.0.0.1:1", "document_count": -1}', "document_count"),
        ("bad%20id", '{"url": "ws://127.0.0.1:1"}', "server id"),
        ("k1", "not json", "Expecting value"),
    ],
)
async def test_bad_announcements_get_400(
    api: ApiCall, kernel_headers: dict[str, str], server_id: str, body: str, expected: str
) -> None:
    status, answer = await api(
        "servers", server_id, method="PUT", body=body, headers=kernel_headers
    )
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


async def test_a_busy_kernel_announces_within_the_limits(
    api: ApiCall,
    jp_http_port: int,
    jp_base_url: str,
    token: str,
    http_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """60 documents with 30 concurrent heads each: the newest that fit in 16 KiB, and the count."""
    async with SyncServer(port=0, data_dir=None) as server:
        now = datetime.datetime.now(datetime.timezone.utc)
        rows = [
            DocumentSummary(
                document_id=generate_document_id(),
                loaded=True,
                heads=tuple(os.urandom(32).hex() for _ in range(30)),
                size=1000,
                peers=2,
                last_change=now - datetime.timedelta(seconds=i),
            )
            for i in range(60)
        ]
        monkeypatch.setattr(server, "document_summaries", lambda: list(rows))
        announcer = ServerAnnouncer(server, f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)
        body = announcer._announcement()
        assert len(json.dumps(body).encode()) <= MAX_ANNOUNCEMENT
        assert body["document_count"] == 60 and 0 < len(body["documents"]) < 40
        assert body["documents"][0]["id"] == rows[0].document_id  # the newest first
        announcer.start()
        try:
            for _ in range(100):
                servers = (await api("servers"))[1]["servers"]
                if servers:
                    break
                await asyncio.sleep(0.05)
            (entry,) = servers
            assert entry["document_count"] == 60
            assert len(entry["documents"]) == len(body["documents"])
        finally:
            await announcer.stop()
