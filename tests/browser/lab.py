"""Helpers that drive JupyterLab 4 notebooks in a Playwright (sync API) page.

Typical use, with the ``page`` and ``lab_server`` fixtures of conftest.py::

    write_notebook(lab_server.root_dir, "t.ipynb", ["import ipywidgets"])
    open_notebook(page, lab_server, "t.ipynb")     # waits for the kernel to be idle
    run_all_cells(page)                            # waits until every cell ran
    index = append_and_run(page, "ipywidgets.IntSlider()")
    expect(cell_output(page, index).locator(".widget-slider")).to_be_visible()
    assert run_cell(page, "print(1 + 1)") == "2"

Every wait is explicit and bounded (``timeout`` in seconds). Cell indices count
all cells (code and markdown) of the notebook from 0, as in the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import nbformat

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page
    from playwright.sync_api._generated import LocatorAssertions

# Playwright is imported inside the helpers, not here: without it, importing a
# test module must still work, so that conftest.py can skip (or, in CI, fail)
# with a clear reason instead of a collection error.

__all__ = [
    "append_and_run",
    "cell",
    "cell_count",
    "cell_output",
    "cell_output_text",
    "contrast_ratio",
    "document_value",
    "expect",
    "non_local_requests",
    "notebook_panel",
    "open_automerge_panel",
    "open_lab",
    "open_notebook",
    "review_screenshot",
    "run_all_cells",
    "run_cell",
    "run_command",
    "show_tab",
    "use_theme",
    "wait_for_kernel_idle",
    "wait_in_kernel",
    "write_notebook",
]

#: The visible notebook (Lumino marks hidden dock widgets with lm-mod-hidden).
_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
_CELLS = ".jp-Notebook .jp-Cell"
_EXECUTED_PROMPT = re.compile(r"^\s*\[\d+\]:?\s*$")


class _Lab(Protocol):
    """What the helpers need of the ``lab_server`` fixture (conftest.LabServer)."""

    url: str
    token: str


def write_notebook(root_dir: Path | str, name: str, cells: Sequence[str]) -> Path:
    """Write a notebook of code cells (python3 kernel) under ``root_dir``; its path."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = Path(root_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def notebook_panel(page: Page) -> Locator:
    """The notebook panel that is shown (the one ``open_notebook`` opened last)."""
    return page.locator(_PANEL).first


def wait_for_kernel_idle(page: Page, timeout: float = 60.0) -> None:
    """Wait until the notebook's kernel status (toolbar indicator) is "idle".

    Right after a page load this can be true before the kernel is connected;
    ``open_notebook`` also waits for that."""
    indicator = notebook_panel(page).locator(".jp-Notebook-ExecutionIndicator")
    expect(indicator).to_have_attribute("data-status", "idle", timeout=timeout * 1000)


def open_notebook(page: Page, lab: _Lab, name: str, timeout: float = 90.0) -> None:
    """Open ``name`` (relative to the server's root dir) and wait for an idle kernel.

    Each call uses a fresh JupyterLab workspace, so no tab of an earlier test is
    restored (which would start its kernel too).
    """
    deadline = time.monotonic() + timeout
    workspace = f"test-{secrets.token_hex(6)}"
    path = urllib.parse.quote(name)
    mark = _kernel_log_mark(page)
    page.goto(
        f"{lab.url}lab/workspaces/{workspace}/tree/{path}?token={lab.token}",
        timeout=timeout * 1000,
    )
    panel = notebook_panel(page)
    expect(panel.locator(_CELLS).first).to_be_visible(timeout=_left(deadline))
    # The toolbar's status indicator can read "idle" before the kernel's
    # WebSocket is even open, and a cell run then is silently dropped. The
    # kernel is there once it answered JupyterLab's kernel_info_request.
    _wait_for_kernel_message(
        page, "<-", "kernel_info_reply", mark, deadline, f"the kernel of {name} to connect"
    )
    wait_for_kernel_idle(page, timeout=_left(deadline) / 1000)


def open_lab(page: Page, lab: _Lab, timeout: float = 60.0) -> str:
    """Load JupyterLab in a fresh workspace (no notebook, no kernel); the workspace's name.

    JupyterLab saves the layout (open tabs, the side panel shown) in that
    workspace, so ``page.reload()`` brings it back.
    """
    workspace = f"test-{secrets.token_hex(6)}"
    page.goto(f"{lab.url}lab/workspaces/{workspace}?token={lab.token}", timeout=timeout * 1000)
    expect(page.locator('.jp-SideBar [data-id="autosync-panel"]')).to_be_visible(
        timeout=timeout * 1000
    )
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout * 1000)
    return workspace


