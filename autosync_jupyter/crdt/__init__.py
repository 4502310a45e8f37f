"""The Automerge layer: the Python ``Document``, its values, and readers of Automerge bytes.

Everything that knows the ``automerge`` binding (``automerge.core``) lives
here, and :mod:`.binding` holds every workaround for its 1.0.0rc1 release.
The byte readers (:mod:`.chunks`, :mod:`.columns`, :mod:`.changes`,
:mod:`.sync_message`) and :mod:`.guard` check what a peer sent before the
binding sees it.
"""

from __future__ import annotations

# First, so that a wrong automerge release is reported before anything uses it.
from . import binding as binding
