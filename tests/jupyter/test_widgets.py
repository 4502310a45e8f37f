"""The notebook widgets (`LiveView`, `DocumentBrowser`, `LoginWidget`), driven without a kernel.

ipywidgets and anywidget work without a comm: the tests set and read the
widgets' state directly and play the front end by calling the handler of
its custom messages (and by catching what the widget sends).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from autosync_jupyter.auth.oidc import AuthConfig
from autosync_jupyter.crdt.document import Document
from autosync_jupyter.crdt.json_tree import document_tree, short_heads, to_tree
from autosync_jupyter.errors import AutosyncError, SyncTimeout
from autosync_jupyter.ids import generate_document_id
from autosync_jupyter.jupyter.browser import BrowserTable, DocumentBrowser
from autosync_jupyter.jupyter.live_view import STATIC, LiveView, Throttle
from autosync_jupyter.jupyter.login_widget import LoginWidget, unverified_claims
from autosync_jupyter.runtime.blocking import BlockingConnection
from autosync_jupyter.runtime.connection import connect
from autosync_jupyter.runtime.server import SyncServer
from tests.oidc_provider import CLIENT_ID, OIDCProvider

FIXTURES = Path(__file__).parent.parent / "fixtures"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


until = functools.partial(eventually, timeout=5.0)


def sent_messages(widget: Any) -> list[dict[str, Any]]:
    """Record what ``widget`` sends to its front end (instead of the comm)."""
    sent: list[dict[str, Any]] = []
    widget.send = lambda content, buffers=None: sent.append(content)
    return sent


# -- tree -------------------------------------------------------------------------------


def test_tree_keeps_every_value_kind_apart() -> None:
    """Maps, lists, text, numbers, booleans, null, bytes, timestamps and counters each convert."""
    doc = Document.load((FIXTURES / "js_counters.automerge").read_bytes())
    tree = document_tree(doc)
    assert tree["hits"] == {"$counter": 115}
    assert tree["nested"] == {"deeper": [{"c": {"$counter": -3}}], "hits": {"$counter": 3}}
    assert tree["raw"] == {"$bytes": "AAH/"}
    assert tree["when"] == {"$date": "2023-11-14T22:13:20.123000+00:00"}
    assert tree["f"] == 1.5 and tree["flag"] is True and tree["off"] is False
    assert tree["nil"] is None and tree["title"] == "hello" and tree["n"] == 1
    assert tree["list"] == [{"$counter": 13}, 5, {"$counter": -5}]
    json.dumps(tree, allow_nan=False)  # JSON as it is


def test_tree_marks_what_json_cannot_hold() -> None:
    """Big ints, NaN and infinities get markers; a map with a ``$`` key is wrapped."""
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    tree = to_tree(
        {
            "big": 2**60,
            "nan": float("nan"),
            "inf": float("-inf"),
            "when": when,
            "naive": dt.datetime(2024, 1, 1),
            "user": {"$bytes": "not bytes"},
            "t": ("a", b"\x00"),
        }
    )
    assert tree["big"] == {"$int": str(2**60)}
    assert tree["nan"] == {"$float": "NaN"} and tree["inf"] == {"$float": "-Infinity"}
    assert tree["when"] == {"$date": "2024-05-06T05:08:09+00:00"}
    assert tree["naive"] == {"$date": "2024-01-01T00:00:00+00:00"}
    assert tree["user"] == {"$map": {"$bytes": "not bytes"}}
    assert tree["t"] == ["a", {"$bytes": "AA=="}]
    # Heads read as automerge-repo writes them in URLs (bs58check); text is taken as is.
    assert short_heads(["ffeeddccbbaa", bytes([1] * 32)]) == ["SeLqn3UA", "ffeeddcc"]


# -- throttle ---------------------------------------------------------------------------


async def test_throttle_coalesces_bursts_and_runs_the_last_one() -> None:
    """A burst of pokes runs the action once at once and once more at the end, from any thread."""
    loop = asyncio.get_running_loop()
    calls: list[float] = []
    throttle = Throttle(loop, lambda: calls.append(loop.time()), interval=0.05)
    for _ in range(100):
        throttle.poke()
    await until(lambda: len(calls) == 1)
    for _ in range(100):
        await asyncio.to_thread(throttle.poke)
    await until(lambda: len(calls) == 2)
    await asyncio.sleep(0.1)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.045
    assert throttle.runs == 2
    throttle.cancel()
    throttle.poke()
    await asyncio.sleep(0.1)
    assert len(calls) == 2


def test_widgets_need_an_event_loop() -> None:
    """Outside a running loop a widget says where it must be created."""
    with pytest.raises(AutosyncError, match="event loop"):
        LiveView(Document())


# -- LiveView ---------------------------------------------------------------------------


async def test_live_view_follows_server_changes_throttled() -> None:
    """Many quick server-side changes reach the view as a few updates, ending at the last state."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"n": 0, "items": []})
        view = LiveView((server, doc_id))
        assert view.value == {"items": [], "n": 0}
        assert view.url == f"automerge:{doc_id}" and view.title == view.url
        assert view.updated == 0 and len(view.heads) == 1
        for i in range(1, 41):

            def edit(d: Any, i: int = i) -> None:
                d["n"] = i

            await server.change_document(doc_id, edit)
        await until(lambda: view.value["n"] == 40)
        assert 1 <= view.updated < 20
        await server.change_document(doc_id, lambda d: d["items"].append("x"))
        await until(lambda: view.value["items"] == ["x"])
        view.close()


