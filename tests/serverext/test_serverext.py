"""The Jupyter server extension: every route, behind Jupyter's authentication.

The server runs under pytest-jupyter's default base_url ``/a%40b/`` (a
percent-encoded, non-root prefix); one test runs under ``/jh/user/x/`` as
JupyterHub serves single-user servers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError
from traitlets.config import Config

from autosync_jupyter import (
    ConnectionFailed,
    Document,
    PeerId,
    SyncServer,
    connect,
    document_url,
    fetch,
)
from autosync_jupyter.core.protocol import Join, decode, encode
from autosync_jupyter.ids import decode_heads, encode_heads
from autosync_jupyter.runtime.server import PeerClosed
from autosync_jupyter.serverext import AutosyncExtension, _jupyter_server_extension_points
from autosync_jupyter.serverext.handlers import CALLBACK_CSP
from autosync_jupyter.serverext.peer import TornadoPeer
from tests.interop.jspeer import JSPeer, Op, require_js_install

from .conftest import ApiCall

REPO = Path(__file__).resolve().parents[2]
NO_AUTH = {"Authorization": ""}


async def _status_of(fetcher: Any, *parts: str, **kwargs: Any) -> int:
    """The HTTP status of a request (errors included; 101 for an accepted WebSocket)."""
    try:
        response = await fetcher(*parts, **kwargs)
    except HTTPClientError as exc:
        return exc.code
    if isinstance(response, WebSocketClientConnection):
        response.close()
        return 101
    code: int = response.code
    return code


async def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll an async predicate until it holds (or fail after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


# -- authentication --------------------------------------------------------------------


async def test_websocket_refuses_without_token(jp_ws_fetch: Any) -> None:
    """No cookie and no token: the upgrade is refused with 403."""
    assert await _status_of(jp_ws_fetch, "autosync", "ws", headers=NO_AUTH) == 403


async def test_websocket_refuses_wrong_token(jp_ws_fetch: Any) -> None:
    """A wrong token in the query string is refused with 403."""
    code = await _status_of(
        jp_ws_fetch, "autosync", "ws", headers=NO_AUTH, params={"token": "wrong"}
    )
    assert code == 403


async def test_websocket_origin_check_for_cookie_logins(
    jp_ws_fetch: Any, foreign_page_headers: dict[str, str]
) -> None:
    """A browser page (cookie login) from another site is refused; from Jupyter's own, accepted.

    Token-authenticated requests skip the Origin check, as everywhere in Jupyter.
    """
    foreign = foreign_page_headers
    assert await _status_of(jp_ws_fetch, "autosync", "ws", headers=foreign) == 403
    own = {**foreign, "Origin": f"http://{foreign['Host']}"}
    assert await _status_of(jp_ws_fetch, "autosync", "ws", headers=own) == 101


@pytest.mark.parametrize(
    ("method", "parts", "body"),
    [
        ("GET", ("documents",), None),
        ("POST", ("documents",), "{}"),
        ("GET", ("documents", "4NMNnkMhL8jXrdJ9jamS58PAVdXu"), None),
    ],
)
async def test_rest_refuses_without_token(
    api: ApiCall, method: str, parts: tuple[str, ...], body: str | None
) -> None:
    """Every REST route answers 403 (JSON, no login redirect) without a token."""
    status, reply = await api(*parts, method=method, body=body, headers=NO_AUTH)
    assert status == 403
    assert "traceback" not in json.dumps(reply)


async def test_unknown_route_is_404_only_when_signed_in(api: ApiCall, jp_fetch: Any) -> None:
    """An unknown path under autosync/ is a JSON 404, and 403 without a token."""
    status, reply = await api("nothing-here")
    assert status == 404
    assert reply["message"] == "no such autosync route"
    assert await _status_of(jp_fetch, "autosync", "nope", headers=NO_AUTH) == 403


async def test_post_with_cookie_needs_xsrf(api: ApiCall, login_cookie: str) -> None:
    """A POST authenticated by the login cookie alone needs Jupyter's _xsrf token."""
    xsrf = "2|abcd1234|0123456789abcdef0123456789abcdef|1700000000"
    cookie = f"{login_cookie}; _xsrf={xsrf}"
    headers = {"Authorization": "", "Cookie": cookie}
    status, _ = await api("documents", method="GET", headers=headers)
    assert status == 200  # the cookie alone signs in
    status, reply = await api("documents", method="POST", body="{}", headers=headers)
    assert status == 403
    assert "xsrf" in reply["message"].lower()
    status, reply = await api(
        "documents", method="POST", body="{}", headers={**headers, "X-XSRFToken": xsrf}
    )
    assert status == 201, reply


