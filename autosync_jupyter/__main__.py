"""``python -m autosync_jupyter``: the same as the ``autosync`` command."""

from .cli import main

raise SystemExit(main())