async def test_live_view_follows_a_client_handle() -> None:
    """A DocHandle's view shows the server's edits (remote) and the handle's own (local)."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"title": "a"})
        async with connect(server.url) as conn:
            handle = await conn.open(doc_id)
            view = LiveView(handle, title="shared")
            assert view.title == "shared" and view.value == {"title": "a"}
            await server.change_document(doc_id, lambda d: d.update(title="b"))
            await until(lambda: view.value["title"] == "b")
            with handle.doc.change() as d:
                d["done"] = True
            await until(lambda: view.value.get("done") is True)
            assert view.updated >= 2
            view.detach()
            await server.change_document(doc_id, lambda d: d.update(title="c"))
            await until(lambda: handle.doc["title"] == "c")
            await asyncio.sleep(0.15)
            assert view.value["title"] == "b"
            assert "detached" in repr(view) and "shared" in repr(view)


async def test_live_view_of_a_document_and_detach() -> None:
    """A plain Document's view follows its local changes until detached."""
    doc = Document({"x": 1})
    view = LiveView(doc)
    assert view.title == "Document" and view.url == ""
    with doc.change() as d:
        d["x"] = 2
    await until(lambda: view.value == {"x": 2})
    assert view.updated == 1
    view.detach()
    with doc.change() as d:
        d["x"] = 3
    await asyncio.sleep(0.15)
    assert view.value == {"x": 2} and view.updated == 1


async def test_live_view_loads_a_stored_document(tmp_path: Path) -> None:
    """A document on disk but not in memory is loaded in the background, then shown."""
    async with SyncServer(port=0, data_dir=tmp_path) as server:
        doc_id = await server.create_document({"stored": True})
    async with SyncServer(port=0, data_dir=tmp_path) as server:
        assert server.snapshot(doc_id) is None
        view = LiveView((server, f"automerge:{doc_id}"))
        await until(lambda: view.value == {"stored": True})
        assert not view.loading and view.error == ""
        view.close()


async def test_live_view_of_an_unknown_document_shows_an_error() -> None:
    """An id the server does not hold ends in ``error``, not an exception in the loop."""
    async with SyncServer(port=0, data_dir=None) as server:
        missing = generate_document_id()
        view = LiveView((server, missing))
        await until(lambda: view.error != "")
        assert missing in view.error and view.value is None
        assert "error" in repr(view)
    with pytest.raises(TypeError, match="LiveView shows"):
        LiveView(42)  # type: ignore[arg-type]


