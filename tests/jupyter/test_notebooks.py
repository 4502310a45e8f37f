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
