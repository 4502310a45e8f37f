"""The JupyterLab extension: documents of a kernel-hosted server, live in the browser.

A kernel runs ``%autosync serve`` (a sync server inside the kernel, on
ws://127.0.0.1:PORT), which announces itself to the Jupyter server
extension; the "Automerge" side panel lists it under "Kernel servers" with
its documents; a click opens a document in a tab synced through a browser
``Repo`` connected to that kernel server (not the hub) through the Jupyter
server's relay, as a browser on another machine must; an edit in the tab
reaches the kernel's live handle. A kernel server the relay cannot reach
(the kernel runs on another machine) makes the tab say so.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import autosync_jupyter

from .conftest import LabServer
from .lab import (
    append_and_run,
    cell_output_text,
    document_value,
    edit_value,
    expect,
    open_automerge_panel,
    open_notebook,
    run_all_cells,
    show_tab,
    wait_in_kernel,
    write_notebook,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_kernel_server_documents_are_listed_and_open_live(
    page: Page, lab_server: LabServer
) -> None:
    write_notebook(
        lab_server.root_dir,
        "kserve.ipynb",
        [
            "import asyncio\nimport autosync_jupyter.jupyter\n%load_ext autosync_jupyter",
            "%autosync serve --port 0 --data-dir kdata",
            '%autosync create --name k --content \'{"from": "kernel server"}\'',
            "print(k.document_id)\nprint(autosync_jupyter.jupyter.current_session().server.url)",
        ],
    )
    open_notebook(page, lab_server, "kserve.ipynb")
    run_all_cells(page)
    doc_id, server_url = cell_output_text(page, 3).split()
    assert autosync_jupyter.is_valid_document_id(doc_id), doc_id
    assert server_url.startswith("ws://127.0.0.1:"), server_url

    # The panel shows the kernel's server (once it announced itself) and its document.
    panel = open_automerge_panel(page)
    header = panel.locator(f".autosync-panel-server[data-server-url='{server_url}']")
    expect(header).to_be_visible(timeout=15_000)
    expect(header).to_contain_text(server_url)
    row = panel.locator(
        f".autosync-panel-kernel-row[data-document-id='{doc_id}'][data-server-url='{server_url}']"
    )
    expect(row).to_be_visible(timeout=15_000)
    # Only on the kernel's server, not in the hub's list.
    expect(panel.locator(f".autosync-panel-row[data-document-id='{doc_id}']")).to_have_count(0)

    # A click opens a tab synced with the kernel server, through the relay.
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    row.click()
    view = page.locator(
        f".autosync-doc-panel[data-document-id='{doc_id}'][data-server-url='{server_url}']"
    )
    expect(view.locator(".autosync-doc-status")).to_have_attribute(
        "data-status", "connected", timeout=15_000
    )
    expect(document_value(view, "from")).to_contain_text("kernel server")
    relayed = [url for url in sockets if "/autosync/relay?" in url]
    assert relayed and all(server_url.split("//")[1] not in url for url in sockets), sockets
    widget_id = view.get_attribute("id")
    assert widget_id and widget_id != f"autosync-doc-{doc_id}", widget_id

    # Browser edit -> the kernel's live handle.
    edit_value(view, "from", "the browser")
    show_tab(page, "kserve.ipynb")
    wait = wait_in_kernel('k.to_py()["from"]', "the browser")
    assert cell_output_text(page, append_and_run(page, wait)) == "the browser"


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_kernel_server_says_so(page: Page, lab_server: LabServer) -> None:
    doc_id = autosync_jupyter.generate_document_id()
    server_url = f"ws://127.0.0.1:{_closed_port()}"
    reply = {
        "servers": [
            {
                "id": "elsewhere",
                "url": server_url,
                "name": "remote kernel",
                "documents": [
                    {
                        "id": doc_id,
                        "url": f"automerge:{doc_id}",
                        "size": 1,
                        "heads": [],
                        "peers": 0,
                        "last_change": None,
                    }
                ],
                "updated": "2026-01-01T00:00:00+00:00",
            }
        ]
    }
    # As if a kernel on another machine had announced its server: listed by
    # the page, unknown to the relay.
    page.route(
        "**/autosync/api/servers*",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(reply)
        ),
    )
    write_notebook(lab_server.root_dir, "unreachable.ipynb", ["1"])
    open_notebook(page, lab_server, "unreachable.ipynb")
    panel = open_automerge_panel(page)
    header = panel.locator(f".autosync-panel-server[data-server-url='{server_url}']")
    expect(header).to_contain_text("remote kernel", timeout=15_000)
    panel.locator(f".autosync-panel-kernel-row[data-document-id='{doc_id}']").click()
    view = page.locator(
        f".autosync-doc-panel[data-document-id='{doc_id}'][data-server-url='{server_url}']"
    )
    expect(view.locator(".autosync-doc-status")).to_have_attribute(
        "data-status", "unreachable", timeout=15_000
    )
    expect(view.locator(".autosync-doc-message")).to_contain_text(
        "relays only servers announced by its kernels on its own machine"
    )
