"""The public API: everything ``from autosync_jupyter import …`` promises is there, once.

Each public name is defined in one layer module, listed in that module's
``__all__``, and re-exported by the package; the package lists nothing
else (but the version).
"""

from __future__ import annotations

import importlib

import autosync_jupyter

#: The modules whose ``__all__`` is public as a whole: every name they
#: export is re-exported by the package.
WHOLLY_PUBLIC = [
    "autosync_jupyter.errors",
    "autosync_jupyter.runtime.blocking",
    "autosync_jupyter.auth.tls",
]


def test_every_listed_name_exists() -> None:
    missing = [name for name in autosync_jupyter.__all__ if not hasattr(autosync_jupyter, name)]
    assert missing == []


def test_every_public_name_is_exported_by_the_module_that_defines_it() -> None:
    unlisted = []
    for name in autosync_jupyter.__all__:
        if name == "__version__":
            continue
        value = getattr(autosync_jupyter, name)
        home = getattr(value, "__module__", None)
        if home is None or not home.startswith("autosync_jupyter."):
            continue  # a type alias (DocumentId, SharePolicy): checked below by name
        module = importlib.import_module(home)
        if name not in getattr(module, "__all__", ()):
            unlisted.append(f"{home}.{name}")
    assert unlisted == []


def test_wholly_public_modules_are_reexported() -> None:
    for module_name in WHOLLY_PUBLIC:
        module = importlib.import_module(module_name)
        assert sorted(set(module.__all__) - set(autosync_jupyter.__all__)) == [], module_name


def test_public_names_are_unique() -> None:
    names = autosync_jupyter.__all__
    assert len(set(names)) == len(names)


def test_layer_packages_keep_their_public_paths() -> None:
    """Imports that README examples and users' configs use keep working."""
    from autosync_jupyter.auth import AuthConfig
    from autosync_jupyter.storage import FileStore, MemoryStore, Store

    assert AuthConfig is autosync_jupyter.AuthConfig
    assert (FileStore, MemoryStore, Store) == (
        autosync_jupyter.FileStore,
        autosync_jupyter.MemoryStore,
        autosync_jupyter.Store,
    )
