"""The sans-I/O sync core: the automerge-repo wire format and the rules of both sides.

- :mod:`.protocol` decodes and encodes the CBOR messages (checked before any
  Python object is built);
- :mod:`.hub` is the server side: every rule about joins, share policies,
  sync, ephemeral messages and unavailable documents, as a state machine
  that returns :class:`~.hub.Effects` (messages to send, documents to save)
  and never touches a socket, a disk or a clock;
- :mod:`.document_state` holds the states of a document and of each peer's
  view of it, and every transition between them;
- :mod:`.peer` is the client side: one document's conversation with a
  server, as an engine that returns what to send.

Drivers in :mod:`autosync_jupyter.runtime` feed bytes in and carry effects out.
"""
