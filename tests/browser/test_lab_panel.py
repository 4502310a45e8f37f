"""The Automerge side panel and document tabs: names, layout, themes, keyboard.

Documents are made through the REST API (no kernel needed): the panel names
them by title, with size and last change, under a heading per source; a tab
comes back after a reload (JupyterLab's layout restorer) with its icon; text
stays readable (WCAG AA) in the light and the dark theme; everything works
from the keyboard.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
from datetime import datetime
from typing import TYPE_CHECKING, Any

import autosync_jupyter

from .conftest import LabServer
from .lab import (
    contrast_ratio,
    document_value,
    expect,
    open_automerge_panel,
    open_lab,
    review_screenshot,
    use_theme,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

#: WCAG 2 AA for normal text.
AA = 4.5
SETTINGS = "lab/api/settings/autosync-jupyter:plugin"
THEME_SETTINGS = "lab/api/settings/@jupyterlab/apputils-extension:themes"


def create(lab: LabServer, content: dict[str, Any]) -> dict[str, Any]:
    """A new document on the hub, through the REST API: ``{"id", "url"}``."""
    created: dict[str, Any] = lab.api("POST", "autosync/api/documents", {"content": content})
    return created


def hub_row(panel: Locator, doc: dict[str, Any]) -> Locator:
    return panel.locator(f".autosync-panel-row[data-document-id='{doc['id']}']")


def doc_tab(page: Page, doc: dict[str, Any]) -> Locator:
    return page.locator(f".autosync-doc-panel[data-document-id='{doc['id']}']")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def fake_kernel_servers(page: Page, servers: list[dict[str, Any]]) -> None:
    """Make the page see these servers in ``GET autosync/api/servers``."""
    body = json.dumps({"servers": servers})
    page.route(
        "**/autosync/api/servers*",
        lambda route: route.fulfill(status=200, content_type="application/json", body=body),
    )


def kernel_server(
    url: str, name: str, documents: list[dict[str, Any]], count: int
) -> dict[str, Any]:
    return {
        "id": name,
        "url": url,
        "name": name,
        "documents": documents,
        "document_count": count,
        "updated": "2026-01-01T00:00:00+00:00",
    }


def summary(doc_id: str, title: str | None) -> dict[str, Any]:
    return {
        "id": doc_id,
        "url": f"automerge:{doc_id}",
        "size": 321,
        "heads": [],
        "peers": 1,
        "loaded": True,
        "last_change": "2026-01-01T10:00:00+00:00",
        "title": title,
        "error": None,
    }


def test_rows_show_title_size_and_last_change_under_headings(
    page: Page, lab_server: LabServer
) -> None:
    """Rows are named by title (else the short id), with size and last change; the
    hub and the kernel servers have headings; the URL field's placeholder fits."""
    draft = create(lab_server, {"title": "draft", "body": "the first one"})
    named = create(lab_server, {"name": "shopping list", "items": ["milk"]})
    untitled = create(lab_server, {"n": 1})
    listing = {d["id"]: d for d in lab_server.api("GET", "autosync/api/documents")["documents"]}
    kernel_doc = autosync_jupyter.generate_document_id()
    server_url = f"ws://127.0.0.1:{closed_port()}"
    fake_kernel_servers(
        page, [kernel_server(server_url, "analysis", [summary(kernel_doc, "kernel notes")], 57)]
    )
    open_lab(page, lab_server)
    panel = open_automerge_panel(page)

    # One heading for the hub's documents, one for the kernel servers.
    hub_heading = panel.locator(".jp-AccordionPanel-title", has_text="Jupyter server")
    expect(hub_heading).to_be_visible()
    expect(panel.locator(".jp-AccordionPanel-title", has_text="Kernel servers")).to_be_visible()

    row = hub_row(panel, draft)
    expect(row.locator(".autosync-panel-row-title")).to_have_text("draft")
    expect(row.locator(".autosync-panel-row-id")).to_have_text(draft["id"][:8])
    size = listing[draft["id"]]["size"]
    assert isinstance(size, int) and size > 0, listing[draft["id"]]
    expect(row.locator(".autosync-panel-row-size")).to_have_text(f"{size} B")
    changed = row.locator("time.autosync-panel-row-changed")
    expect(changed).to_have_text(re.compile(r"^(now|\d+ (seconds?|minutes?) ago|in \d+ seconds?)$"))
    shown = datetime.fromisoformat(changed.get_attribute("datetime") or "")
    served = datetime.fromisoformat(listing[draft["id"]]["last_change"])
    assert abs((shown - served).total_seconds()) < 1, (shown, served)
    expect(row).to_have_attribute("aria-label", re.compile(r"^draft, "))
    expect(hub_row(panel, named).locator(".autosync-panel-row-title")).to_have_text("shopping list")
    # Without a title: the short id, in the code font.
    plain = hub_row(panel, untitled).locator(".autosync-panel-row-title")
    expect(plain).to_have_text(untitled["id"][:8])
    expect(plain).to_have_class(re.compile(r"\bautosync-panel-row-id\b"))

    # A kernel server: its header says how many documents it really holds.
    header = panel.locator(f".autosync-panel-server[data-server-url='{server_url}']")
    expect(header).to_contain_text("analysis")
    expect(header).to_contain_text("1 newest of 57 documents")
    kernel_row = panel.locator(f".autosync-panel-kernel-row[data-document-id='{kernel_doc}']")
    expect(kernel_row.locator(".autosync-panel-row-title")).to_have_text("kernel notes")
    expect(kernel_row.locator(".autosync-panel-row-size")).to_have_text("321 B")

    # The sections collapse like JupyterLab's own.
    hub_heading.click()
    expect(row).to_be_hidden()
    hub_heading.click()
    expect(row).to_be_visible()

    # The "Open automerge: URL" field shows its whole placeholder.
    field = panel.locator(".autosync-panel-open-input")
    text_width, room = field.evaluate(
        """input => {
            const style = getComputedStyle(input);
            const ph = getComputedStyle(input, '::placeholder');
            const context = document.createElement('canvas').getContext('2d');
            context.font = `${ph.fontStyle} ${ph.fontWeight} ${ph.fontSize} ${ph.fontFamily}`;
            return [
                context.measureText(input.placeholder).width,
                input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
            ];
        }"""
    )
    assert field.get_attribute("placeholder"), "no placeholder"
    assert 0 < text_width <= room, f"placeholder {text_width:.0f} px in {room:.0f} px"

    # The context menu of a row opens it.
    row.click(button="right")
    menu = page.locator(".lm-Menu")
    expect(menu.get_by_text("Copy automerge: URL")).to_be_visible()
    expect(menu.get_by_text("Copy Document ID")).to_be_visible()
    menu.locator(".lm-Menu-item", has_text=re.compile(r"^Open$")).click()
    view = doc_tab(page, draft)
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
    expect(page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="draft")).to_be_visible()
    review_screenshot(page, "lab-panel")