async def test_live_view_follows_a_blocking_handle() -> None:
    """A BlockingDocHandle's changes, made in another thread, reach the view in the loop."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"count": 0})
        conn = await asyncio.to_thread(BlockingConnection, server.url)
        try:
            handle = await asyncio.to_thread(conn.open, doc_id)
            view = LiveView(handle)
            assert view.value == {"count": 0}

            def edit() -> None:
                for i in range(1, 21):
                    with handle.change() as d:
                        d["count"] = i

            await asyncio.to_thread(edit)
            await until(lambda: view.value == {"count": 20})
            assert view.updated < 20
            view.close()
        finally:
            await asyncio.to_thread(conn.close)


async def test_live_view_opens_a_document_on_a_connection() -> None:
    """``(connection, doc_id)`` opens the document in the background; a bad id shows an error."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"remote": 1})
        async with connect(server.url, timeout=2) as conn:
            view = LiveView((conn, doc_id))
            await until(lambda: view.value == {"remote": 1})
            assert doc_id in conn.handles
            missing = LiveView((conn, generate_document_id()))
            await until(lambda: missing.error != "")
            assert "unavailable" in missing.error


# -- DocumentBrowser --------------------------------------------------------------------


async def test_browser_lists_server_documents_and_peers() -> None:
    """Rows follow created documents and connected peers; open shows a LiveView in place."""
    async with SyncServer(port=0, data_dir=None) as server:
        first = await server.create_document({"a": 1})
        browser = DocumentBrowser(server)
        assert [row["id"] for row in browser.rows] == [first]
        row = browser.rows[0]
        assert row["url"] == f"automerge:{first}" and row["size"] > 0 and row["peers"] == 0
        assert row["last_change"] is not None and len(row["heads"]) == 1
        second = await server.create_document()
        await until(lambda: len(browser.rows) == 2)
        assert {row["id"] for row in browser.rows} == {first, second}
        async with connect(server.url) as conn:
            await conn.open(first)
            await until(
                lambda: (
                    browser.table.rows[[r["id"] for r in browser.rows].index(first)]["peers"] == 1
                )
            )
        view = browser.open(first)
        assert isinstance(view, LiveView) and browser.view is view
        assert browser.slot.children == (view,) and browser.table.selected == first
        assert view.value == {"a": 1}
        assert "2 documents" in repr(browser)
        browser.close()


async def test_browser_front_end_create_and_open() -> None:
    """The front end's "create" makes, lists and opens a document; "open-url" checks its input."""
    async with SyncServer(port=0, data_dir=None) as server:
        browser = DocumentBrowser(server)
        opened: list[LiveView] = []
        browser.on_open(opened.append)
        assert browser.rows == []
        browser.table._handle_custom_msg({"type": "create"}, [])
        await until(lambda: len(browser.rows) == 1 and browser.view is not None)
        new_id = browser.rows[0]["id"]
        assert browser.table.selected == new_id and opened[0].document_id == new_id
        assert browser.table.message == f"created {new_id}"
        browser.table._handle_custom_msg({"type": "open-url", "id": "nonsense"}, [])
        assert "not a document id" in browser.table.message
        missing = generate_document_id()
        browser.table._handle_custom_msg({"type": "open-url", "id": f"automerge:{missing}"}, [])
        assert f"no document {missing}" in browser.table.message
        doc_id = await browser.create({"title": "from Python"})
        assert browser.table.selected == doc_id and browser.view is not None
        assert browser.view.value == {"title": "from Python"}
        browser.table._handle_custom_msg({"type": "open", "id": new_id}, [])
        assert browser.view.document_id == new_id and len(opened) == 3
        browser.table._handle_custom_msg({"type": "refresh"}, [])
        browser.close()


