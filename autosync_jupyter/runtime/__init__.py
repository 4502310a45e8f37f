"""The asyncio runtime: drivers that run the sans-I/O core on sockets, disks and clocks.

- :mod:`.server` serves the hub to peers (:class:`~.server.SyncServer`);
- :mod:`.connection` and :mod:`.client` are the client side (``connect``,
  ``fetch``); :mod:`.blocking` wraps them for code without ``await``;
- :mod:`.options` is the command-line form of a server's options.

Everything here runs in one event loop; see ``ARCHITECTURE.md``.
"""