def run_command(page: Page, command: str, args: dict[str, object] | None = None) -> object:
    """Execute a JupyterLab command in the page (needs ``expose_app_in_browser``); its result.

    The result must be JSON-able; widgets come back as None.
    """
    return page.evaluate(
        """async ([command, args]) => {
            const result = await window.jupyterapp.commands.execute(command, args);
            try { return JSON.parse(JSON.stringify(result ?? null)); } catch { return null; }
        }""",
        [command, args or {}],
    )


def use_theme(page: Page, name: str) -> None:
    """Switch JupyterLab's theme ("JupyterLab Light", "JupyterLab Dark") and wait until it applies.

    The choice is saved in the user settings, for every later page of the
    session: switch back when done.
    """
    run_command(page, "apputils:change-theme", {"theme": name})
    page.wait_for_function(
        "name => document.body.dataset.jpThemeName === name"
        " && getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() !== ''",
        arg=name,
    )
    _settle(page)


#: WCAG 2 contrast of a node's text against what is painted behind it: the
#: background colours of the node and its ancestors, composited, and the
#: text colour (with its alpha) over that. ``pseudo`` reads e.g. "::placeholder".
_CONTRAST_JS = r"""(node, pseudo) => {
    const parse = text => {
        // rgb(r, g, b), rgba(r, g, b, a), or color(srgb r g b / a) with 0..1 channels
        const m = /^(rgba?|color)\((srgb )?([^)]*)\)$/.exec(text.trim());
        if (!m || (m[1] === 'color' && !m[2])) throw new Error(`cannot read the colour ${text}`);
        const p = m[3].split(/[\s,\/]+/).filter(Boolean).map(Number);
        const scale = m[1] === 'color' ? 255 : 1;
        return [p[0] * scale, p[1] * scale, p[2] * scale, p.length > 3 ? p[3] : 1];
    };
    const over = (top, bottom) => {
        const a = top[3] + bottom[3] * (1 - top[3]);
        const mix = i => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / a;
        return [mix(0), mix(1), mix(2), a];
    };
    const layers = [];
    for (let n = node; n; n = n.parentElement) {
        const bg = parse(getComputedStyle(n).backgroundColor);
        if (bg[3] > 0) layers.push(bg);
        if (bg[3] >= 1) break;
    }
    let bg = [255, 255, 255, 1];
    for (const layer of layers.reverse()) bg = over(layer, bg);
    const fg = over(parse(getComputedStyle(node, pseudo || null).color), bg);
    const lum = c => {
        const [r, g, b] = c.slice(0, 3).map(v => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return (hi + 0.05) / (lo + 0.05);
}"""


def contrast_ratio(locator: Locator, pseudo: str = "") -> float:
    """The WCAG contrast ratio of the text of ``locator`` against its background (1 to 21)."""
    return float(locator.evaluate(_CONTRAST_JS, pseudo))


def cell(page: Page, index: int) -> Locator:
    """The cell at ``index`` (0-based, code and markdown cells alike)."""
    return notebook_panel(page).locator(_CELLS).nth(index)


def cell_count(page: Page) -> int:
    """How many cells the notebook has."""
    return notebook_panel(page).locator(_CELLS).count()


def cell_output(page: Page, index: int) -> Locator:
    """The output area of cell ``index``, e.g. to look for a rendered widget in."""
    return cell(page, index).locator(".jp-OutputArea").first


def cell_output_text(page: Page, index: int) -> str:
    """The text of every output of cell ``index`` (without prompts), stripped."""
    outputs = cell(page, index).locator(".jp-OutputArea-output")
    return "\n".join(text.strip("\n") for text in outputs.all_inner_texts()).strip()