class _NoAutosync(Authorizer):
    """An authorizer that allows everything but the autosync resource, recording the asks."""

    asked: ClassVar[list[tuple[str, str]]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == "autosync":
            self.asked.append((handler.request.method, action))
            return False
        return True


@pytest.mark.parametrize(
    "jp_server_config",
    [
        Config(
            {
                "ServerApp": {
                    "jpserver_extensions": {"autosync_jupyter": True},
                    "authorizer_class": _NoAutosync,
                }
            }
        )
    ],
)
async def test_authorizer_decides(jp_server_config: Config, api: ApiCall, jp_ws_fetch: Any) -> None:
    """Jupyter's authorizer is asked about "autosync": read for GETs, write for POST and sync."""
    _NoAutosync.asked.clear()
    assert (await api("documents"))[0] == 403
    assert (await api("documents", method="POST", body="{}"))[0] == 403
    assert (await api("documents", "4NMNnkMhL8jXrdJ9jamS58PAVdXu"))[0] == 403
    assert await _status_of(jp_ws_fetch, "autosync", "ws") == 403
    assert _NoAutosync.asked == [
        ("GET", "read"),
        ("POST", "write"),
        ("GET", "read"),
        ("GET", "write"),
    ]


@pytest.fixture
def blocked_data_dir(jp_server_config: Config, tmp_path: Path) -> Path:
    """Configure a data_dir that cannot be created (a file is in the way)."""
    path = tmp_path / "not-a-directory"
    path.write_text("in the way")
    jp_server_config.AutosyncExtension.data_dir = str(path)
    return path


async def test_hub_that_cannot_start_answers_503(
    blocked_data_dir: Path, api: ApiCall, jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    """A store that cannot open makes the routes answer 503; the server itself runs on."""
    status, reply = await api("documents")
    assert status == 503
    assert "not running" in reply["message"]
    assert await _status_of(jp_ws_fetch, "autosync", "ws") == 503
    assert (await jp_fetch("api", "status")).code == 200
    assert blocked_data_dir.read_text() == "in the way"


# -- REST --------------------------------------------------------------------------------


async def test_create_list_read(api: ApiCall, autosync_ext: AutosyncExtension) -> None:
    """POST makes a document, GET lists it and reads it back as JSON."""
    status, created = await api(
        "documents", method="POST", body=json.dumps({"content": {"title": "hi", "n": [1, 2.5]}})
    )
    assert status == 201
    doc_id = created["id"]
    assert created["url"] == document_url(doc_id)

    status, listing = await api("documents")
    assert status == 200
    [row] = [d for d in listing["documents"] if d["id"] == doc_id]
    assert row["url"] == f"automerge:{doc_id}"
    assert row["loaded"] is True
    assert row["size"] > 0
    assert len(row["heads"]) == 1
    assert row["peers"] == 0
    assert row["last_change"] is not None
    assert row["title"] == "hi" and row["error"] is None

    status, read = await api("documents", doc_id)
    assert status == 200
    assert read["id"] == doc_id
    assert read["url"] == created["url"]
    assert read["content"] == {"title": "hi", "n": [1, 2.5]}
    assert read["heads"] == row["heads"]
    assert document_url(doc_id, decode_heads(read["heads"])).endswith("#" + read["heads"][0])

    # The same document, named by its automerge: URL (percent-encoded in the path).
    status, by_url = await api("documents", created["url"])
    assert status == 200
    assert by_url["content"] == read["content"]


async def test_create_with_empty_body(api: ApiCall) -> None:
    """An empty POST body makes an empty document."""
    status, created = await api("documents", method="POST", body="")
    assert status == 201
    status, read = await api("documents", created["id"])
    assert (status, read["content"]) == (200, {})


async def test_created_documents_are_on_disk_under_root_dir(
    api: ApiCall, autosync_ext: AutosyncExtension, jp_root_dir: Path
) -> None:
    """The default data_dir is .autosync under the server's root_dir."""
    assert autosync_ext.resolved_data_dir() == str(jp_root_dir / ".autosync")
    status, created = await api("documents", method="POST", body='{"content": {"a": 1}}')
    assert status == 201
    stored = [p for p in (jp_root_dir / ".autosync").rglob("*") if created["id"][:2] in p.parts]
    assert stored, "nothing was written under root_dir/.autosync"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"content": [1]}', "'content' must be a JSON object"),
        ('{"content": "text"}', "'content' must be a JSON object"),
        ('{"content": {}, "extra": 1}', "unknown fields ['extra']"),
    ],
)
async def test_create_rejects_bad_bodies(api: ApiCall, body: str, fragment: str) -> None:
    """A malformed create request gets 400 with a message that says what is wrong."""
    status, reply = await api("documents", method="POST", body=body)
    assert status == 400
    assert fragment in reply["message"]
    assert "Traceback" not in json.dumps(reply)


