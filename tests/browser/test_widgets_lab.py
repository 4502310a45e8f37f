"""The notebook widgets in a real JupyterLab, in headless Chromium.

The document browser lists a kernel server's documents and follows them live,
the live view follows edits made by an official JavaScript automerge-repo
peer, and the login button completes a PKCE sign-in in a popup against the
local test OIDC provider. The selected row and the change flash stay readable
in the light and the dark theme.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from autosync_jupyter.runtime.loop_thread import LoopThread
from tests.interop.jspeer import JSPeer, Op, require_js_install
from tests.oidc_provider import CLIENT_ID, running_provider

from .conftest import LabServer
from .lab import (
    append_and_run,
    cell_output,
    cell_output_text,
    contrast_ratio,
    expect,
    non_local_requests,
    open_notebook,
    review_screenshot,
    run_all_cells,
    run_cell,
    use_theme,
    write_notebook,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

SERVE = "%load_ext autosync_jupyter\n%autosync serve --port 0 --data-dir {name}-data"
URL_OF_SERVER = "print(autosync_jupyter.jupyter.current_session().server.url)"


@contextlib.contextmanager
def js_peer(url: str) -> Iterator[tuple[LoopThread, JSPeer]]:
    """An official JS automerge-repo peer, driven from this (synchronous) test."""
    runner = LoopThread("js-peer")
    manager = JSPeer.start(url)
    try:
        peer = runner.run(manager.__aenter__(), timeout=60)
        try:
            yield runner, peer
        finally:
            runner.run(manager.__aexit__(None, None, None), timeout=60)
    finally:
        runner.stop()


def test_document_browser_lists_follows_creates_and_opens(
    page: Page, lab_server: LabServer
) -> None:
    write_notebook(
        lab_server.root_dir,
        "browser.ipynb",
        [
            SERVE.format(name="browser"),
            '%autosync create --content \'{"title": "first"}\'\n'
            '%autosync create --content \'{"title": "second"}\'',
            "%autosync docs",
        ],
    )
    open_notebook(page, lab_server, "browser.ipynb")
    run_all_cells(page)
    first, second = (u.removeprefix("automerge:") for u in cell_output_text(page, 1).split())
    widget = cell_output(page, 2)
    rows = widget.locator(".autosync-browser-row")
    expect(rows).to_have_count(2)
    expect(widget.locator(f".autosync-browser-row[data-document-id='{second}']")).to_be_visible()

    # A document made in another cell shows up without a refresh.
    append_and_run(page, '%autosync create --content \'{"title": "third"}\'')
    expect(rows).to_have_count(3)
    # The widget's own "create" button.
    widget.locator(".autosync-browser-create").click()
    expect(rows).to_have_count(4)

    # Open a document into a live view, inside the browser.
    widget.locator(
        f".autosync-browser-row[data-document-id='{first}'] .autosync-browser-open"
    ).click()
    view = widget.locator(".autosync-live-view")
    expect(view).to_contain_text("first")
    # An edit from the kernel reaches the open view.
    append_and_run(
        page,
        "import autosync_jupyter\n"
        "s = autosync_jupyter.jupyter.current_session().server\n"
        f"await s.change_document('{first}', lambda d: d.__setitem__('title', 'renamed'))",
    )
    expect(view).to_contain_text("renamed")
    review_screenshot(page, "document-browser")
    assert non_local_requests(page) == []


def test_live_view_follows_a_javascript_peer(page: Page, lab_server: LabServer) -> None:
    require_js_install()
    write_notebook(
        lab_server.root_dir,
        "live.ipynb",
        [SERVE.format(name="live"), "import autosync_jupyter\n" + URL_OF_SERVER],
    )
    open_notebook(page, lab_server, "live.ipynb")
    run_all_cells(page)
    url = cell_output_text(page, 1).strip()
    assert url.startswith("ws://127.0.0.1:")
    with js_peer(url) as (runner, peer):
        created: dict[str, Any] = runner.run(peer.create({"title": "from js", "items": []}))
        doc_id = created["documentId"]
        runner.run(peer.wait_synced(doc_id))
        index = append_and_run(page, f"%autosync open {doc_id} -o h\n%autosync view h")
        view = cell_output(page, index).locator(".autosync-live-view")
        expect(view).to_contain_text("from js")
        runner.run(peer.change(doc_id, [Op.set(["title"], "edited in js")]))
        expect(view).to_contain_text("edited in js")
        runner.run(peer.change(doc_id, [Op.push(["items"], "milk", "bread")]))
        expect(view).to_contain_text("bread")
        # The changed value is highlighted for a moment.
        runner.run(peer.change(doc_id, [Op.set(["title"], "again")]))
        expect(view).to_contain_text("again")
        expect(view.locator(".autosync-changed").first).to_be_visible()
        review_screenshot(page, "live-view")
        # And the kernel variable holds the same document.
        assert "again" in run_cell(page, "print(h.to_py()['title'])")


def test_login_popup_completes_against_the_local_provider(
    page: Page, lab_server: LabServer
) -> None:
    with running_provider() as provider:
        write_notebook(
            lab_server.root_dir,
            "login.ipynb",
            [
                "%load_ext autosync_jupyter\n"
                f"%autosync login --issuer {provider.issuer} --client-id {CLIENT_ID}"
            ],
        )
        open_notebook(page, lab_server, "login.ipynb")
        run_all_cells(page)
        widget = cell_output(page, 0).locator(".autosync-login")
        expect(widget).to_have_attribute("data-status", "signed-out")
        with page.expect_popup() as popup_info:
            widget.locator(".autosync-login-button").click()
        popup = popup_info.value
        # The popup went to the provider, which redirected to the kernel's loopback.
        expect(widget).to_have_attribute("data-status", "signed-in", timeout=30_000)
        expect(widget.locator(".autosync-login-status")).to_contain_text("alice@company.com")
        review_screenshot(page, "login")
        # The widget closes its popup once signed in.
        if not popup.is_closed():
            popup.wait_for_event("close", timeout=15_000)
        assert provider.authorize_hits == 1 and provider.token_hits == 1
        # The token reached the kernel variable; the widget shows no token.
        assert run_cell(page, "print(len(autosync_token.split('.')))") == "3"
        assert "eyJ" not in widget.inner_text()
        assert re.search(r"\bSign out\b", widget.inner_text())


#: The selected row and the change flash must stay readable in the dark
#: theme too, where `--jp-ui-font-color1` is white and `--jp-*-color3` light.
AA = 4.5
THEME_SETTINGS = "lab/api/settings/@jupyterlab/apputils-extension:themes"


def _flash_ratios(view: Locator) -> dict[str, float]:
    """Contrast of each text of the flashed line, at the start of the flash (the
    most coloured moment: the animation is paused at 0)."""
    flashed = view.locator(".autosync-changed").first
    expect(flashed).to_be_visible()
    paused = flashed.evaluate(
        "n => n.getAnimations().map(a => { a.pause(); a.currentTime = 0; return a.animationName; })"
    )
    assert paused, "the changed line does not flash"
    ratios = {}
    texts = flashed.locator(":scope > span")
    for i in range(texts.count()):
        text = texts.nth(i)
        if text.inner_text().strip():
            ratios[f"flash {text.get_attribute('class')}"] = contrast_ratio(text)
    flashed.evaluate("n => n.getAnimations().forEach(a => a.finish())")
    return ratios


def test_selected_row_and_change_flash_are_readable_in_both_themes(
    page: Page, lab_server: LabServer
) -> None:
    """The document browser's selected row and the live view's change flash keep a
    WCAG AA contrast (4.5:1) in the light and the dark theme."""
    write_notebook(
        lab_server.root_dir,
        "contrast.ipynb",
        [
            SERVE.format(name="contrast"),
            "import autosync_jupyter\n"
            "s = autosync_jupyter.jupyter.current_session().server\n"
            "d = await s.create_document({'title': 'first', 'n': 1})\n"
            "print(d)",
            "%autosync docs",
        ],
    )
    open_notebook(page, lab_server, "contrast.ipynb")
    run_all_cells(page)
    doc_id = cell_output_text(page, 1).strip().removeprefix("automerge:")
    widget = cell_output(page, 2)
    widget.locator(
        f".autosync-browser-row[data-document-id='{doc_id}'] .autosync-browser-open"
    ).click()
    view = widget.locator(".autosync-live-view")
    expect(view).to_contain_text("first")
    selected = widget.locator(".autosync-browser-row.autosync-selected")
    expect(selected).to_have_attribute("data-document-id", doc_id)
    page.mouse.move(0, 0)  # not hovering the row
    try:
        for n, theme in enumerate(("JupyterLab Light", "JupyterLab Dark"), start=2):
            use_theme(page, theme)
            ratios = {
                "selected row id": contrast_ratio(selected.locator(".autosync-browser-id code")),
                "selected row size": contrast_ratio(selected.locator(".autosync-browser-size")),
                "selected row peers": contrast_ratio(selected.locator(".autosync-browser-peers")),
            }
            # A change from the kernel flashes the changed line.
            append_and_run(
                page,
                f"await s.change_document('{doc_id}', lambda d: d.__setitem__('n', {n}))",
            )
            ratios.update(_flash_ratios(view))
            low = {what: round(ratio, 2) for what, ratio in ratios.items() if ratio < AA}
            assert not low, f"{theme}: contrast below {AA}:1: {low} (all: {ratios})"
    finally:
        lab_server.api("PUT", THEME_SETTINGS, {"raw": "{}"})
