"""``%autosync`` in a real IPython kernel: a server in the kernel's loop, blocking calls
that do not deadlock, clean shutdown, and a JS peer syncing while cells run."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

from autosync_jupyter import BackgroundSyncServer, fetch
from tests.interop.jspeer import JSPeer, Op
from tests.jupyter.kernel import Kernel, off_loop, running_kernel
from tests.oidc_provider import CLIENT_ID, OIDCProvider

pytestmark = pytest.mark.kernel


def _serve(kernel: Kernel, options: str = "--data-dir data") -> str:
    out = kernel.run(f"%autosync serve {options}")
    assert "listening on ws://127.0.0.1:" in out.stdout, out.stdout
    url: str = kernel.value("autosync_jupyter.jupyter.current_session().server.url")
    return url


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As a restarted server would: connections left in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- serve, create, status, fetch -------------------------------------------------------


def test_serve_is_listening_and_serving_when_the_magic_returns(kernel: Kernel) -> None:
    """In the same cell as %autosync serve, a blocking fetch from that server succeeds."""
    out = kernel.run(
        """%autosync serve --data-dir data
%autosync create --name d --content '{"n": 1}'
s = autosync_jupyter.jupyter.current_session().server
print(autosync_jupyter.fetch_blocking(s.url, d.document_id, timeout=5).to_py())"""
    )
    assert "{'n': 1}" in out.stdout
    assert "%autosync create" in out.stdout  # the hint printed by serve


async def test_the_server_answers_between_cells_from_outside(kernel: Kernel) -> None:
    """A peer in another process fetches from the kernel's server while the kernel is idle."""
    url = _serve(kernel)
    out = kernel.run('%autosync create --content \'{"title": "hello"}\'')
    doc_url = out.stdout.strip().splitlines()[-1]
    assert doc_url.startswith("automerge:")
    document = await fetch(url, doc_url, timeout=10)
    assert document.to_py() == {"title": "hello"}


def test_create_binds_a_live_handle_and_status_lists_it(kernel: Kernel) -> None:
    _serve(kernel)
    kernel.run("%autosync create --name d --content '{\"a\": 1}'")
    kernel.run("with d.change() as root:\n    root['b'] = 2")
    assert kernel.value("d.to_py()") == {"a": 1, "b": 2}
    out = kernel.run("%autosync status")
    html = out.data("text/html")[0]
    assert kernel.value("d.document_id") in html
    assert "1 connected peer<" in html  # the live handle's connection
    kernel.run("await d.flush(timeout=5)\ns = autosync_jupyter.jupyter.current_session().server")
    assert kernel.value("await s.read_document(d.document_id)") == {"a": 1, "b": 2}


def test_serve_upstream_makes_the_kernels_server_a_hub_of_a_central_one(
    kernel: Kernel, tmp_path: Path
) -> None:
    """%autosync serve --upstream: documents made in the kernel reach the central server."""
    with BackgroundSyncServer(port=0, data_dir=tmp_path / "central") as central:
        out = kernel.run(f"%autosync serve --data-dir data --upstream {central.url}")
        assert f"upstream {central.url}: joined" in out.stdout, out.stdout
        kernel.run('%autosync create --name d --content \'{"made": "in the kernel"}\'')
        doc_id = kernel.value("d.document_id")
        deadline = time.monotonic() + 10
        while doc_id not in central.list_documents() or central.read_document(doc_id) != {
            "made": "in the kernel"
        }:
            assert time.monotonic() < deadline, "never reached the upstream"
            time.sleep(0.05)
        status = kernel.run("%autosync status").data("text/html")[0]
        assert f"upstream <code>{central.url}</code>: joined" in status
        kernel.run("%autosync stop")


