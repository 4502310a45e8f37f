"""The notebooks in notebooks/ run top to bottom in a real kernel (nbclient)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.oidc_provider import CLIENT_ID, OIDCProvider, running_provider

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ROOT = NOTEBOOKS.parent


def _run(name: str, workdir: Path) -> Any:
    shutil.copy(NOTEBOOKS / name, workdir / name)
    notebook = nbformat.read(workdir / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    return notebook


def _outputs(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(str(output["data"].get("text/plain", "")))
            parts.append(str(output["data"].get("text/html", "")))
    return "\n".join(parts)


def _cell(notebook: Any, source_start: str) -> Any:
    (cell,) = [c for c in notebook.cells if c.source.startswith(source_start)]
    return cell


@pytest.fixture(autouse=True)
def _kernel_imports_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_quickstart_runs_top_to_bottom(tmp_path: Path) -> None:
    notebook = _run("quickstart.ipynb", tmp_path)
    assert "listening on ws://127.0.0.1:" in _outputs(_cell(notebook, "%autosync serve"))
    live = _outputs(_cell(notebook, "with friend.change()"))
    assert "'milk'" in live and "Shopping (shared)" in live
    assert "'bread'" in _outputs(_cell(notebook, "%autosync fetch"))
    assert "True" in _outputs(_cell(notebook, "# Blocking and async"))
    assert "stopped the server" in _outputs(_cell(notebook, "await peer.close()"))
    assert any((tmp_path / "quickstart-data").iterdir())


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[OIDCProvider]:
    with running_provider() as oidc:
        monkeypatch.setenv("OIDC_ISSUER", oidc.issuer)
        monkeypatch.setenv("OIDC_CLIENT_ID", CLIENT_ID)
        opener = Path(__file__).with_name("open_url.py")
        monkeypatch.setenv("BROWSER", f"{sys.executable} {opener} %s")
        yield oidc


def test_auth_notebook_runs_top_to_bottom(tmp_path: Path, provider: OIDCProvider) -> None:
    notebook = _run("auth.ipynb", tmp_path)
    assert provider.issuer in _outputs(notebook.cells[1])
    assert "world domination" in _outputs(_cell(notebook, "doc = await"))
    refused = _outputs(_cell(notebook, "try:"))
    assert "refused:" in refused and "Authentication failed" in refused
    assert "world domination" in _outputs(_cell(notebook, "%autosync fetch"))


def test_history_presence_frames_runs_top_to_bottom(tmp_path: Path) -> None:
    """Issue 16's notebook: presence, the timeline, history and data frames, in one run."""
    notebook = _run("history_presence_frames.ipynb", tmp_path)
    people = _outputs(_cell(notebook, "import autosync_jupyter"))
    assert "Ada (you) viewing []" in people and "Grace  viewing ['items']" in people
    assert "Ada" in _outputs(_cell(notebook, "# What Grace"))
    timeline = _outputs(_cell(notebook, "view.timeline = True"))
    assert "version 2 of 3: {'items': ['milk'], 'title': 'Plan'}" in timeline
    assert "automerge:" in timeline and "#" in timeline
    restored = _outputs(_cell(notebook, "before = len("))
    assert "{'items': ['milk'], 'title': 'Plan'}" in restored
    assert "1 new change: restore version 2" in restored
    assert "Plan" in _outputs(_cell(notebook, "for _ in range(200):  # Grace"))
    table = _outputs(_cell(notebook, "%autosync history doc -n 5"))
    assert "add two books" in table and "finished Dune" in table and " UTC " in table
    assert "put books/0/read: True" in _outputs(_cell(notebook, "then = doc.at("))
    frame = _outputs(_cell(notebook, 'df = doc.to_pandas("books")'))
    assert "Dune" in frame and "Emma" in frame
    # pages put (1); a map inserted with id, pages, read, title (5) and 7 characters
    written = _outputs(_cell(notebook, "import pandas as pd"))
    assert "13 operations" in written and "Ulysses" in written
    assert "from pandas" in _outputs(_cell(notebook, "%autosync history doc -n 2"))