async def test_browser_of_a_connection() -> None:
    """On a connection the rows are its open documents; the id field opens another there."""
    async with SyncServer(port=0, data_dir=None) as server:
        known = await server.create_document({"k": 1})
        async with connect(server.url, timeout=2) as conn:
            browser = DocumentBrowser(conn, open_in_place=False)
            assert browser.rows == [] and browser.table.kind == "connection"
            browser.table._handle_custom_msg({"type": "open-url", "id": f"automerge:{known}"}, [])
            await until(lambda: [(r["id"], r["state"]) for r in browser.rows] == [(known, "ready")])
            assert browser.slot.children == ()  # not in place: the caller places the view
            row = browser.rows[0]
            assert row["peers"] is None and row["size"] > 0 and row["state"] == "ready"
            await server.change_document(known, lambda d: d.update(k=2))
            await until(lambda: browser.rows[0]["last_change"] is not None)
            created = await browser.create({"made": "here"})
            assert {row["id"] for row in browser.rows} == {known, created}
            assert (await server.read_document(created)) == {"made": "here"}
            browser.close()


async def test_browser_refuses_other_sources() -> None:
    """A browser lists a running server or a connection, nothing else."""
    with pytest.raises(TypeError, match="DocumentBrowser lists"):
        DocumentBrowser(Document())  # type: ignore[arg-type]
    with pytest.raises(AutosyncError, match="not started"):
        DocumentBrowser(SyncServer(port=0, data_dir=None))


# -- LoginWidget ------------------------------------------------------------------------


def act_as_browser(widget: LoginWidget) -> list[dict[str, Any]]:
    """Play the front end's popup: follow each ``navigate`` to the provider, as a browser would."""
    sent: list[dict[str, Any]] = []

    def visit(url: str) -> None:
        with _NO_PROXY.open(url, timeout=10) as response:  # follows the loopback redirect
            response.read()

    def send(content: dict[str, Any], buffers: object = None) -> None:
        sent.append(content)
        if content.get("type") == "navigate" and not content.get("device"):
            threading.Thread(target=visit, args=(content["url"],), daemon=True).start()

    widget.send = send
    return sent


async def test_login_in_a_popup(provider: OIDCProvider) -> None:
    """Front end "start" (loopback, popup) → navigate → redirect → signed in; the token stays."""
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer)
    sent = act_as_browser(widget)
    logins: list[str] = []
    widget.on_login(logins.append)
    assert widget.status == "signed-out" and widget.token is None
    widget._handle_custom_msg({"type": "start", "loopback": True, "popup": True}, [])
    assert widget.status == "waiting"
    token = await widget.wait(timeout=10)
    assert widget.status == "signed-in" and widget.who == "alice@company.com"
    assert widget.token == token and logins == [token] and widget.claims["sub"] == "user-1"
    claims = await AuthConfig(CLIENT_ID, provider.issuer).authenticate(token)
    assert claims["email"] == widget.who
    assert [m["type"] for m in sent] == ["navigate", "done"]
    assert sent[0]["url"].startswith(provider.issuer + "/authorize?")
    assert token not in json.dumps(widget.get_state(), default=str)
    assert "signed in as alice@company.com" in repr(widget)
    widget._handle_custom_msg({"type": "sign-out"}, [])
    assert widget.status == "signed-out" and widget.token is None and widget.who == ""


async def test_front_end_messages_handled_in_another_thread_run_in_the_loops(
    provider: OIDCProvider,
) -> None:
    """A message that reaches a widget in a subshell's thread is handled in the loop's."""
    loop_thread = threading.get_ident()
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer)
    act_as_browser(widget)
    status_set_in: set[int] = set()
    widget.observe(lambda change: status_set_in.add(threading.get_ident()), names="status")
    start = {"type": "start", "loopback": True, "popup": True}
    await asyncio.to_thread(widget._handle_custom_msg, start, [])
    await widget.wait(timeout=10)
    assert widget.status == "signed-in" and status_set_in == {loop_thread}
    async with SyncServer(port=0, data_dir=None) as server:
        browser = DocumentBrowser(server)
        message_set_in: set[int] = set()
        browser.table.observe(
            lambda change: message_set_in.add(threading.get_ident()), names="message"
        )
        await asyncio.to_thread(browser.table._handle_custom_msg, {"type": "create"}, [])
        await until(lambda: len(browser.rows) == 1 and browser.view is not None)
        assert message_set_in == {loop_thread}
        browser.close()