def run_all_cells(page: Page, timeout: float = 90.0) -> None:
    """Run > Run All Cells, then wait until every code cell has finished running.

    Finished means: the prompt of each non-empty code cell shows an execution
    count larger than any count shown before the run (so cells that ran before
    count only once they ran again), and the kernel is idle.
    """
    deadline = time.monotonic() + timeout
    before = _max_execution_count(page)
    for attempt in (1, 2):
        mark = _kernel_log_mark(page)
        _activate_notebook(page, deadline)
        # A menu item is only enabled while a notebook is JupyterLab's current
        # widget; clicking a disabled one silently does nothing.
        page.get_by_role("menuitem", name="Run", exact=True).click(timeout=_left(deadline))
        item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells")).first
        expect(item).to_be_visible(timeout=_left(deadline))
        expect(item).not_to_have_class(re.compile(r"\blm-mod-disabled\b"), timeout=5_000)
        item.click(timeout=_left(deadline))
        if not _has_code(page):
            break
        # Did a cell go to the kernel? If not, the click was lost and running
        # all cells again is safe: nothing ran.
        try:
            _wait_for_kernel_message(
                page, "->", "execute_request", mark, _soon(deadline), "Run All Cells to run"
            )
            break
        except AssertionError:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")  # close the menu, should it still be open
    page.wait_for_function(
        """([panelSelector, before]) => {
            const panel = document.querySelector(panelSelector);
            if (!panel) return false;
            return [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')].every(c => {
                const source = c.querySelector('.cm-content')?.textContent ?? '';
                if (!source.trim()) return true;  // JupyterLab skips empty cells
                const prompt = c.querySelector('.jp-InputArea-prompt')?.textContent ?? '';
                const m = /\\[(\\d+)\\]/.exec(prompt);
                return m !== null && Number(m[1]) > before;
            });
        }""",
        arg=[_PANEL, before],
        timeout=_left(deadline),
    )
    wait_for_kernel_idle(page, timeout=_left(deadline) / 1000)
    _settle(page)


def append_and_run(page: Page, code: str, timeout: float = 60.0) -> int:
    """Put ``code`` in a new cell at the end, Shift+Enter, wait until it ran; its index.

    An empty, never-run code cell at the end (such as the one Shift+Enter leaves
    behind) is reused instead of adding another one.
    """
    deadline = time.monotonic() + timeout
    count = cell_count(page)
    if count == 0:
        raise AssertionError("the notebook has no cell to append to")
    index = count - 1
    if not _is_blank_code_cell(cell(page, index)):
        cell(page, index).locator(".jp-InputArea-prompt").click(timeout=_left(deadline))
        page.keyboard.press("Escape")  # command mode
        page.keyboard.press("b")  # insert a code cell below, and select it
        index = count
        expect(notebook_panel(page).locator(_CELLS)).to_have_count(
            count + 1, timeout=_left(deadline)
        )
    target = cell(page, index)
    target.locator(".cm-content").click(timeout=_left(deadline))  # edit mode
    expect(target).to_have_class(re.compile(r"\bjp-mod-active\b"), timeout=_left(deadline))
    # insert_text is one input event: no auto-indent, no auto-closed brackets.
    page.keyboard.insert_text(code)
    mark = _kernel_log_mark(page)
    page.keyboard.press("Shift+Enter")
    if code.strip():
        _wait_for_kernel_message(
            page, "->", "execute_request", mark, _soon(deadline), "the cell to be run"
        )
    expect(target.locator(".jp-InputArea-prompt")).to_have_text(
        _EXECUTED_PROMPT, timeout=_left(deadline)
    )
    _settle(page)
    return index


def run_cell(page: Page, code: str, timeout: float = 60.0) -> str:
    """Run ``code`` in a new cell at the end (see ``append_and_run``); its output text."""
    return cell_output_text(page, append_and_run(page, code, timeout=timeout))


def non_local_requests(page: Page) -> list[str]:
    """The URLs the page fetched (or opened WebSockets to) off this machine.

    Uses ``page.requests_seen`` that the ``page`` fixture records; ``data:`` and
    ``blob:`` URLs are local.
    """
    seen: list[str] = getattr(page, "requests_seen", None) or []
    local_hosts = {"127.0.0.1", "localhost", "::1", "[::1]"}
    return [
        url
        for url in seen
        if urllib.parse.urlsplit(url).scheme not in ("data", "blob", "about")
        and urllib.parse.urlsplit(url).hostname not in local_hosts
    ]


def open_automerge_panel(page: Page) -> Locator:
    """Show the Automerge side panel and return it.

    Its side-bar tab toggles it, and JupyterLab may have restored it open
    already (after a reload), so look before clicking.
    """
    tab = page.locator('.jp-SideBar [data-id="autosync-panel"]')
    panel = page.locator(".autosync-panel")
    expect(tab).to_be_visible()
    for _ in range(5):
        if panel.is_visible():
            break
        tab.click()
        with contextlib.suppress(AssertionError):
            expect(panel).to_be_visible(timeout=2_000)
    expect(panel).to_be_visible()
    return panel