def test_document_tab_has_an_icon_and_comes_back_after_a_reload(
    page: Page, lab_server: LabServer
) -> None:
    """A tab is named by the document's title, has the Automerge icon, and the layout
    restorer opens it again, live, after a page reload."""
    doc = create(lab_server, {"title": "restored", "n": 1})
    workspace = open_lab(page, lab_server)
    panel = open_automerge_panel(page)
    hub_row(panel, doc).click()
    view = doc_tab(page, doc)
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="restored")
    expect(tab.locator(".lm-TabBar-tabIcon svg")).to_be_visible()
    # The tree shows types and sizes, not just values.
    expect(view.locator(".autosync-doc-root-line")).to_contain_text("2 keys")
    line = document_value(view, "n").locator("xpath=..")
    expect(line.locator(".autosync-doc-type")).to_have_text("number")

    # JupyterLab saves the layout to the workspace: wait until it holds the tab.
    name = f"autosync-doc:autosync-doc-{doc['id']}"
    quoted = urllib.parse.quote(workspace)
    for _ in range(100):
        saved = lab_server.api("GET", f"lab/api/workspaces/{quoted}")
        if name in json.dumps(saved.get("data", {}).get("layout-restorer:data", {})):
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError(f"the workspace never held {name}: {saved}")

    page.reload()
    view = doc_tab(page, doc)
    expect(view.locator(".autosync-doc-status")).to_have_attribute(
        "data-status", "connected", timeout=30_000
    )
    expect(document_value(view, "n")).to_have_text("1")
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="restored")
    expect(tab.locator(".lm-TabBar-tabIcon svg")).to_be_visible()


