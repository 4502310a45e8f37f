"""The options of a sync server on a command line (``autosync serve`` and ``%autosync serve``).

Both front ends share one argument list, so a flag means the same thing in a
terminal and in a notebook cell.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from ..auth.oidc import AuthConfig
from ..auth.tls import client_ssl_context, make_self_signed_certificate, server_ssl_context
from ..errors import AutosyncError
from ..storage import PostgresStore, Store
from ..storage.postgres import is_postgres_url
from .server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_SEND_QUEUE,
    SyncServer,
)
from .sync_runtime import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_LOADED_DOCUMENTS

__all__ = ["add_serve_arguments", "byte_size", "server_from_arguments"]


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


def add_serve_arguments(serve: argparse.ArgumentParser, *, default_port: int) -> None:
    """Add the options of ``autosync serve`` (shared with ``%autosync serve``)."""
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    serve.add_argument(
        "--port", type=_port, default=default_port, help="port, 0 for any (default: %(default)s)"
    )
    serve.add_argument(
        "--data-dir", default=".automerge", help="document store directory (default: %(default)s)"
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="the store instead of --data-dir: a postgresql://user@host/database URL "
        "(needs the postgres extra) or a directory",
    )
    serve.add_argument(
        "--store-shared",
        action="store_true",
        help="with a postgresql:// --store: several servers use the database at once, "
        "each seeing the others' changes (all of them must say --store-shared)",
    )
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
        "--tls",
        dest="self_signed",
        action="store_true",
        help="serve wss:// with a new self-signed certificate for localhost and "
        "--host (written to a temporary directory, whose path is printed)",
    )
    tls.add_argument("--cert", help="PEM certificate for wss:// (with --key)")
    serve.add_argument("--key", help="PEM private key for --cert")
    serve.add_argument("--path", help="accept upgrades on this URL path only")
    serve.add_argument("--origin", action="append", help="allowed browser Origin (repeatable)")
    limits = serve.add_argument_group(
        "limits", "what peers may cost the server (sizes in bytes, or with KiB/MiB/GiB)"
    )
    limits.add_argument(
        "--max-message-size",
        type=byte_size,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="SIZE",
        help="largest message, also the most a message may unpack to (default: 100 MiB)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="connections served at once; more get HTTP 503 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-queued-bytes",
        type=byte_size,
        default=DEFAULT_MAX_QUEUED_BYTES,
        metavar="SIZE",
        help="unsent bytes of all peers together; beyond, the slowest reader is "
        "disconnected (default: 512 MiB)",
    )
    limits.add_argument(
        "--max-send-queue",
        type=byte_size,
        default=DEFAULT_MAX_SEND_QUEUE,
        metavar="SIZE",
        help="unsent bytes of one peer; beyond, it is disconnected (default: 256 MiB)",
    )
    serve.add_argument(
        "--sync-interval",
        type=float,
        default=0.1,
        help="seconds between two rounds of sync messages for one busy document "
        "(default: %(default)s; the first change after a quiet spell goes out at once)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help="seconds after which a document no peer syncs, everything of it stored, "
        "leaves memory; it is loaded again when asked for (default: %(default)s; 0: never)",
    )
    serve.add_argument(
        "--max-loaded-documents",
        type=int,
        default=DEFAULT_MAX_LOADED_DOCUMENTS,
        metavar="N",
        help="documents kept in memory at most; beyond, the least recently used idle ones "
        "leave it (default: %(default)s; 0: no bound; documents in use always stay)",
    )
    upstream = serve.add_argument_group(
        "upstream servers",
        "also be a client of other automerge-repo servers: every document with changes "
        "here is synced with them, and documents peers ask for that are not here are "
        "asked of them",
    )
    upstream.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        help="ws:// or wss:// URL of an upstream server (repeatable)",
    )
    upstream.add_argument(
        "--upstream-token",
        metavar="TOKEN",
        help="bearer token for the upstream servers (default: $AUTOSYNC_UPSTREAM_TOKEN)",
    )
    upstream.add_argument(
        "--upstream-cafile",
        metavar="FILE",
        help="PEM certificate(s) to trust for wss:// upstreams (a private CA, self-signed)",
    )
    auth = serve.add_argument_group(
        "authentication", "require an OIDC ID token from every peer (needs TLS)"
    )
    auth.add_argument(
        "--auth",
        action="store_true",
        help="check ID tokens (issuer and client id from --oidc-issuer/--oidc-client-id, "
        "else $OIDC_ISSUER/$OIDC_CLIENT_ID, issuer defaulting to Google)",
    )
    auth.add_argument("--oidc-issuer", help="the expected token issuer")
    auth.add_argument("--oidc-client-id", help="the expected audience (your OAuth client id)")
    auth.add_argument(
        "--allow-email", action="append", default=[], help="allowed email (repeatable)"
    )
    auth.add_argument(
        "--allow-domain", action="append", default=[], help="allowed email domain (repeatable)"
    )
    auth.add_argument(
        "--insecure-auth-on-loopback",
        action="store_true",
        help="TESTING ONLY: allow --auth without TLS on a loopback host (tokens in clear text)",
    )


_SIZE_RE = re.compile(r"\s*(\d+)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def byte_size(text: str) -> int:
    """A size in bytes from ``100``, ``64KiB``, ``100MiB``, ``1G`` (KiB = 1024, KB = 1000).

    >>> byte_size("100MiB"), byte_size("64k"), byte_size("512")
    (104857600, 64000, 512)
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1048576, 64KiB, 100MiB)")
    number, unit = match.group(1), (match.group(2) or "").lower()
    scale = 1 << 10 * ("kmg".index(unit[0]) + 1) if "i" in unit else _SIZE_UNITS[unit[:1]]
    return int(number) * scale


