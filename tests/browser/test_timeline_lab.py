"""The LiveView's timeline and presence in a real JupyterLab, with an official JS peer.

A JS automerge-repo peer makes a document in three versions and announces
itself with automerge-repo's own ``Presence``; the notebook's live view shows
it among the people in the document, and the notebook user under the name
JupyterLab's identity gives (which the JS peer sees too). The history slider
shows a past version with its change highlighted, author and time; "copy
link" gives its ``automerge:<id>#<heads>`` URL; "restore this version" makes
a new change that reaches the JS peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.interop.jspeer import Op, require_js_install

from .conftest import LabServer
from .lab import (
    append_and_run,
    cell_output,
    cell_output_text,
    expect,
    open_notebook,
    review_screenshot,
    run_all_cells,
    write_notebook,
)
from .test_widgets_lab import SERVE, URL_OF_SERVER, js_peer

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_live_view_timeline_and_presence_with_a_javascript_peer(
    page: Page, lab_server: LabServer
) -> None:
    require_js_install()
    write_notebook(
        lab_server.root_dir,
        "timeline.ipynb",
        [SERVE.format(name="timeline"), "import autosync_jupyter\n" + URL_OF_SERVER],
    )
    open_notebook(page, lab_server, "timeline.ipynb")
    run_all_cells(page)
    # Who JupyterLab says this user is (the server names anonymous users at random).
    my_name = page.evaluate(
        "async () => { const u = window.jupyterapp.serviceManager.user; await u.ready;"
        " return u.identity.display_name; }"
    )
    assert my_name
    url = cell_output_text(page, 1).strip()
    with js_peer(url) as (runner, peer):
        created: dict[str, Any] = runner.run(peer.create({"title": "first", "n": 1}))
        doc_id = created["documentId"]
        runner.run(peer.change(doc_id, [Op.set(["title"], "second")], message="retitled"))
        runner.run(peer.change(doc_id, [Op.set(["n"], 3)]))
        runner.run(peer.wait_synced(doc_id))
        runner.run(peer.presence_start(doc_id, {"name": "Grace (js)", "color": "#3cb44b"}))

        index = append_and_run(page, f"%autosync open {doc_id} -o h\n%autosync view h")
        view = cell_output(page, index).locator(".autosync-live-view")
        expect(view).to_contain_text("second")

        # Presence: the JS peer, and this user by JupyterLab's name.
        people = view.locator(".autosync-presence")
        expect(people.locator(".autosync-presence-peer", has_text="Grace (js)")).to_be_visible(
            timeout=15_000
        )
        expect(people.locator(".autosync-presence-me")).to_contain_text(f"{my_name} (you)")
        for _ in range(100):
            states = runner.run(peer.presence_states(doc_id))
            names = [s["value"].get("name") for s in states.values()]
            if my_name in names:
                break
            page.wait_for_timeout(100)
        assert my_name in names, states

        # The timeline: version 2 of 3, the title changed, by the JS actor.
        view.locator(".autosync-timeline-toggle").click()
        slider = view.locator(".autosync-timeline-slider")
        expect(slider).to_be_visible()
        expect(slider).to_have_attribute("max", "3")
        slider.fill("2")
        expect(view.locator(".autosync-timeline-position")).to_have_text("version 2 of 3")
        tree = view.locator(".autosync-tree")
        expect(tree).to_contain_text('"second"')
        expect(tree).to_contain_text("1")
        changed = view.locator(".autosync-history-changed")
        expect(changed.first).to_be_visible()
        assert all("title" in changed.nth(i).inner_text() for i in range(changed.count()))
        expect(view.locator(".autosync-timeline-message")).to_contain_text("retitled")
        time_text = view.locator(".autosync-timeline-time").inner_text()
        assert time_text and time_text != "time unknown"  # JS changes carry their time
        expect(view.locator(".autosync-timeline-author")).to_contain_text("#2")

        # Copy link: the version's URL, with its heads.
        view.locator(".autosync-timeline-copy").click()
        link = view.locator(".autosync-timeline-url")
        expect(link).to_be_visible()
        assert link.input_value().startswith(f"automerge:{doc_id}#")

        # Version 1, then restore it: a new change, which reaches the JS peer.
        slider.fill("1")
        expect(view.locator(".autosync-timeline-position")).to_have_text("version 1 of 3")
        expect(tree).to_contain_text('"first"')
        review_screenshot(page, "live-view-timeline")
        view.locator(".autosync-timeline-restore").click()
        runner.run(peer.wait_for(doc_id, doc={"title": "first", "n": 1}))
        expect(view.locator(".autosync-timeline-position")).to_contain_text("live · 4 versions")
        expect(view.locator(".autosync-timeline-status")).to_contain_text("restored")

        # The JS peer leaves (goodbye): it disappears from the list.
        runner.run(peer.presence_stop(doc_id))
        expect(people.locator(".autosync-presence-peer", has_text="Grace (js)")).to_have_count(0)