def test_every_blocking_form_works_against_the_kernels_own_server(kernel: Kernel) -> None:
    """Magic, fetch_blocking, await fetch and connect_blocking: no deadlock, same content."""
    _serve(kernel)
    kernel.run(
        "s = autosync_jupyter.jupyter.current_session().server\n"
        "i = await s.create_document({'x': [1, 2]})"
    )
    kernel.run("%autosync fetch {i} -o f")
    assert kernel.value("f.to_py()") == {"x": [1, 2]}
    kernel.run("%autosync fetch {s.url} {i} -o g")
    assert kernel.value("g.to_py()") == {"x": [1, 2]}
    assert kernel.value("autosync_jupyter.fetch_blocking(s.url, i).to_py()") == {"x": [1, 2]}
    assert kernel.value("(await autosync_jupyter.fetch(s.url, i)).to_py()") == {"x": [1, 2]}
    kernel.run(
        "c = autosync_jupyter.connect_blocking(s.url)\n"
        "h = c.open(i)\n"
        "with h.change() as root:\n"
        "    root['x'].append(3)\n"
        "h.flush(timeout=5)"
    )
    assert kernel.value("(await s.read_document(i))") == {"x": [1, 2, 3]}
    kernel.run("c.close()")


def test_fetch_defaults_to_the_variable_doc(kernel: Kernel) -> None:
    _serve(kernel)
    out = kernel.run("%autosync create --content '{\"k\": true}'")
    doc_id = out.stdout.strip().removeprefix("automerge:")
    assert "fetched into `doc`" in kernel.run(f"%autosync fetch {doc_id}").stdout
    assert kernel.value("doc.to_py()") == {"k": True}


# -- errors: clear, and the kernel keeps working ------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bogus", "invalid choice: 'bogus'"),
        ("fetch", "the following arguments are required"),
        ("fetch ws://127.0.0.1:1 4NMNnkMhL8jXrdJ9jamS58PAVdXu -o 'not valid'", "valid Python"),
        ("fetch 4NMNnkMhL8jXrdJ9jamS58PAVdXu", "no server runs in this kernel"),
        ("create", "no server runs in this kernel"),
        ("fetch ws://127.0.0.1:1 not-an-id", "not-an-id"),
        ("fetch ws://127.0.0.1:1 4NMNnkMhL8jXrdJ9jamS58PAVdXu --timeout 2", "127.0.0.1:1"),
        ("serve --port -5", "port"),
        ("create --content '[1]'", "JSON object"),
        ("view nothing_here", "no variable named 'nothing_here'"),
        ("fetch ws://127.0.0.1:1 4NMNnkMhL8jXrdJ9jamS58PAVdXu --token missing", "no such variable"),
    ],
)
def test_bad_input_gets_a_usage_error(kernel: Kernel, line: str, expected: str) -> None:
    out = kernel.run(f"%autosync {line}", allow_error=True)
    assert out.error is not None
    assert out.error[0] == "UsageError", out.error
    assert expected in out.error[1]
    assert kernel.value("1 + 1") == 2


def test_unknown_document_on_the_kernels_server_is_reported(kernel: Kernel) -> None:
    _serve(kernel)
    out = kernel.run("%autosync fetch 4NMNnkMhL8jXrdJ9jamS58PAVdXu --timeout 5", allow_error=True)
    assert out.error is not None and "unavailable" in out.error[1].lower()


def test_help_is_printed_for_each_subcommand(kernel: Kernel) -> None:
    top = kernel.run("%autosync --help").stdout
    for name in ("serve", "stop", "status", "create", "fetch", "open", "docs", "login"):
        assert name in top
        assert f"usage: %autosync {name}" in kernel.run(f"%autosync {name} --help").stdout


def test_a_second_server_is_refused(kernel: Kernel) -> None:
    url = _serve(kernel)
    out = kernel.run("%autosync serve --data-dir other", allow_error=True)
    assert out.error is not None and url in out.error[1] and "stop" in out.error[1]