async def test_create_rejects_oversized_body(api: ApiCall, autosync_ext: AutosyncExtension) -> None:
    """A body beyond max_message_size is refused with 413."""
    autosync_ext.max_message_size = 100
    body = json.dumps({"content": {"text": "x" * 200}})
    status, reply = await api("documents", method="POST", body=body)
    assert status == 413
    assert "100 bytes" in reply["message"]


async def test_read_bad_and_unknown_ids(api: ApiCall) -> None:
    """A malformed id is 400, a well-formed unknown one 404, both as JSON."""
    status, reply = await api("documents", "not-a-valid-id!")
    assert status == 400
    assert "invalid document id" in reply["message"]
    status, reply = await api("documents", "4NMNnkMhL8jXrdJ9jamS58PAVdXu")
    assert status == 404
    assert reply["message"] == "no document 4NMNnkMhL8jXrdJ9jamS58PAVdXu on this server"


async def test_read_at_heads(api: ApiCall, autosync_ext: AutosyncExtension) -> None:
    """An automerge: URL pinned at heads reads that version; unknown heads are 404."""
    server = await autosync_ext.ready()
    doc_id = await server.create_document({"v": 1})
    first = (await server.get_document(doc_id)).heads
    await server.change_document(doc_id, lambda d: d.update({"v": 2}))
    pinned = document_url(doc_id, first)
    assert "#" in pinned
    status, old = await api("documents", pinned)
    assert status == 200, old
    assert old["content"] == {"v": 1} and old["url"] == pinned
    assert old["heads"] == sorted(encode_heads(first))
    assert (await api("documents", doc_id))[1]["content"] == {"v": 2}
    status, reply = await api("documents", document_url(doc_id, [bytes(32)]))
    assert status == 404 and "no change with the heads" in reply["message"]
    status, reply = await api("documents", f"automerge:{doc_id}#not-a-head")
    assert status == 400 and "invalid head" in reply["message"]


# -- the WebSocket with our client -------------------------------------------------------


async def test_python_client_syncs_through_route(ws_url: str, api: ApiCall) -> None:
    """Our client, with ?token= in the URL, creates and edits; REST sees it; fetch reads it."""
    async with connect(ws_url) as conn:
        handle = await conn.create({"title": "from python"})
        doc_id = handle.document_id
        status, read = await api("documents", doc_id)
        assert status == 200
        assert read["content"] == {"title": "from python"}
        with handle.doc.change() as d:
            d["title"] = "edited"

        async def edited() -> bool:
            _, now = await api("documents", doc_id)
            return bool(now["content"] == {"title": "edited"})

        await _wait_until(edited)
        status, listing = await api("documents")
        [row] = [d for d in listing["documents"] if d["id"] == doc_id]
        assert row["peers"] == 1
    doc = await fetch(ws_url, doc_id)
    assert isinstance(doc, Document)
    assert doc.to_py() == {"title": "edited"}


