"""The ``autosync`` command: run a sync server and manage its documents.

autosync serve [--host 127.0.0.1] [--port 3030] [--data-dir .automerge]
autosync create [--data-dir .automerge] ['{"title": "hello"}']
autosync ls [--data-dir .automerge] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import AutosyncError
from .ids import document_url, generate_document_id
from .server import DEFAULT_MAX_MESSAGE_SIZE, SyncServer
from .storage import FileStore
from .tls import make_self_signed_certificate, server_ssl_context
from .values import new_document, to_py

__all__ = ["main"]

logger = logging.getLogger("autosync_jupyter.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autosync",
        description="An automerge-repo sync server and tools (autosync-jupyter).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a sync server until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    serve.add_argument("--port", type=int, default=3030, help="port, 0 for any (default: 3030)")
    serve.add_argument("--data-dir", default=".automerge", help="document store directory")
    serve.add_argument(
        "--ephemeral", action="store_true", help="keep documents in memory only; no storage id"
    )
    serve.add_argument(
        "--share",
        choices=["request", "announce", "deny"],
        default="request",
        help="request: documents by id only (default, like the JS sync server); "
        "announce: push every document to every peer; deny: share nothing",
    )
    serve.add_argument(
        "--create-on-request",
        action="store_true",
        help="R-compatible: a request for an unknown id creates an empty document",
    )
    tls = serve.add_mutually_exclusive_group()
    tls.add_argument(
        "--self-signed",
        action="store_true",
        help="serve wss:// with a new self-signed certificate for localhost and "
        "--host (written to a temporary directory, whose path is printed)",
    )
    tls.add_argument("--cert", help="PEM certificate for wss:// (with --key)")
    serve.add_argument("--key", help="PEM private key for --cert")
    serve.add_argument("--path", help="accept upgrades on this URL path only")
    serve.add_argument("--origin", action="append", help="allowed browser Origin (repeatable)")
    serve.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        help="largest message in bytes (default: 100 MiB)",
    )
    serve.add_argument(
        "--sync-interval",
        type=float,
        default=0.1,
        help="seconds between two rounds of sync messages for one busy document "
        "(default: %(default)s; the first change after a quiet spell goes out at once)",
    )
    serve.add_argument("-v", "--verbose", action="count", default=0, help="more logging")

    create = sub.add_parser("create", help="create a document in a data directory")
    create.add_argument("initial", nargs="?", help="initial content as a JSON object")
    create.add_argument("--data-dir", default=".automerge", help="document store directory")

    ls = sub.add_parser("ls", help="list the documents of a data directory")
    ls.add_argument("--data-dir", default=".automerge", help="document store directory")
    ls.add_argument("--json", action="store_true", help="print the documents' content as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``autosync`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.WARNING - 10 * getattr(args, "verbose", 0)
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        logging.getLogger("autosync_jupyter").setLevel(max(logging.INFO - 10 * args.verbose, 10))
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "create":
            return asyncio.run(_create(args))
        return asyncio.run(_ls(args))
    except (AutosyncError, ValueError, OSError) as exc:
        print(f"autosync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _serve(args: argparse.Namespace) -> int:
    ssl_context = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise AutosyncError("--cert and --key go together")
        ssl_context = server_ssl_context(args.cert, args.key)
    elif args.self_signed:
        where = Path(tempfile.mkdtemp(prefix="autosync-tls-"))
        hosts = ["localhost", "127.0.0.1", "::1"]
        if args.host not in hosts and args.host not in ("0.0.0.0", "::"):
            hosts.append(args.host)
        cert, key = make_self_signed_certificate(where / "cert.pem", where / "key.pem", hosts=hosts)
        ssl_context = server_ssl_context(cert, key)
        print(f"self-signed certificate: {cert}", flush=True)
    server = SyncServer(
        host=args.host,
        port=args.port,
        data_dir=None if args.ephemeral else args.data_dir,
        ephemeral=args.ephemeral,
        share=args.share,
        create_on_request=args.create_on_request,
        ssl=ssl_context,
        max_message_size=args.max_message_size,
        sync_interval=args.sync_interval,
        origins=args.origin,
        path=args.path,
    )
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    print(f"listening on {server.url}", flush=True)
    await stop.wait()
    print("stopping: flushing documents to disk...", file=sys.stderr, flush=True)
    await server.close()
    return 0


async def _create(args: argparse.Namespace) -> int:
    initial: Any = json.loads(args.initial) if args.initial else None
    if initial is not None and not isinstance(initial, dict):
        raise AutosyncError("the initial content must be a JSON object")
    store = FileStore(args.data_dir)
    await store.open()  # refuses a directory a running server holds
    try:
        doc_id = generate_document_id()
        store.append(doc_id, new_document(initial).save())
        await store.flush()
    finally:
        await store.close()
    print(document_url(doc_id))
    return 0


async def _ls(args: argparse.Namespace) -> int:
    if not Path(args.data_dir).is_dir():
        raise AutosyncError(f"no data directory at {args.data_dir}")
    store = FileStore(args.data_dir, read_only=True)  # works beside a running server
    await store.open()
    try:
        ids = sorted(store.document_ids())
        if args.json:
            import automerge.core as am

            out: dict[str, Any] = {}
            for doc_id in ids:
                data = await store.load(doc_id)
                out[doc_id] = to_py(am.Document.load(data)) if data else None
            print(json.dumps(out, indent=2, default=str))
        else:
            for doc_id in ids:
                print(document_url(doc_id))
    finally:
        await store.close()
    return 0
