"""The JupyterLab extension: a notebook document shared with the browser, live both ways.

A kernel shares a document (``autosync.share``) with the Jupyter server
extension's hub; the "Automerge" side panel lists it; a main-area tab opens
it through the official automerge-repo client running in the page; edits in
the browser reach the kernel's variable and edits in the kernel reach the
browser; after a reload the state is intact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import autosync_jupyter

from .conftest import LabServer
from .lab import (
    append_and_run,
    cell_output_text,
    document_value,
    edit_value,
    expect,
    non_local_requests,
    open_automerge_panel,
    open_notebook,
    review_screenshot,
    run_all_cells,
    show_tab,
    wait_in_kernel,
    write_notebook,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parents[2]


def test_shared_document_is_live_in_the_panel_and_the_kernel(
    page: Page, lab_server: LabServer
) -> None:
    write_notebook(
        lab_server.root_dir,
        "share.ipynb",
        [
            "import asyncio\nimport autosync_jupyter as autosync\n"
            "doc = autosync.Document({'title': 'from the kernel', 'n': 1})\n"
            "h = autosync.share(doc)\nprint(h.document_id)",
        ],
    )
    open_notebook(page, lab_server, "share.ipynb")
    run_all_cells(page)
    doc_id = cell_output_text(page, 0).strip()
    assert autosync_jupyter.is_valid_document_id(doc_id), doc_id

    # The panel lists the shared document; a click opens it in a tab.
    panel = open_automerge_panel(page)
    row = panel.locator(f".autosync-panel-row[data-document-id='{doc_id}']")
    expect(row).to_be_visible(timeout=15_000)
    row.click()
    view = page.locator(f".autosync-doc-panel[data-document-id='{doc_id}']")
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
    expect(document_value(view, "title")).to_contain_text("from the kernel")

    # Browser edit -> kernel variable.
    edit_value(view, "title", "from the browser")
    show_tab(page, "share.ipynb")
    wait = wait_in_kernel('doc.to_py()["title"]', "from the browser")
    assert cell_output_text(page, append_and_run(page, wait)) == "from the browser"

    # Kernel edit -> browser.
    append_and_run(page, "with doc.change() as d:\n    d['n'] = 42")
    show_tab(page, "from the browser")  # the tab is named by the document's title
    expect(document_value(view, "n")).to_have_text("42")
    review_screenshot(page, "lab-extension")

    # Reload: the document opens again with everything in it.
    page.reload()
    panel = open_automerge_panel(page)
    panel.locator(f".autosync-panel-row[data-document-id='{doc_id}']").click()
    view = page.locator(f".autosync-doc-panel[data-document-id='{doc_id}']")
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
    expect(document_value(view, "title")).to_contain_text("from the browser")
    expect(document_value(view, "n")).to_have_text("42")
    # The hub agrees (REST), and the kernel still holds the live document.
    quoted = urllib.parse.quote(doc_id)
    served = lab_server.api("GET", f"autosync/api/documents/{quoted}")
    assert served["content"] == {"title": "from the browser", "n": 42}
    assert non_local_requests(page) == []


def test_panel_creates_and_edits_a_document(page: Page, lab_server: LabServer) -> None:
    write_notebook(lab_server.root_dir, "empty.ipynb", ["1"])
    open_notebook(page, lab_server, "empty.ipynb")
    panel = open_automerge_panel(page)
    before = panel.locator(".autosync-panel-row").count()
    panel.locator(".autosync-panel-create").click()
    view = page.locator(".autosync-doc-panel").last
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
    doc_id = view.get_attribute("data-document-id")
    assert doc_id and autosync_jupyter.is_valid_document_id(doc_id)
    # Add a key to the root map, then see it on the server.
    view.locator(".autosync-doc-add-key[data-path='[]']").click()
    view.locator(".autosync-doc-add-key-name").fill("greeting")
    value = view.locator(".autosync-doc-add-key-value")
    value.fill("hello")
    value.press("Enter")
    expect(document_value(view, "greeting")).to_contain_text("hello")
    expect(panel.locator(".autosync-panel-row")).to_have_count(before + 1, timeout=15_000)
    quoted = urllib.parse.quote(doc_id)
    for _ in range(50):
        served = lab_server.api("GET", f"autosync/api/documents/{quoted}")
        if served["content"].get("greeting") == "hello":
            break
        page.wait_for_timeout(100)
    assert served["content"] == {"greeting": "hello"}


def test_both_extensions_are_installed_and_enabled() -> None:
    """What `pip install` must give: the lab extension and the server extension, enabled."""
    lab = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    listing = lab.stdout + lab.stderr
    assert "autosync-jupyter" in listing and "enabled" in listing, listing
    server = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    listing = server.stdout + server.stderr
    assert "autosync_jupyter" in listing and "enabled" in listing, listing
    # The front end and the Python package are released together.
    package = json.loads((REPO / "labextension" / "package.json").read_text())
    assert package["version"] == autosync_jupyter.__version__
