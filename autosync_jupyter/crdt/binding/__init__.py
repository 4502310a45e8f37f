"""Every workaround for the ``automerge`` binding 1.0.0rc1, in one place.

The package uses ``automerge.core`` (the binding's low-level API) directly;
wherever that binding (Rust core 0.5.7) misbehaves, the code that lives with
it is here, and each piece's docstring says which behaviour it works around
and what would let us delete it. tests/crdt/test_binding.py pins the behaviours
relied on, against the real binding, so an upgrade fails there first.

* :mod:`.version` -- the installed ``automerge`` must be 1.0.0rc1; checked
  when this package is imported (:class:`UnsupportedBinding` otherwise).
* :mod:`.failures` -- recognising a Rust panic (:func:`is_panic`) and the
  "active transaction" refusal (:func:`is_transaction_open`).
* :mod:`.debug_text` -- a parser of the Rust ``Debug`` text that is the only
  view the binding gives of a patch.
* :mod:`.patch_text` -- patches read from that text: where counters, unknown
  values and exact timestamps are, without asking the binding (which panics).
* :mod:`.ids` -- reading and writing the binding's opaque object id bytes.
* :mod:`.conversions` -- timestamps as naive local time, bytes as lists of
  ints, no multi-character text insert.

Byte formats (chunks, changes, columns, sync messages) are Automerge's own,
not the binding's; their readers are :mod:`..chunks`, :mod:`..columns`,
:mod:`..changes` and :mod:`..sync_message`.
"""

from __future__ import annotations

from .version import REQUIRED_VERSION, UnsupportedBinding, check_version

# Before anything imports ``automerge.core``: a wrong release should fail
# with a message that says what to install, not somewhere deep inside.
check_version()

from .conversions import bytes_from_binding, insert_text, utc_from_binding  # noqa: E402
from .failures import is_panic, is_transaction_open  # noqa: E402
from .ids import ROOT_ID, ROOT_KEY, ObjKey, obj_key, object_id  # noqa: E402

__all__ = [
    "REQUIRED_VERSION",
    "ROOT_ID",
    "ROOT_KEY",
    "ObjKey",
    "UnsupportedBinding",
    "bytes_from_binding",
    "check_version",
    "insert_text",
    "is_panic",
    "is_transaction_open",
    "obj_key",
    "object_id",
    "utc_from_binding",
]
