"""JupyterLab works here, offline: notebooks run, ipywidgets and anywidget render.

These prove the browser-test machinery itself (see conftest.py and lab.py), so
that a failing widget test later points at the widget, not at the set-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conftest import LabServer
from .lab import (
    append_and_run,
    cell_output,
    cell_output_text,
    expect,
    non_local_requests,
    open_notebook,
    run_all_cells,
    run_cell,
    write_notebook,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

ANYWIDGET_CELL = '''\
import anywidget
import traitlets


class Probe(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        const show = () => { el.innerHTML = '<b class="probe">' + model.get('v') + '</b>'; };
        show();
        model.on('change:v', show);
      }
    }
    """
    v = traitlets.Unicode("hi").tag(sync=True)


w = Probe()
w'''


def test_notebook_runs_code(page: Page, lab_server: LabServer) -> None:
    write_notebook(lab_server.root_dir, "smoke.ipynb", ["print(1+1)"])
    open_notebook(page, lab_server, "smoke.ipynb")
    run_all_cells(page)
    assert cell_output_text(page, 0) == "2"
    # Typed code arrives verbatim: no auto-indent, no doubled closing brackets.
    code = 'def f(x):\n    if x:\n        return [x, {"a": (x)}]\n\n\nprint(f(3))'
    assert run_cell(page, code) == "[3, {'a': 3}]"
    assert run_cell(page, "print(2 + 3)") == "5"
    assert non_local_requests(page) == []


def test_ipywidgets_slider_renders(page: Page, lab_server: LabServer) -> None:
    write_notebook(lab_server.root_dir, "slider.ipynb", ["import ipywidgets"])
    open_notebook(page, lab_server, "slider.ipynb")
    run_all_cells(page)
    index = append_and_run(page, "s = ipywidgets.IntSlider(value=7)\ns")
    output = cell_output(page, index)
    expect(output.locator(".jupyter-widgets.widget-slider")).to_be_visible()
    expect(output.locator(".widget-readout")).to_have_text("7")
    # A change in the kernel reaches the view.
    append_and_run(page, "s.value = 42")
    expect(output.locator(".widget-readout")).to_have_text("42")
    assert non_local_requests(page) == []


def test_anywidget_renders_and_syncs(page: Page, lab_server: LabServer) -> None:
    write_notebook(lab_server.root_dir, "anywidget.ipynb", [ANYWIDGET_CELL])
    open_notebook(page, lab_server, "anywidget.ipynb")
    run_all_cells(page)
    probe = cell_output(page, 0).locator("b.probe")
    expect(probe).to_have_text("hi")
    append_and_run(page, "w.v = 'there'")
    expect(probe).to_have_text("there")
    # The ESM is inline and anywidget's lab extension is local: no CDN.
    assert non_local_requests(page) == []
