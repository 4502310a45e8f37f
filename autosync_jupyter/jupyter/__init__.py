"""autosync-jupyter inside Jupyter: the ``%autosync`` magics and the widgets.

Load the magics with ``%load_ext autosync_jupyter``. The widgets
(:class:`DocumentBrowser`, :class:`LiveView`, :class:`LoginWidget`) work
without the magics too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .session import KernelSession, current_session, end_session

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = [
    "KernelSession",
    "current_session",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(shell: InteractiveShell) -> None:
    """Register ``%autosync`` (called by ``%load_ext autosync_jupyter``)."""
    from .magics import AutosyncMagics

    shell.register_magics(AutosyncMagics)  # type: ignore[no-untyped-call,unused-ignore]


def unload_ipython_extension(shell: InteractiveShell) -> None:
    """Stop this kernel's server and close its connections (``%unload_ext``, ``%reload_ext``)."""
    end_session()
    manager: Any = shell.magics_manager
    if manager is not None:
        manager.magics.get("line", {}).pop("autosync", None)