def _readability(
    page: Page, panel: Locator, view: Locator, kernel_view: Locator
) -> dict[str, float]:
    """Contrast ratios of the texts that sit on coloured backgrounds."""
    ratios: dict[str, float] = {}
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="contrast").click()
    ratios["connected pill"] = contrast_ratio(view.locator(".autosync-doc-status"))
    ratios["text value"] = contrast_ratio(document_value(view, "s"))
    ratios["number value"] = contrast_ratio(document_value(view, "n"))
    ratios["key"] = contrast_ratio(view.locator(".autosync-doc-key").first)
    ratios["type tag"] = contrast_ratio(view.locator(".autosync-doc-type").first)
    # Never loaded: named by the title its row showed.
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="far away").click()
    ratios["unreachable pill"] = contrast_ratio(kernel_view.locator(".autosync-doc-status"))
    ratios["unreachable message"] = contrast_ratio(kernel_view.locator(".autosync-doc-message"))
    # A row focused from the keyboard (its focus background).
    row = panel.locator(".autosync-panel-row").first
    row.focus()
    page.keyboard.press("End")
    page.keyboard.press("Home")
    expect(row).to_be_focused()
    ratios["focused row"] = contrast_ratio(row.locator(".autosync-panel-row-title"))
    ratios["focused row details"] = contrast_ratio(row.locator(".autosync-panel-row-details"))
    ratios["kernel server header"] = contrast_ratio(panel.locator(".autosync-panel-server-url"))
    ratios["URL placeholder"] = contrast_ratio(
        panel.locator(".autosync-panel-open-input"), "::placeholder"
    )
    return ratios


def test_text_is_readable_in_the_light_and_the_dark_theme(
    page: Page, lab_server: LabServer
) -> None:
    """Status pills, rows, values and messages keep a WCAG AA contrast (4.5:1) in
    both themes; the settings schema is served and its kernel-server timeout applies."""
    schema = lab_server.api("GET", SETTINGS)["schema"]
    assert {"refreshInterval", "requestTimeout", "kernelServerTimeout"} <= set(schema["properties"])
    doc = create(lab_server, {"title": "contrast", "s": "some text", "n": 3})
    kernel_doc = autosync_jupyter.generate_document_id()
    server_url = f"ws://127.0.0.1:{closed_port()}"
    fake_kernel_servers(
        page, [kernel_server(server_url, "remote", [summary(kernel_doc, "far away")], 1)]
    )
    lab_server.api("PUT", SETTINGS, {"raw": json.dumps({"kernelServerTimeout": 500})})
    try:
        open_lab(page, lab_server)
        panel = open_automerge_panel(page)
        hub_row(panel, doc).click()
        view = doc_tab(page, doc)
        expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
        kernel_row = panel.locator(f".autosync-panel-kernel-row[data-document-id='{kernel_doc}']")
        start = time.monotonic()
        kernel_row.click()
        kernel_view = page.locator(
            f".autosync-doc-panel[data-document-id='{kernel_doc}'][data-server-url='{server_url}']"
        )
        expect(kernel_view.locator(".autosync-doc-status")).to_have_attribute(
            "data-status", "unreachable", timeout=15_000
        )
        # The 0.5 s of the setting, not the default 5 s.
        assert time.monotonic() - start < 4.5

        for theme, light in (("JupyterLab Light", "true"), ("JupyterLab Dark", "false")):
            use_theme(page, theme)
            assert page.evaluate("() => document.body.dataset.jpThemeLight") == light
            ratios = _readability(page, panel, view, kernel_view)
            low = {what: round(ratio, 2) for what, ratio in ratios.items() if ratio < AA}
            assert not low, f"{theme}: contrast below {AA}:1: {low} (all: {ratios})"
            review_screenshot(page, f"lab-contrast-{theme.split()[-1].lower()}")
    finally:
        lab_server.api("PUT", SETTINGS, {"raw": "{}"})
        lab_server.api("PUT", THEME_SETTINGS, {"raw": "{}"})