async def test_python_client_without_token_is_refused(ws_url: str) -> None:
    """Without the token our client fails to connect, and says the server answered 403."""
    with pytest.raises(ConnectionFailed, match="403"):
        await fetch(ws_url.split("?", 1)[0], "4NMNnkMhL8jXrdJ9jamS58PAVdXu")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param("hello", 1003, id="text-frame-1003"),  # as SyncServer does
        pytest.param(b"\x00" * 200, 1009, id="beyond-max-message-size-1009"),
    ],
)
async def test_bad_frames_close_the_connection(
    jp_ws_fetch: Any, autosync_ext: AutosyncExtension, frame: str | bytes, code: int
) -> None:
    """A text frame closes with 1003; a message beyond max_message_size with 1009."""
    autosync_ext.max_message_size = 100
    ws = await jp_ws_fetch("autosync", "ws")
    try:
        await ws.write_message(frame, binary=isinstance(frame, bytes))
        assert await asyncio.wait_for(ws.read_message(), 10) is None
        assert ws.close_code == code
    finally:
        ws.close()


async def test_shutdown_closes_peers_with_1001(
    jp_ws_fetch: Any, autosync_ext: AutosyncExtension
) -> None:
    """Stopping the extension closes connections with 1001 ("going away")."""
    ws = await jp_ws_fetch("autosync", "ws")
    try:
        await ws.write_message(encode(Join(sender_id=PeerId("test-peer"))), binary=True)
        reply = await asyncio.wait_for(ws.read_message(), 10)
        assert isinstance(reply, bytes)
        assert decode(reply).type == "peer"
        await autosync_ext.stop_extension()
        assert await asyncio.wait_for(ws.read_message(), 10) is None
        assert ws.close_code == 1001
    finally:
        ws.close()


_SEEN_IDENTITIES: list[Any] = []


def _signed_in_only(peer: Any, doc_id: str) -> bool | None:
    """A share policy (set through the traitlet) that shares only with Jupyter users."""
    _SEEN_IDENTITIES.append(peer.identity)
    identity = peer.identity or {}
    return None if identity.get("sub") else False


@pytest.mark.parametrize(
    "jp_server_config",
    [
        Config(
            {
                "ServerApp": {"jpserver_extensions": {"autosync_jupyter": True}},
                "AutosyncExtension": {"share": _signed_in_only},
            }
        )
    ],
)
async def test_identity_reaches_share_policy(
    jp_server_config: Config, ws_url: str, api: ApiCall, autosync_ext: AutosyncExtension
) -> None:
    """The Jupyter user is the peer's identity: a configured share policy decides by it."""
    assert autosync_ext.share is _signed_in_only
    _SEEN_IDENTITIES.clear()
    _, created = await api("documents", method="POST", body='{"content": {"x": 1}}')
    doc = await fetch(ws_url, created["id"])
    assert doc.to_py() == {"x": 1}
    assert _SEEN_IDENTITIES, "the share policy was not consulted"
    for identity in _SEEN_IDENTITIES:
        assert isinstance(identity["sub"], str) and identity["sub"]
        assert isinstance(identity["name"], str)


# -- the official JS client ----------------------------------------------------------------


async def test_js_client_through_route(ws_url: str, api: ApiCall) -> None:
    """The official JS client syncs through the route with the token in the URL."""
    require_js_install()
    async with JSPeer.start(ws_url) as js:
        # JS creates, the REST API lists and reads it.
        made = await js.create({"title": "from js"})
        js_id = made["documentId"]

        async def synced() -> bool:
            # Listed as soon as JS announces it; the content follows with the sync.
            _, listing = await api("documents")
            if not any(d["id"] == js_id for d in listing["documents"]):
                return False
            _, read = await api("documents", js_id)
            return bool(read["content"] == {"title": "from js"})

        await _wait_until(synced)

        # REST creates, JS finds it.
        _, created = await api("documents", method="POST", body='{"content": {"n": 1}}')
        found = await js.find(created["id"])
        assert found["state"] == "ready"
        assert found["doc"] == {"n": 1}

        # A live edit in JS shows up in the REST read.
        await js.change(js_id, [Op.set(["title"], "edited in js")])

        async def edited() -> bool:
            _, now = await api("documents", js_id)
            return bool(now["content"]["title"] == "edited in js")

        await _wait_until(edited)


