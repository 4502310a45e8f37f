"""The wheel build's front-end step: the JupyterLab extension, or why it cannot be built.

hatch-jupyter-builder calls :func:`build` (``pyproject.toml``,
``[tool.hatch.build.hooks.jupyter-builder]``). Building the JupyterLab panel
from source needs Node.js and npm; without them the plain "Could not find
cmd (npm)" said nothing of what to do, so this says it.
"""

from __future__ import annotations

import shutil
from typing import Any

from hatch_jupyter_builder import npm_builder

NO_NODE = """
autosync-jupyter: building it from source compiles its JupyterLab panel, which needs
Node.js >= 20 with npm, and npm is not on PATH. Any one of these works:

  * install Node.js (e.g. `apt install nodejs npm`, or https://nodejs.org) and retry;
  * install a prebuilt wheel, which needs no Node.js: on a machine with Node.js,
    `scripts/build` writes dist/autosync_jupyter-<version>-py3-none-any.whl; then
    `pip install autosync_jupyter-<version>-py3-none-any.whl` here;
  * install without the JupyterLab panel (the server, the client, the magics and the
    notebook widgets all work): `SKIP_JUPYTER_BUILDER=1 pip install .`
"""


def build(target_name: str, version: str, **kwargs: Any) -> None:
    """Build the JupyterLab extension with npm, or fail saying what to install."""
    if shutil.which(str((kwargs.get("npm") or ["npm"])[0])) is None:
        raise RuntimeError(NO_NODE)
    npm_builder(target_name, version, **kwargs)
