"""Servers the benchmarks start beside those of ``tests/interop/servers.py``.

* :func:`published_sync_server`: the published JS sync server,
  ``@automerge/automerge-repo-sync-server`` 0.2.8 on automerge-repo 1.2.1
  (what ``sync.automerge.org`` runs). The benchmarks compare our server with
  it as well as with ``tests/interop/js/sync-server.mjs`` (automerge-repo
  2.5.6), and each figure with the better of the two. It is installed for
  the benchmarks only, into ``bench/published-sync-server`` (``npm ci
  --prefix bench/published-sync-server``; its ``node_modules`` is not
  committed), and started by ``start.mjs`` there on a free loopback port.
* :func:`py_tree_server`: our server run from another copy of the package
  (say, the code before a change), to compare both in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

from jspeer import node_executable  # noqa: E402
from servers import ServerProcess, run_server  # noqa: E402

PUBLISHED_DIR = Path(__file__).resolve().parent / "published-sync-server"
INSTALL_HINT = "npm ci --prefix bench/published-sync-server"


def installed() -> bool:
    """Whether the published server is installed (``npm ci`` has run)."""
    package = "@automerge/automerge-repo-sync-server"
    return (PUBLISHED_DIR / "node_modules" / package / "package.json").is_file()


def _free_port() -> int:
    # It takes its port from PORT and cannot be asked for port 0; the short
    # race with another process taking the port only makes a run fail.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_tree(text: str) -> tuple[str, Path]:
    """Parse ``NAME=DIR`` (a directory holding a copy of ``autosync_jupyter/``)."""
    name, sep, directory = text.partition("=")
    tree = Path(directory).resolve()
    if not sep or not name or not (tree / "autosync_jupyter" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"NAME=DIR, DIR holding autosync_jupyter/: {text}")
    return name, tree


def py_tree_server(
    tree: Path, data_dir: Path, *extra_args: str
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """Our server run from another copy of the package (``tree``), as py_sync_server runs it."""
    argv = [sys.executable, "-m", "autosync_jupyter", "serve", "--host", "127.0.0.1"]
    argv += ["--port", "0", "--data-dir", str(data_dir), *extra_args]
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")
    return run_server("py-sync-server-" + tree.name, argv, data_dir=data_dir, env=env, cwd=tree)


def published_sync_server(
    data_dir: Path,
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The published sync server 0.2.8 on a free loopback port, storing in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PORT=str(_free_port()), DATA_DIR=str(data_dir))
    return run_server(
        "js-sync-server-0.2.8",
        [node_executable(), str(PUBLISHED_DIR / "start.mjs")],
        data_dir=data_dir,
        env=env,
        cwd=PUBLISHED_DIR,
    )