def _redirect_query(authorize_url: str) -> dict[str, str]:
    """GET the provider's authorize URL and return the query of its redirect (not followed)."""

    class Stop(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Stop())
    try:
        opener.open(authorize_url, timeout=10)
    except urllib.error.HTTPError as exc:
        location = exc.headers["Location"]
    else:
        raise AssertionError("the provider did not redirect")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


async def test_login_through_the_jupyter_callback_page(provider: OIDCProvider) -> None:
    """A remote browser: the provider redirects to the server's callback page, whose
    query the front end relays; the kernel checks state and exchanges the code."""
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer)
    sent: list[dict[str, Any]] = []
    widget.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    callback = "http://127.0.0.1:8888/jh/user/x/autosync/oidc/callback"
    start = {"type": "start", "loopback": False, "popup": True, "callback": callback}
    widget._handle_custom_msg(start, [])
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.02)
    (navigate,) = sent
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(navigate["url"]).query))
    assert query["redirect_uri"] == callback
    # A relayed message with a forged state is refused...
    params = await asyncio.to_thread(_redirect_query, navigate["url"])
    widget._handle_custom_msg({"type": "redirect", "params": {**params, "state": "x"}}, [])
    await asyncio.sleep(0.05)
    assert widget.status == "error" and "State mismatch" in widget.message
    # ...the real one signs in.
    sent.clear()
    widget._handle_custom_msg(start, [])
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.02)
    params = await asyncio.to_thread(_redirect_query, sent[0]["url"])
    widget._handle_custom_msg({"type": "redirect", "params": {**params, "junk": 1}}, [])
    token = await widget.wait(timeout=10)
    assert widget.status == "signed-in" and widget.who == "alice@company.com"
    assert token not in json.dumps(widget.get_state(), default=str)


async def test_login_callback_flow_needs_the_page(provider: OIDCProvider) -> None:
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer, flow="callback")
    widget.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    await widget._start(loopback=False, popup=True, callback=None)
    assert widget.status == "error" and "server extension" in widget.message


async def test_login_with_the_device_flow(provider: OIDCProvider) -> None:
    """A browser away from the kernel (loopback false) gets the device flow and its code."""
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer)
    sent = act_as_browser(widget)
    widget._handle_custom_msg({"type": "start", "loopback": False, "popup": True}, [])
    await until(lambda: widget.user_code != "")
    assert widget.verification_uri == provider.issuer + "/device"
    assert sent[0] == {"type": "navigate", "url": widget.verification_uri, "device": True}
    provider.approve_device(widget.user_code)
    token = await widget.wait(timeout=10)
    assert widget.status == "signed-in" and unverified_claims(token)["email"] == widget.who
    assert widget.user_code == "" and token not in json.dumps(widget.get_state(), default=str)


async def test_login_errors_show_in_the_widget(provider: OIDCProvider) -> None:
    """A refusal by the provider → status "error" with its message; trying again works."""
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer, flow="device")
    act_as_browser(widget)
    provider.consent = False
    widget._handle_custom_msg({"type": "start", "loopback": True, "popup": True}, [])
    await until(lambda: widget.user_code != "")
    provider.approve_device(widget.user_code, approve=False)
    await until(lambda: widget.status == "error")
    assert "access_denied" in widget.message and widget.token is None
    with pytest.raises(SyncTimeout):
        await widget.wait(timeout=0.05)
    widget.sign_in()
    await until(lambda: widget.user_code != "")
    provider.approve_device(widget.user_code)
    assert await widget.wait(timeout=10) == widget.token