def test_serving_from_a_subshell_is_refused(kernel: Kernel) -> None:
    """An ipykernel subshell runs in its own thread: %autosync serve says so and starts nothing."""
    out = kernel.run_in_subshell(
        "import threading\nprint(threading.current_thread().name)\n%autosync serve"
    )
    assert out.stdout.startswith("subshell")
    assert "main thread" in out.stderr and "subshell" in out.stderr
    assert "no autosync server runs" in kernel.run("%autosync status").text


def test_login_button_sent_on_a_subshell_starts_the_sign_in(
    kernel: Kernel, provider: OIDCProvider
) -> None:
    """JupyterLab sends widget messages on a subshell; the sign-in still runs in the loop.

    ipykernel 7.0-7.3 handle them in the subshell's thread, where a task made
    for the kernel's loop would never start (seen with Python 3.10).
    """
    kernel.run(
        "from autosync_jupyter import LoginWidget\n"
        f"w = LoginWidget({CLIENT_ID!r}, issuer={provider.issuer!r})"
    )
    comm_id = kernel.value("w.comm.comm_id")
    start = {"type": "start", "loopback": True, "popup": True}
    kernel.send_to_widget(comm_id, start, subshell_id=kernel.create_subshell())
    navigate = kernel.wait_for_widget_message(comm_id, "navigate")
    assert navigate["url"].startswith(provider.issuer + "/authorize?")
    assert kernel.value("w.status") == "waiting"


def test_serving_from_another_thread_is_refused(kernel: Kernel) -> None:
    """A thread (what an ipykernel subshell runs in) may not start the kernel's server."""
    out = kernel.run(
        "import threading\n"
        "errors = []\n"
        "def start():\n"
        "    try:\n"
        "        get_ipython().run_line_magic('autosync', 'serve --data-dir t')\n"
        "    except Exception as exc:\n"
        "        errors.append(str(exc))\n"
        "t = threading.Thread(target=start); t.start(); t.join()\n"
        "print(errors)"
    )
    assert "main thread" in out.stdout
    assert "no autosync server runs" in kernel.run("%autosync status").text


# -- lifecycle: stop, unload, reload, shutdown, restart ---------------------------------


async def _watch_close(url: str) -> asyncio.Task[int | None]:
    ws = await ws_connect(url)

    async def wait() -> int | None:
        await ws.wait_closed()
        return ws.close_code

    return asyncio.create_task(wait())


async def test_stop_closes_peers_cleanly_and_frees_the_port(kernel: Kernel) -> None:
    url = _serve(kernel)
    port = int(url.rsplit(":", 1)[1])
    closed = await _watch_close(url)
    out = await off_loop(kernel.run, "%autosync stop")
    assert f"stopped the server at {url}" in out.stdout
    assert await asyncio.wait_for(closed, 5) == 1001
    assert _port_is_free(port)


@pytest.mark.parametrize("how", ["%reload_ext autosync_jupyter", "%unload_ext autosync_jupyter"])
async def test_unloading_the_extension_stops_the_server(kernel: Kernel, how: str) -> None:
    url = _serve(kernel)
    port = int(url.rsplit(":", 1)[1])
    closed = await _watch_close(url)
    await off_loop(kernel.run, how)
    assert await asyncio.wait_for(closed, 5) == 1001
    assert _port_is_free(port)
    if how.startswith("%reload"):
        # Reloaded: the magic works again and a new server can start.
        _serve(kernel)