def show_tab(page: Page, title: str) -> None:
    """Bring the main-area tab whose title contains ``title`` to the front."""
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=title).first.click()


def document_value(view: Locator, *path: str | int) -> Locator:
    """The value at ``path`` (keys and indices) in a document tab's tree."""
    return view.locator(f".autosync-doc-value[data-path='{json.dumps(list(path))}']")


def edit_value(view: Locator, key: str, text: str) -> None:
    """Type ``text`` over the value of ``key`` in a document tab, as a user does."""
    document_value(view, key).click()
    editor = view.locator(".autosync-doc-edit-input")
    editor.fill(text)
    editor.press("Enter")
    expect(document_value(view, key)).to_contain_text(text)


def wait_in_kernel(expression: str, expected: str) -> str:
    """Cell code that waits (up to 10 s, yielding to the kernel's loop) until
    ``expression`` equals ``expected``, then prints it."""
    return (
        "for _ in range(200):\n"
        f"    if {expression} == {expected!r}:\n"
        "        break\n"
        "    await asyncio.sleep(0.05)\n"
        f"print({expression})"
    )


def review_screenshot(page: Page, name: str) -> None:
    """Save a screenshot when $AUTOSYNC_SCREENSHOTS names a directory (for reviews)."""
    where = os.environ.get("AUTOSYNC_SCREENSHOTS")
    if where:
        page.screenshot(path=os.path.join(where, f"{name}.png"), full_page=True)


def expect(actual: Locator) -> LocatorAssertions:
    """Playwright's ``expect`` (imported late, see the top of this module)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(actual)


# --------------------------------------------------------------------------- internals


def _left(deadline: float) -> float:
    """Milliseconds until ``deadline`` (at least 1), for Playwright's timeouts."""
    return max(1.0, (deadline - time.monotonic()) * 1000)


def _soon(deadline: float, seconds: float = 10.0) -> float:
    """A deadline ``seconds`` from now, but not after ``deadline``."""
    return min(deadline, time.monotonic() + seconds)


def _kernel_log_mark(page: Page) -> int:
    """Where the kernel message log of the ``page`` fixture ends now."""
    return len(getattr(page, "kernel_messages", ()))


def _wait_for_kernel_message(
    page: Page, direction: str, msg_type: str, start: int, deadline: float, what: str
) -> None:
    """Wait until a kernel WebSocket frame ``msg_type`` went ``direction`` ("->" to
    the kernel, "<-" from it) after entry ``start`` of ``page.kernel_messages``.

    Does nothing for a page that does not record kernel messages (not made by
    the ``page`` fixture). Frames are only delivered while Playwright runs, so
    this polls with short waits in the page.
    """
    log: list[str] | None = getattr(page, "kernel_messages", None)
    if log is None:
        return
    while True:
        for entry in log[start:]:
            words = entry.split()
            if words and words[0] == direction and words[-1] == msg_type:
                return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out waiting for {what}: no {msg_type} {direction} the kernel; "
                f"kernel messages since: {log[start:][-20:]}"
            )
        page.wait_for_timeout(50)


def _has_code(page: Page) -> bool:
    """Whether the notebook has a code cell with some code in it."""
    return bool(
        notebook_panel(page).evaluate(
            """panel => [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')].some(
                c => (c.querySelector('.cm-content')?.textContent ?? '').trim())"""
        )
    )


def _settle(page: Page) -> None:
    """Let the page render what arrived (two animation frames)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _activate_notebook(page: Page, deadline: float) -> None:
    """Make the notebook JupyterLab's current widget, in command mode.

    Clicks its tab, which activates the notebook without changing its cells.
    """
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current").first
    tab.click(timeout=_left(deadline))
    expect(tab).to_have_class(re.compile(r"\bjp-mod-active\b"), timeout=_left(deadline))


def _is_blank_code_cell(locator: Locator) -> bool:
    return bool(
        locator.evaluate(
            """c => c.classList.contains('jp-CodeCell')
                && !(c.querySelector('.cm-content')?.textContent ?? '').trim()
                && c.querySelectorAll('.jp-OutputArea-output').length === 0
                && !/\\d|\\*/.test(c.querySelector('.jp-InputArea-prompt')?.textContent ?? '')"""
        )
    )


def _max_execution_count(page: Page) -> int:
    counts = notebook_panel(page).locator(".jp-InputArea-prompt").all_inner_texts()
    numbers = [int(m.group(1)) for t in counts if (m := re.search(r"\[(\d+)\]", t))]
    return max(numbers, default=0)