# -- the adapter alone ------------------------------------------------------------------------


class _FakeHandler:
    """Just enough of a tornado WebSocketHandler for TornadoPeer."""

    def __init__(self) -> None:
        self.ws_connection = None
        self.closed_with: tuple[int, str] | None = None

    def write_message(self, data: bytes, binary: bool = False) -> Any:
        raise WebSocketClosedError()

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


async def test_peer_close_sentinel_never_blocks() -> None:
    """on_close ends the iteration at once, even with the incoming queue full."""
    peer = TornadoPeer(_FakeHandler(), "test", max_incoming=2)  # type: ignore[arg-type]
    await peer.feed(b"a")
    await peer.feed(b"b")
    peer.feed_closed()  # synchronous: it drops the oldest message to make room
    assert [m async for m in peer] == [b"b"]
    assert peer.closed
    await peer.feed(b"late")  # the peer is gone: dropped, and never waits
    assert peer._incoming.empty()


async def test_peer_send_after_close_raises_peer_closed() -> None:
    """send() on a closed tornado connection raises PeerClosed (what SyncServer expects)."""
    handler = _FakeHandler()
    peer = TornadoPeer(handler, "test")  # type: ignore[arg-type]
    with pytest.raises(PeerClosed):
        await peer.send(b"x")
    peer.feed_closed()
    await peer.close(1000, "bye")  # already closed: no close frame, no wait
    assert handler.closed_with is None


# -- base_url ------------------------------------------------------------------------------


@pytest.mark.parametrize("jp_base_url", ["/jh/user/x/"])
async def test_routes_under_jupyterhub_base_url(
    jp_base_url: str, api: ApiCall, ws_url: str, jp_fetch: Any
) -> None:
    """Under a JupyterHub-style base_url every route lives below it."""
    assert "/jh/user/x/autosync/ws" in ws_url
    status, created = await api("documents", method="POST", body='{"content": {"hub": true}}')
    assert status == 201
    doc = await fetch(ws_url, created["id"])
    assert doc.to_py() == {"hub": True}
    response = await jp_fetch("autosync", "oidc", "callback", headers=NO_AUTH)
    assert response.code == 200


# -- the OIDC callback page ------------------------------------------------------------------


async def test_oidc_callback_page(jp_fetch: Any) -> None:
    """The callback page loads without auth, is never cached and never echoes the code."""
    code = "SECRET-CODE-1234"
    response = await jp_fetch(
        "autosync",
        "oidc",
        "callback",
        params={"code": code, "state": "st-987"},
        headers=NO_AUTH,
    )
    assert response.code == 200
    body = response.body.decode("utf-8")
    assert code not in body and "st-987" not in body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Etag" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert csp == CALLBACK_CSP
    assert "default-src 'none'" in csp
    # The CSP allows exactly the page's own script, by hash.
    [script] = re.findall(r"<script>(.*?)</script>", body, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert "postMessage(message, window.location.origin)" in script
    assert '"autosync-oidc"' in script


# -- enabling ---------------------------------------------------------------------------------


def test_config_file_enables_extension() -> None:
    """The shared-data config file enables the extension; the package names its entry point."""
    path = REPO / "jupyter-config" / "jupyter_server_config.d" / "autosync_jupyter.json"
    config = json.loads(path.read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"autosync_jupyter": True}}}
    import autosync_jupyter

    for points in (
        autosync_jupyter._jupyter_server_extension_points(),
        _jupyter_server_extension_points(),
    ):
        assert points == [{"module": "autosync_jupyter.serverext", "app": AutosyncExtension}]


def test_package_import_does_not_load_jupyter_server() -> None:
    """Importing autosync_jupyter leaves jupyter_server unimported (scripts start fast)."""
    code = "import sys, autosync_jupyter; print('jupyter_server' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