def server_from_arguments(args: argparse.Namespace) -> tuple[SyncServer, list[str]]:
    """Make (not start) the server that ``args`` of :func:`add_serve_arguments` describe.

    Returns it with notes for the user (where a self-signed certificate went).
    """
    notes = []
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
        notes.append(f"self-signed certificate: {cert}")
    data_dir: str | None = None if args.ephemeral else args.data_dir
    store: Store | None = None
    if getattr(args, "store", None):
        if args.ephemeral:
            raise AutosyncError("--store and --ephemeral exclude each other")
        if is_postgres_url(args.store):
            shared = bool(getattr(args, "store_shared", False))
            data_dir, store = None, PostgresStore(args.store, shared=shared)
        else:
            data_dir = args.store
    if getattr(args, "store_shared", False) and not isinstance(store, PostgresStore):
        raise AutosyncError("--store-shared needs a postgresql:// --store")
    auth = None
    if args.auth:
        auth = AuthConfig(
            args.oidc_client_id,
            args.oidc_issuer,
            allowed_emails=args.allow_email,
            allowed_domains=args.allow_domain,
        )
    upstreams: list[str] = list(getattr(args, "upstream", None) or [])
    token = getattr(args, "upstream_token", None) or os.environ.get("AUTOSYNC_UPSTREAM_TOKEN")
    cafile = getattr(args, "upstream_cafile", None)
    if (token or cafile) and not upstreams:
        raise AutosyncError("--upstream-token and --upstream-cafile go with --upstream URL")
    if cafile and not any(url.startswith("wss://") for url in upstreams):
        raise AutosyncError("--upstream-cafile is for wss:// upstreams")
    server = SyncServer(
        auth=auth,
        insecure_auth_on_loopback=args.insecure_auth_on_loopback,
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        store=store,
        ephemeral=args.ephemeral,
        share=args.share,
        create_on_request=args.create_on_request,
        ssl=ssl_context,
        max_message_size=args.max_message_size,
        max_connections=args.max_connections,
        max_queued_bytes=args.max_queued_bytes,
        max_send_queue=args.max_send_queue,
        sync_interval=args.sync_interval,
        idle_timeout=args.idle_timeout or None,
        max_loaded_documents=args.max_loaded_documents or None,
        origins=args.origin,
        path=args.path,
        upstreams=upstreams,
        upstream_token=token if upstreams else None,
        upstream_ssl=client_ssl_context(cafile) if cafile else None,
    )
    return server, notes