async def test_login_timeout_and_cancel(provider: OIDCProvider) -> None:
    """No redirect within the timeout → error; the front end's cancel stops a sign-in."""
    widget = LoginWidget(CLIENT_ID, issuer=provider.issuer, timeout=0.2)
    sent = sent_messages(widget)
    widget._handle_custom_msg({"type": "start", "loopback": True, "popup": True}, [])
    await until(lambda: widget.status == "error")
    assert "Timed out" in widget.message and sent[-1] == {"type": "done"}
    widget.timeout = 30
    widget._handle_custom_msg({"type": "start", "loopback": True, "popup": True}, [])
    await until(lambda: any(m["type"] == "navigate" for m in sent[1:]))
    widget._handle_custom_msg({"type": "cancel"}, [])
    assert widget.status == "signed-out" and widget.message == "sign-in cancelled"
    with pytest.raises(ValueError, match="flow"):
        LoginWidget(CLIENT_ID, flow="magic")  # type: ignore[arg-type]


async def test_login_without_a_client_id_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing client id is reported in the widget, not raised into the loop."""
    monkeypatch.delenv("OIDC_CLIENT_ID", raising=False)
    widget = LoginWidget(issuer="http://127.0.0.1:9")
    sent_messages(widget)
    await widget.sign_in(loopback=True, popup=True)
    assert widget.status == "error" and "client_id" in widget.message


# -- front-end files --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["live_view.js", "browser.js", "login.js"])
def test_esm_files_parse_as_modules(name: str, tmp_path: Path) -> None:
    """Each front-end file is valid ESM with a default export (node --check)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    source = (STATIC / name).read_text()
    assert "export default" in source and "innerHTML" not in source and "import " not in source
    copy = tmp_path / (Path(name).stem + ".mjs")
    copy.write_text(source)
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_widgets_ship_their_front_end() -> None:
    """The widgets load their ESM and CSS from the package, never from a CDN."""
    assert str(LiveView._esm) == (STATIC / "live_view.js").read_text()
    assert str(LoginWidget._esm) == (STATIC / "login.js").read_text()
    assert str(BrowserTable._esm) == (STATIC / "browser.js").read_text()
    assert str(LiveView._css) == (STATIC / "widgets.css").read_text()
    assert "http" not in (STATIC / "widgets.css").read_text()


async def test_browser_of_a_blocking_connection() -> None:
    """A BlockingConnection's documents are listed; its changes (in its thread) mark the rows."""
    async with SyncServer(port=0, data_dir=None) as server:
        doc_id = await server.create_document({"v": 1})
        conn = await asyncio.to_thread(BlockingConnection, server.url)
        try:
            handle = await asyncio.to_thread(conn.open, doc_id)
            browser = DocumentBrowser(conn)
            assert [row["id"] for row in browser.rows] == [doc_id]
            assert browser.rows[0]["last_change"] is None

            def edit() -> None:
                with handle.change() as d:
                    d["v"] = 2

            await asyncio.to_thread(edit)
            await until(lambda: browser.rows[0]["last_change"] is not None)
            view = browser.open(doc_id)
            assert view.value == {"v": 2} and browser.view is view
            created = await browser.create()
            assert created in {row["id"] for row in browser.rows}
            browser.close()
        finally:
            await asyncio.to_thread(conn.close)


def test_public_names_resolve_and_widgets_load_lazily() -> None:
    """Every name in __all__ exists; importing the package does not import the widget stack."""
    import subprocess
    import sys

    import autosync_jupyter

    assert [name for name in autosync_jupyter.__all__ if not hasattr(autosync_jupyter, name)] == []
    assert autosync_jupyter.LiveView is LiveView
    probe = (
        "import sys, autosync_jupyter; print('anywidget' in sys.modules, 'IPython' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