@pytest.mark.parametrize(
    ("restart", "jupyter"),
    [(False, False), (True, False), (False, True)],
    ids=["shutdown", "restart", "shutdown-announced"],
)
async def test_kernel_shutdown_or_restart_leaves_no_server_behind(
    tmp_path: Path, restart: bool, jupyter: bool
) -> None:
    # "announced": the kernel believes a Jupyter server started it (one that
    # does not answer), so it announces its server and must still close cleanly.
    env = {"AUTOSYNC_JUPYTER_URL": "http://127.0.0.1:9/"} if jupyter else None
    with running_kernel(tmp_path, env=env) as k:
        k.run("%load_ext autosync_jupyter\nimport autosync_jupyter")
        url = _serve(k)
        port = int(url.rsplit(":", 1)[1])
        k.run("%autosync create --name d --content '{\"saved\": 1}'")
        closed = await _watch_close(url)
        if restart:
            await off_loop(k.manager.restart_kernel, now=False)
        else:
            await off_loop(k.manager.shutdown_kernel, now=False)
        assert await asyncio.wait_for(closed, 10) == 1001
        assert _port_is_free(port)
        if restart:
            k.client.wait_for_ready(timeout=30)
            assert (
                "no autosync server" in k.run("%load_ext autosync_jupyter\n%autosync status").text
            )
    # The document made before the shutdown is on disk.
    assert any((tmp_path / "data").rglob("*")), "nothing was stored"


# -- a JS peer and the kernel's server, while cells run ---------------------------------


async def test_js_peer_syncs_live_with_a_kernel_variable(kernel: Kernel, require_js: None) -> None:
    url = await off_loop(_serve, kernel)
    async with JSPeer.start(url) as peer:
        created = await peer.create({"title": "from js", "items": []})
        doc_id = created["documentId"]
        await peer.wait_synced(doc_id)
        await off_loop(kernel.run, f"%autosync open {doc_id} -o h")
        assert await off_loop(kernel.value, "h.to_py()") == {
            "title": "from js",
            "items": [],
        }
        # JS edits reach the kernel variable between cells...
        await peer.change(doc_id, [Op.set(["title"], "edited in js")])
        deadline = time.monotonic() + 10
        while await off_loop(kernel.value, "h.to_py()['title']") != "edited in js":
            assert time.monotonic() < deadline, "the JS edit never reached the kernel"
            await asyncio.sleep(0.1)
        # ...and kernel edits reach the JS peer.
        await off_loop(
            kernel.run, "with h.change() as root:\n    root['items'].append('from python')"
        )
        await peer.wait_for(doc_id, path=["items"], equals=["from python"], timeout=10)


async def test_server_keeps_serving_during_a_blocking_cell(
    kernel: Kernel, require_js: None
) -> None:
    """A cell blocked in connect_blocking().wait_for() only returns if the kernel's
    server relays the JS peer's change to it meanwhile."""
    url = await off_loop(_serve, kernel)
    async with JSPeer.start(url) as peer:
        doc_id = (await peer.create({"n": 0}))["documentId"]
        await peer.wait_synced(doc_id)
        cell = asyncio.create_task(
            off_loop(
                kernel.run,
                f"c = autosync_jupyter.connect_blocking('{url}')\n"
                f"h = c.open('{doc_id}')\n"
                "print(h.wait_for(lambda d: d['n'] == 7, timeout=20))\n"
                "c.close()",
            )
        )
        await asyncio.sleep(1.0)  # the cell is now blocked in wait_for
        assert not cell.done()
        started = time.monotonic()
        found = await peer.find(doc_id)  # served by the blocked kernel
        assert found["state"] == "ready"
        await peer.change(doc_id, [Op.set(["n"], 7)])
        out = await asyncio.wait_for(cell, 30)
        assert "'n': 7" in out.stdout
        assert time.monotonic() - started < 15


# -- share: a notebook document published to a hub, live --------------------------------


@pytest.fixture
def hub() -> Iterator[BackgroundSyncServer]:
    """A sync hub outside the kernel (what the Jupyter server extension runs)."""
    with BackgroundSyncServer(data_dir=None) as server:
        yield server