def test_keyboard_opens_a_row_and_edits_a_value(page: Page, lab_server: LabServer) -> None:
    """Tab and the arrows reach a row (with a visible focus ring), Enter opens it; a
    value is focusable with an accessible name, Enter edits, Escape cancels, Enter
    commits, and the edit reaches the server."""
    doc = create(lab_server, {"title": "keyboard", "count": 1, "note": "hi"})
    open_lab(page, lab_server)
    panel = open_automerge_panel(page)
    row = hub_row(panel, doc)
    expect(row).to_be_visible()

    # Tab from the URL field into the hub's list (one tab stop per list).
    panel.locator(".autosync-panel-open-input").focus()
    active_row = "() => document.activeElement?.classList.contains('autosync-panel-row')"
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate(active_row):
            break
    assert page.evaluate(active_row), "Tab never reached a row"
    rows = panel.locator(".autosync-panel-row").count()
    for _ in range(rows):
        if page.evaluate("() => document.activeElement?.dataset.documentId") == doc["id"]:
            break
        page.keyboard.press("ArrowDown")
    expect(row).to_be_focused()
    expect(row).to_have_attribute("tabindex", "0")
    outline = row.evaluate(
        "r => [getComputedStyle(r).outlineStyle, getComputedStyle(r).outlineWidth]"
    )
    assert outline[0] != "none" and float(outline[1].removesuffix("px")) >= 1, outline
    page.keyboard.press("Enter")
    view = doc_tab(page, doc)
    expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")

    # A value: a button named by its path, value and type; the tab opened with
    # the focus on the first one (keys are sorted: "count" comes first).
    value = view.get_by_role("button", name="count: 1, number")
    expect(value).to_have_attribute("tabindex", "0")
    expect(value).to_be_focused()
    page.keyboard.press("Enter")
    editor = view.locator(".autosync-doc-edit-input")
    expect(editor).to_be_focused()
    page.keyboard.type("5")
    page.keyboard.press("Escape")
    expect(editor).to_have_count(0)
    expect(document_value(view, "count")).to_have_text("1")
    expect(document_value(view, "count")).to_be_focused()

    page.keyboard.press("Enter")
    expect(editor).to_be_focused()
    page.keyboard.type("7")  # the editor opens with its text selected
    page.keyboard.press("Enter")
    expect(document_value(view, "count")).to_have_text("7")
    expect(document_value(view, "count")).to_be_focused()
    quoted = urllib.parse.quote(doc["id"])
    for _ in range(50):
        served = lab_server.api("GET", f"autosync/api/documents/{quoted}")["content"]
        if served["count"] == 7:
            break
        page.wait_for_timeout(100)
    assert served == {"title": "keyboard", "count": 7, "note": "hi"}

    # ↓ goes to the next line's value.
    page.keyboard.press("ArrowDown")
    expect(document_value(view, "note")).to_be_focused()