def test_extension_list_shows_it_enabled(tmp_path: Path) -> None:
    """``jupyter server extension list`` finds the config file, imports and validates the extension.

    The file is put in a private config dir (as pip installs it into
    ``{sys.prefix}/etc/jupyter``), so this holds before the package is installed.
    """
    config_d = tmp_path / "jupyter_server_config.d"
    config_d.mkdir()
    source = REPO / "jupyter-config" / "jupyter_server_config.d" / "autosync_jupyter.json"
    (config_d / "autosync_jupyter.json").write_text(source.read_text())
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path), "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    section = text.split(f"Config dir: {tmp_path}", 1)[1].split("Config dir:", 1)[0]
    assert re.search(r"autosync_jupyter\s+enabled", section), text
    assert re.search(r"autosync_jupyter\s+\S*\s*OK", section), text


def test_installed_config_file_matches() -> None:
    """Once installed (pip install .), the shared-data config file is the repository's."""
    installed = Path(
        sys.prefix, "etc", "jupyter", "jupyter_server_config.d", "autosync_jupyter.json"
    )
    if not installed.exists():
        pytest.skip(f"{installed} is not installed (pyproject shared-data not wired yet)")
    source = REPO / "jupyter-config" / "jupyter_server_config.d" / "autosync_jupyter.json"
    assert json.loads(installed.read_text()) == json.loads(source.read_text())


@pytest.fixture
def postgres_store(jp_server_config: Config, postgres_url: str) -> str:
    """The extension's store set to a new PostgreSQL database."""
    jp_server_config.AutosyncExtension.store = postgres_url
    return postgres_url


async def test_documents_go_to_a_postgres_store(
    postgres_store: str, api: ApiCall, jp_root_dir: Path
) -> None:
    """With ``store`` a postgresql:// URL, a created document is a row there, not a file."""
    import psycopg

    status, created = await api("documents", method="POST", body='{"content": {"a": 1}}')
    assert status == 201
    with psycopg.connect(postgres_store, autocommit=True) as conn:
        rows = conn.execute("SELECT DISTINCT doc_id FROM autosync_chunks").fetchall()
    assert rows == [(created["id"],)]
    assert not (jp_root_dir / ".autosync").exists()


@pytest.fixture
def shared_postgres_store(jp_server_config: Config, postgres_url: str) -> str:
    """The extension's store set to a new PostgreSQL database, shared with other servers."""
    jp_server_config.AutosyncExtension.store = postgres_url
    jp_server_config.AutosyncExtension.store_shared = True
    return postgres_url


async def test_a_shared_postgres_store_sees_and_is_seen_by_other_servers(
    shared_postgres_store: str, api: ApiCall
) -> None:
    """``store_shared``: the hub shares its database with another shared server's store."""
    from autosync_jupyter.storage import PostgresStore

    other = PostgresStore(shared_postgres_store, shared=True)
    await other.open()
    try:
        # The hub opens its store now; an exclusive one would refuse (StoreLocked: 503).
        status, created = await api("documents", method="POST", body='{"content": {"a": 1}}')
        assert status == 201
        for _ in range(200):  # the hub's commit NOTIFYs the other store
            if created["id"] in other:
                break
            await asyncio.sleep(0.05)
        assert created["id"] in other
    finally:
        await other.close()


@pytest.fixture
async def central(jp_server_config: Config, tmp_path: Path) -> AsyncIterator[SyncServer]:
    """A sync server of ours, set as the extension's upstream."""
    async with SyncServer(port=0, data_dir=tmp_path / "central") as server:
        jp_server_config.AutosyncExtension.upstreams = [server.url]
        yield server


async def test_documents_made_in_jupyter_reach_the_upstream_server(
    central: SyncServer, api: ApiCall
) -> None:
    """``upstreams``: the extension's hub is a client of the upstream and pushes its documents."""
    status, created = await api("documents", method="POST", body='{"content": {"a": 1}}')
    assert status == 201
    content = None
    for _ in range(200):  # listed at its first change: wait for the content
        if created["id"] in central.list_documents():
            content = await central.read_document(created["id"])
            if content == {"a": 1}:
                break
        await asyncio.sleep(0.05)
    assert content == {"a": 1}