def test_share_makes_a_document_live_both_ways(kernel: Kernel, hub: BackgroundSyncServer) -> None:
    kernel.run(
        "doc = autosync_jupyter.Document({'title': 'draft'})\n"
        f"h = autosync_jupyter.share(doc, url='{hub.url}')"
    )
    doc_id = kernel.value("h.document_id")
    assert hub.read_document(doc_id) == {"title": "draft"}
    assert kernel.value(f"autosync_jupyter.share(doc, url='{hub.url}') is h")
    # An edit on the hub (the browser's side) reaches the kernel's variable...
    hub.change_document(doc_id, lambda d: d.__setitem__("title", "from the browser"))
    deadline = time.monotonic() + 10
    while kernel.value("doc.to_py()['title']") != "from the browser":
        assert time.monotonic() < deadline, "the hub's edit never reached the variable"
        time.sleep(0.05)
    # ...and an edit of the variable reaches the hub.
    kernel.run("with doc.change() as d:\n    d['done'] = True\nawait h.flush(timeout=5)")
    assert hub.read_document(doc_id) == {"title": "from the browser", "done": True}


def test_share_magic_replaces_a_dict_with_the_live_handle(
    kernel: Kernel, hub: BackgroundSyncServer
) -> None:
    out = kernel.run(f"notes = {{'items': [1]}}\n%autosync share notes --url {hub.url}")
    assert "shared `notes` as automerge:" in out.stdout
    doc_id = kernel.value("notes.document_id")
    assert hub.read_document(doc_id) == {"items": [1]}


def test_share_outside_a_jupyter_server_says_what_to_do(kernel: Kernel) -> None:
    out = kernel.run("autosync_jupyter.share({'a': 1})", allow_error=True)
    assert out.error is not None and "AUTOSYNC_JUPYTER_URL" in out.error[1]
    out = kernel.run("x = 3\n%autosync share x --url ws://127.0.0.1:9", allow_error=True)
    assert out.error is not None and "share() takes a Document" in out.error[1]


# -- history ----------------------------------------------------------------------------


def test_history_prints_the_changes_newest_last(kernel: Kernel) -> None:
    """%autosync history VAR prints time, actor, seq, message and hash; -n limits it."""
    kernel.run(
        "from autosync_jupyter import Document\n"
        "notes = Document({'n': 0})\n"
        "for i in range(1, 4):\n"
        "    with notes.change(message=f'step {i}') as d:\n"
        "        d['n'] = i"
    )
    lines = kernel.run("%autosync history notes -n 2").stdout.strip().splitlines()
    assert lines[0] == "4 changes, the last 2"
    assert lines[1].split() == ["time", "actor", "seq", "message", "hash"]
    assert len(lines) == 4 and "step 2" in lines[2] and "step 3" in lines[3]
    assert lines[3].endswith(kernel.value("notes.history()[-1].hash[:12]"))
    assert " UTC " in lines[3] and kernel.value("notes.history()[-1].actor[:8]") in lines[3]
    every = kernel.run("%autosync history notes -n 0").stdout.strip().splitlines()
    assert every[0] == "4 changes" and len(every) == 6
    assert "usage: %autosync history" in kernel.run("%autosync history --help").stdout
    out = kernel.run("%autosync history nothing_here", allow_error=True)
    assert out.error is not None and "no variable named" in out.error[1]
    out = kernel.run("x = 5\n%autosync history x", allow_error=True)
    assert out.error is not None and "not a Document" in out.error[1]


def test_history_of_a_live_handle(kernel: Kernel) -> None:
    """A live handle's history shows its changes, a raw binding change as time unknown."""
    _serve(kernel)
    kernel.run("%autosync create --name live --content '{\"a\": 1}'")
    kernel.run(
        "with live.doc.change(message='from the notebook') as d:\n"
        "    d['a'] = 2\n"
        "import automerge.core as am\n"
        "with live.doc.core.transaction() as tx:\n"
        "    tx.put(am.ROOT, 'b', am.ScalarType.Int, 3)"
    )
    lines = kernel.run("%autosync history live").stdout.strip().splitlines()
    assert "from the notebook" in lines[-2]
    assert lines[-1].startswith("time unknown")
