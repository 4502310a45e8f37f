"""The document tab's presence and history slider, with a second (JS) peer on the hub.

An official automerge-repo peer (Node) joins the Jupyter server's sync hub,
writes a document in three versions and announces itself with
automerge-repo's ``Presence``. The JupyterLab tab lists it among the people
in the document, with this user under JupyterLab's identity (which the JS
peer sees too); the history slider shows a past version read-only with its
change highlighted, author and time; "Copy link" gives the version's
``automerge:<id>#<heads>`` URL; "Restore this version" adds a change that
reaches the JS peer.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autosync_jupyter.runtime.loop_thread import LoopThread
from tests.interop.jspeer import JSPeer, Op, require_js_install

from .conftest import LabServer
from .lab import document_value, expect, open_lab, review_screenshot, run_command
from .test_widgets_lab import js_peer

if TYPE_CHECKING:
    from playwright.sync_api import Page


def hub_socket_url(lab: LabServer) -> str:
    """The hub's WebSocket, as a JS app outside the page would reach it."""
    parts = urllib.parse.urlsplit(lab.url)
    return f"ws://{parts.netloc}{parts.path}autosync/ws?token={lab.token}"


def wait_for_state(
    runner: LoopThread,
    peer: JSPeer,
    doc_id: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """The presence state the JS peer holds for the peer called ``name``, once ``check`` holds."""
    deadline = time.monotonic() + 15
    while True:
        states = runner.run(peer.presence_states(doc_id))
        for state in states.values():
            value: dict[str, Any] = state["value"]
            if value.get("name") == name and check(value):
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the JS peer holds {states!r}")
        time.sleep(0.1)


def test_tab_shows_a_js_peer_and_browses_restores_and_links_versions(
    page: Page, lab_server: LabServer
) -> None:
    require_js_install()
    open_lab(page, lab_server)
    my_name = page.evaluate(
        "async () => { const u = window.jupyterapp.serviceManager.user; await u.ready;"
        " return u.identity.display_name; }"
    )
    with js_peer(hub_socket_url(lab_server)) as (runner, peer):
        created: dict[str, Any] = runner.run(peer.create({"title": "first", "n": 1}))
        doc_id = created["documentId"]
        runner.run(peer.change(doc_id, [Op.set(["title"], "second")], message="retitled"))
        runner.run(peer.change(doc_id, [Op.set(["n"], 3)]))
        runner.run(peer.wait_synced(doc_id))
        runner.run(
            peer.presence_start(doc_id, {"name": "Grace (js)", "color": "#3cb44b", "viewing": []})
        )

        run_command(page, "autosync:open-document", {"url": f"automerge:{doc_id}"})
        view = page.locator(f".autosync-doc-panel[data-document-id='{doc_id}']")
        expect(view.locator(".autosync-doc-status")).to_have_attribute("data-status", "connected")
        expect(document_value(view, "title")).to_contain_text("second")

        # Presence: the JS peer, and this user by JupyterLab's identity.
        people = view.locator(".autosync-doc-presence")
        grace = people.locator(".autosync-doc-presence-peer", has_text="Grace (js)")
        expect(grace).to_be_visible(timeout=15_000)
        expect(people.locator(".autosync-doc-presence-me")).to_have_text(f"{my_name} (you)")
        # The tab focuses its first line when shown: that is what this user views.
        wait_for_state(runner, peer, doc_id, my_name, lambda v: isinstance(v.get("viewing"), list))
        # What the JS peer looks at shows on hover.
        runner.run(peer.presence_broadcast(doc_id, "viewing", ["n"]))
        expect(grace).to_have_attribute("title", re.compile(r"viewing n\b"))

        # The history slider: version 2 of 3, read-only, its change highlighted.
        view.locator(".autosync-doc-history").click()
        slider = view.locator(".autosync-doc-timeline-slider")
        expect(slider).to_be_visible()
        expect(slider).to_have_attribute("max", "3")
        expect(view.locator(".autosync-doc-timeline-position")).to_have_text("live · 3 versions")
        slider.fill("2")
        expect(view.locator(".autosync-doc-timeline-position")).to_have_text("version 2 of 3")
        expect(document_value(view, "title")).to_contain_text("second")
        expect(document_value(view, "n")).to_have_text("1")
        changed = view.locator(".autosync-doc-changed")
        expect(changed).to_have_count(1)
        expect(changed).to_contain_text("title")
        expect(view.locator(".autosync-doc-timeline-message")).to_contain_text("retitled")
        time_text = view.locator(".autosync-doc-timeline-time").inner_text()
        assert time_text and time_text != "time unknown"
        expect(view.locator(".autosync-doc-timeline-author")).to_contain_text("#2")
        expect(view.locator(".autosync-doc-tree.autosync-doc-past")).to_be_visible()
        # The JS peer is told which version this user looks at (bs58 heads, as in URLs).
        mine = wait_for_state(runner, peer, doc_id, my_name, lambda v: bool(v.get("heads")))
        assert all(len(head) > 40 for head in mine["heads"])
        expect(view.locator(".autosync-doc-delete").first).to_be_hidden()  # read-only

        # Copy link: the version's URL with its heads.
        view.locator(".autosync-doc-timeline-copy").click()
        link = view.locator(".autosync-doc-timeline-url")
        expect(link).to_be_visible()
        assert link.input_value().startswith(f"automerge:{doc_id}#")

        # Version 1, restored: a new change, which the JS peer gets.
        slider.fill("1")
        expect(document_value(view, "title")).to_contain_text("first")
        review_screenshot(page, "lab-tab-history")
        view.locator(".autosync-doc-timeline-restore").click()
        runner.run(peer.wait_for(doc_id, doc={"title": "first", "n": 1}))
        expect(view.locator(".autosync-doc-timeline-position")).to_have_text("live · 4 versions")
        expect(view.locator(".autosync-doc-tree.autosync-doc-past")).to_have_count(0)
        wait_for_state(runner, peer, doc_id, my_name, lambda v: v.get("heads") is None)
        history = runner.run(peer.history(doc_id))
        assert len(history) == 4 and history[-1]["message"] == "restore version 1"

        # The JS peer leaves: gone from the list at once.
        runner.run(peer.presence_stop(doc_id))
        expect(grace).to_have_count(0)
