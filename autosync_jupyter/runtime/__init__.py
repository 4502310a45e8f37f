"""The asyncio runtime: drivers that run the sans-I/O core on sockets, disks and clocks.

- :mod:`.sync_runtime` runs a hub for any transport
  (:class:`~.sync_runtime.SyncRuntime`); :mod:`.transport` is what it needs
  of a socket (``PeerSocket``);
- :mod:`.server` is its websockets front end (:class:`~.server.SyncServer`);
- :mod:`.connection` and :mod:`.client` drive the client peer (``connect``,
  ``fetch``); :mod:`.blocking` wraps them for code without ``await``, with
  :mod:`.loop_thread` (an event loop in a thread, also under
  ``BackgroundSyncServer``);
- :mod:`.options` is the command-line form of a server's options.

Everything here runs in one event loop; see ``ARCHITECTURE.md``.
"""
