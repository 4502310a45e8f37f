"""Which ``automerge`` release this package works with, checked when it is imported.

Works around: every workaround in :mod:`..binding` is measured against
``automerge`` 1.0.0rc1 (Rust core 0.5.7) and may be wrong for any other
release; and ``pip install automerge`` picks 0.1.x, an unrelated early binding
without sync, because 1.0.0rc1 is a pre-release. Relax this check together
with the workarounds it guards, once a newer binding has been measured.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Final

from ...errors import AutosyncError

__all__ = ["REQUIRED_VERSION", "UnsupportedBinding", "check_version"]

#: The one ``automerge`` distribution version this package works with.
REQUIRED_VERSION: Final = "1.0.0rc1"
_DISTRIBUTION: Final = "automerge"
_INSTALL: Final = f"pip install automerge=={REQUIRED_VERSION}"


class UnsupportedBinding(AutosyncError, ImportError):
    """The installed ``automerge`` is not the release this package works with.

    Raised when the package is imported; the message says what to install.
    """


def check_version() -> None:
    """Raise :class:`UnsupportedBinding` unless ``automerge`` 1.0.0rc1 is installed.

    An ``automerge`` that can be imported but has no distribution metadata
    (a source checkout on ``sys.path``) cannot be checked and is trusted.
    """
    try:
        installed = importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        if importlib.util.find_spec(_DISTRIBUTION) is None:
            raise UnsupportedBinding(
                f"autosync-jupyter needs the automerge binding {REQUIRED_VERSION}, "
                f"which is not installed: run `{_INSTALL}`"
            ) from None
        return
    if installed != REQUIRED_VERSION:
        raise UnsupportedBinding(
            f"autosync-jupyter needs automerge {REQUIRED_VERSION}, but automerge {installed} "
            f"is installed: run `{_INSTALL}` (a plain `pip install automerge` picks 0.1.x, "
            "an unrelated binding without sync)"
        )
