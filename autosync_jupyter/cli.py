"""The ``autosync`` command: run a sync server, manage its documents, fetch and watch.

autosync serve [--host 127.0.0.1] [--port 3030] [--data-dir .automerge]
autosync create [--data-dir .automerge] ['{"title": "hello"}']
autosync ls [--data-dir .automerge | --store URL] [--json]
autosync fsck [--data-dir .automerge | --store URL] [--repair] [--json]
autosync migrate SRC DST     (each a data directory or a postgresql:// URL)
autosync fetch URL DOC [--json] [--token T] [--cafile F] [--timeout S] [-v]
autosync watch URL DOC [--token T] [--cafile F] [--timeout S] [--count N] [--no-content] [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import signal
import ssl as ssl_module
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .auth.tls import client_ssl_context
from .crdt.values import new_document, to_py
from .errors import AutosyncError, StorageError
from .ids import document_url, encode_heads, generate_document_id
from .runtime.options import add_serve_arguments, server_from_arguments
from .storage import FileStore, PostgresStore, Store, StoreLocked
from .storage.postgres import is_postgres_url, redacted_url
from .storage.salvage import load_document
from .version import __version__
from .wording import counted

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
    add_serve_arguments(serve, default_port=3030)
    serve.add_argument("-v", "--verbose", action="count", default=0, help="more logging")

    create = sub.add_parser(
        "create",
        help="create a document in a data directory, or on a running server (--url)",
        description="Create a document and print its automerge: URL. Without --url it is "
        "written to a data directory no server is using; with --url it is created over "
        "the network on a running sync server (ours or any automerge-repo server).",
    )
    create.add_argument(
        "initial", nargs="?", help='initial content as a JSON object, e.g. \'{"title": "hi"}\''
    )
    create.add_argument(
        "--data-dir", default=".automerge", help="document store directory (default: %(default)s)"
    )
    _store_argument(create)
    _remote_arguments(create)

    ls = sub.add_parser(
        "ls",
        help="list the documents of a data directory, or those a running server shares (--url)",
    )
    ls.add_argument(
        "--data-dir", default=".automerge", help="document store directory (default: %(default)s)"
    )
    _store_argument(ls)
    ls.add_argument("--json", action="store_true", help="print the documents' content as JSON")
    _remote_arguments(ls)
    ls.add_argument(
        "--quiet-time",
        type=float,
        default=1.0,
        help="with --url: seconds without a new document after which the list is complete "
        "(default: %(default)s)",
    )

    fsck = sub.add_parser(
        "fsck",
        help="check every document of a data directory; exit status 1 if any is damaged",
        description="Read every document of a data directory as the server would and report, "
        "per document, damaged bytes, changes that wait for a lost one, and whether it loads. "
        "Without --repair nothing is changed (it can run beside a server). Exit status: 0 all "
        "sound, 1 something damaged, 2 usage errors.",
    )
    fsck.add_argument("--data-dir", default=".automerge", help="document store directory")
    _store_argument(fsck)
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="set damaged bytes aside as the server does: under DIR/.corrupt/, or in the "
        "autosync_corrupt table of a database (needs the store to itself: stop the server "
        "first)",
    )
    fsck.add_argument("--json", action="store_true", help="print one JSON report")

    migrate = sub.add_parser(
        "migrate",
        help="copy every document from one store to another (directory or database)",
        description="Copy every document of SRC into DST, each a data directory or a "
        "postgresql:// URL, in either direction. Each copied document is read back from DST "
        "and must load to the same heads. Running it again copies nothing new; a document "
        "DST already holds in another version is merged. SRC is only read (it may be in use); "
        "DST needs its store to itself (stop its server first). Exit status 1 if any "
        "document could not be copied.",
    )
    migrate.add_argument("source", metavar="SRC", help="data directory or postgresql:// URL")
    migrate.add_argument("target", metavar="DST", help="data directory or postgresql:// URL")

    fetch = sub.add_parser("fetch", help="fetch a document from a sync server and print it")
    _client_arguments(fetch)
    fetch.add_argument(
        "--json",
        action="store_true",
        help="print JSON (bytes as base64, timestamps as ISO 8601) instead of text",
    )
    _allow_empty_argument(fetch)

    watch = sub.add_parser(
        "watch", help="print a document, then each change as it arrives, until Ctrl-C"
    )
    _client_arguments(watch)
    watch.add_argument(
        "--count", type=int, metavar="N", help="stop after N changes (default: never)"
    )
    watch.add_argument(
        "--no-content",
        action="store_true",
        help="print heads and changed paths only, not the whole document at each change",
    )
    _allow_empty_argument(watch)
    return parser


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the store instead of --data-dir: a postgresql://user@host/database URL "
        "(needs the postgres extra) or a directory",
    )


def _allow_empty_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept an empty document when the server answers with one (a server that "
        "creates documents on request, such as R's autosync) instead of failing",
    )


def _remote_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and how to reach it, for commands that can also work on a data directory."""
    parser.add_argument(
        "--url", help="a running sync server (ws:// or wss://) instead of a data directory"
    )
    _connection_arguments(parser)


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="sync server URL (ws:// or wss://)")
    parser.add_argument("doc", help="document id or automerge: URL")
    _connection_arguments(parser)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=os.environ.get("AUTOSYNC_TOKEN"),
        help="bearer token for the server (default: $AUTOSYNC_TOKEN; the "
        "environment keeps it out of the process list)",
    )
    parser.add_argument("--cafile", help="PEM certificate(s) to trust for wss:// (self-signed)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait (default: %(default)s)"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log each step and the bytes exchanged"
    )


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
        if args.command == "fsck":
            return asyncio.run(_fsck(args))
        if args.command == "migrate":
            return asyncio.run(_migrate(args))
        if args.command == "fetch":
            return asyncio.run(_fetch(args))
        if args.command == "watch":
            return asyncio.run(_watch(args))
        return asyncio.run(_ls(args))
    except (AutosyncError, ValueError, OSError) as exc:
        print(f"autosync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _serve(args: argparse.Namespace) -> int:
    server, notes = server_from_arguments(args)
    for note in notes:
        print(note, flush=True)
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
    try:
        initial: Any = json.loads(args.initial) if args.initial else None
    except json.JSONDecodeError as exc:
        raise AutosyncError(
            f"the initial content {args.initial!r} is not JSON ({exc}); "
            """write a JSON object, quoted for the shell: '{"title": "hi"}'"""
        ) from None
    if initial is not None and not isinstance(initial, dict):
        raise AutosyncError('the initial content must be a JSON object, e.g. \'{"title": "hi"}\'')
    if args.url:
        from .runtime.connection import connect  # the server commands do not pay for the client

        async with connect(
            args.url, token=args.token, ssl=_client_ssl(args), timeout=args.timeout
        ) as conn:
            handle = await conn.create(initial)
            print(handle.url)
        return 0
    store = _local_store(args.store or args.data_dir, read_only=False)
    try:
        await store.open()  # refuses a store a running server holds
    except StoreLocked as exc:
        raise AutosyncError(
            f"{exc}; to add a document to that server: autosync create --url ws://HOST:PORT"
        ) from None
    try:
        doc_id = generate_document_id()
        store.append(doc_id, new_document(initial).save())
        await store.flush()
    finally:
        await store.close()
    print(document_url(doc_id))
    return 0


async def _ls(args: argparse.Namespace) -> int:
    if args.url:
        return await _ls_remote(args)
    where = args.store or args.data_dir
    store = _local_store(where, read_only=True)  # works beside a running server
    await store.open()
    try:
        ids = sorted(store.document_ids())
        if args.json:
            out: dict[str, Any] = {}
            for doc_id in ids:
                loaded = load_document(await store.load(doc_id) or b"")
                out[doc_id] = to_py(loaded.document) if loaded.document is not None else None
            print(json.dumps(out, indent=2, default=str))
        else:
            for doc_id in ids:
                print(document_url(doc_id))
            if not ids:
                print(f"no documents in {store_label(where)}", file=sys.stderr)
    finally:
        await store.close()
    return 0


def _local_store(where: str, *, read_only: bool) -> Store:
    """The store a ``--data-dir``/``--store`` value names: a database URL or a directory."""
    if is_postgres_url(where):
        return PostgresStore(where, read_only=read_only)
    if read_only and not Path(where).is_dir():
        raise AutosyncError(f"no data directory at {where}")
    return FileStore(where, read_only=read_only)


def store_label(where: str) -> str:
    """``where`` for messages: a database URL without its password."""
    return redacted_url(where) if is_postgres_url(where) else where


async def _migrate(args: argparse.Namespace) -> int:
    if os.path.abspath(args.source) == os.path.abspath(args.target):
        raise AutosyncError("SRC and DST are the same store")
    source = _local_store(args.source, read_only=True)
    target = _local_store(args.target, read_only=False)
    await source.open()
    try:
        try:
            await target.open()
        except StoreLocked as exc:
            raise AutosyncError(f"{exc}; stop the server that uses it first") from None
        try:
            results = [
                await _migrate_one(source, target, doc_id)
                for doc_id in sorted(source.document_ids())
            ]
            await target.flush()
        finally:
            await target.close()
    finally:
        await source.close()
    for doc_id, outcome in results:
        word, _, why = outcome.partition(": ")
        print(f"{word:<8} {doc_id}  {why}".rstrip())
    failed = [doc_id for doc_id, outcome in results if outcome.startswith("FAILED")]
    counts = {name: [o for _, o in results].count(name) for name in ("copied", "same", "merged")}
    print(
        f"{counted(len(results), 'document')}: {counts['copied']} copied, {counts['same']} "
        f"already there, {counts['merged']} merged, {len(failed)} failed "
        f"({store_label(args.source)} -> {store_label(args.target)})"
    )
    return 1 if failed else 0


async def _migrate_one(source: Store, target: Store, doc_id: Any) -> tuple[str, str]:
    """Copy one document; return its id and what happened (``FAILED: why`` on failure)."""
    try:
        data = await source.load(doc_id)
    except StorageError as exc:
        return doc_id, f"FAILED: cannot read it: {exc}"
    loaded = load_document(data or b"")
    if loaded.document is None:
        return doc_id, "FAILED: its stored bytes do not load"
    document, waiting = loaded.document, dict(loaded.waiting)
    outcome = "copied"
    if doc_id in target:
        there = load_document(await target.load(doc_id) or b"")
        if there.document is not None:
            same = sorted(there.document.get_heads()) == sorted(document.get_heads())
            if same and there.waiting.keys() >= waiting.keys():
                return doc_id, "same"
            there.document.merge(document)
            document = there.document
            waiting = {**there.waiting, **waiting}
            outcome = "merged"
    heads = document.get_heads()
    expected = (sorted(heads), len(waiting))
    # Waiting changes travel too: a peer may yet bring what they lack.
    snapshot = document.save() + b"".join(waiting.values())

    def verify(written: bytes) -> bool:
        back = load_document(written)
        return (
            back.document is not None
            and (
                sorted(back.document.get_heads()),
                len(back.waiting),
            )
            == expected
        )

    try:
        await target.compact(doc_id, snapshot, heads, verify=verify)
        if not verify(await target.load(doc_id) or b""):
            return doc_id, "FAILED: it does not read back from the target with the same heads"
    except StorageError as exc:
        return doc_id, f"FAILED: {exc}"
    return doc_id, outcome


# The report of a document whose files cannot be read at all.
_UNREADABLE: dict[str, Any] = {
    "loads": False,
    "changes": 0,
    "damaged_bytes": 0,
    "damaged_files": 0,
    "waiting_changes": 0,
    "missing_changes": [],
    "refused_chunks": 0,
    "set_aside": [],
    "sound": False,
}


async def _fsck(args: argparse.Namespace) -> int:
    store = _local_store(args.store or args.data_dir, read_only=not args.repair)
    await store.open()
    reports = []
    try:
        for doc_id in sorted(store.document_ids()):
            try:
                data = await store.load(doc_id)
            except StorageError as exc:
                reports.append({"id": doc_id, **_UNREADABLE, "error": str(exc)})
                continue
            damage = store.damage(doc_id)
            loaded = load_document(data or b"")
            report = {
                "id": doc_id,
                "error": None,
                "loads": loaded.document is not None,
                "changes": len(loaded.document.get_changes([])) if loaded.document else 0,
                "damaged_bytes": damage.damaged_bytes,
                "damaged_files": damage.files,
                "waiting_changes": len(loaded.waiting),
                "missing_changes": sorted(encode_heads(loaded.missing)),
                "refused_chunks": loaded.unreadable,
                "set_aside": [str(path) for path in damage.set_aside],
            }
            report["sound"] = (
                report["loads"]
                and not damage.damaged_bytes
                and not loaded.waiting
                and not loaded.unreadable
            )
            reports.append(report)
    finally:
        await store.close()
    damaged = [r for r in reports if not r["sound"]]
    if args.json:
        print(json.dumps({"documents": reports, "damaged": len(damaged)}, indent=2))
    else:
        for r in reports:
            print(_fsck_line(r, "row" if isinstance(store, PostgresStore) else "file"))
        what = "repaired (damaged bytes set aside)" if args.repair and damaged else "damaged"
        print(f"{counted(len(reports), 'document')}, {len(damaged)} {what}")
    return 1 if damaged else 0


def _fsck_line(report: dict[str, Any], unit: str = "file") -> str:
    if report["sound"]:
        return f"ok       {report['id']}  {report['changes']} changes"
    if report["error"]:
        return f"DAMAGED  {report['id']}  {report['error']}"
    parts = []
    if report["damaged_bytes"]:
        files = report["damaged_files"]
        parts.append(
            f"{counted(report['damaged_bytes'], 'damaged byte')} in {counted(files, unit)}"
        )
    if report["waiting_changes"]:
        missing = report["missing_changes"]
        parts.append(
            f"{report['waiting_changes']} changes wait for {len(missing)} lost "
            f"({', '.join(h[:12] for h in missing[:3])})"
        )
    if report["refused_chunks"]:
        parts.append(f"{report['refused_chunks']} chunks automerge refuses")
    if not report["loads"]:
        parts.append("nothing loads")
    else:
        parts.append(f"{report['changes']} changes load")
    if report["set_aside"]:
        parts.append("set aside: " + ", ".join(report["set_aside"]))
    return f"DAMAGED  {report['id']}  " + "; ".join(parts)


# -- client commands --------------------------------------------------------------------


async def _ls_remote(args: argparse.Namespace) -> int:
    """The documents a running server offers a peer that joins (announced ones)."""
    from .runtime.connection import connect

    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {}
    async with connect(
        args.url, token=args.token, ssl=_client_ssl(args), timeout=args.timeout
    ) as conn:
        await conn.wait_connected()
        deadline = loop.time() + args.timeout
        seen, last_news = 0, loop.time()
        while loop.time() < min(deadline, last_news + args.quiet_time):
            await asyncio.sleep(0.05)
            if len(conn.offered) != seen:
                seen, last_news = len(conn.offered), loop.time()
        ids = conn.offered
        if args.json:
            for doc_id in ids:
                out[doc_id] = (await conn.open(doc_id)).doc.to_py()
    if args.json:
        print(_to_json(out, indent=2))
    else:
        for doc_id in ids:
            print(document_url(doc_id))
    if not ids:
        print(
            f"{args.url} shared no documents (a server shares them unasked only with "
            "--share announce; ask for one by id with autosync fetch)",
            file=sys.stderr,
        )
    return 0


def _client_ssl(args: argparse.Namespace) -> ssl_module.SSLContext | None:
    return client_ssl_context(args.cafile) if args.cafile else None


async def _fetch(args: argparse.Namespace) -> int:
    from .runtime.client import fetch  # the server commands do not pay for the client's imports

    doc = await fetch(
        args.url,
        args.doc,
        token=args.token,
        ssl=_client_ssl(args),
        timeout=args.timeout,
        verbose=args.verbose > 0,
        allow_empty=args.allow_empty,
    )
    content = doc.to_py()
    if args.json:
        print(_to_json(content, indent=2))
    else:
        print("\n".join(_text_lines(content)))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    from .runtime.connection import connect

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Signal handlers can only be set in the main thread (and not on Windows).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with connect(
        args.url,
        token=args.token,
        ssl=_client_ssl(args),
        timeout=args.timeout,
        verbose=args.verbose > 0,
    ) as conn:
        handle = await conn.open(args.doc, allow_empty=args.allow_empty)
        stream = handle.changes()
        previous = handle.doc.to_py()
        _emit({"event": "snapshot", "heads": _heads(handle.doc.core), "doc": previous})
        seen = 0
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while args.count is None or seen < args.count:
                next_event = asyncio.ensure_future(stream.__anext__())
                done, _ = await asyncio.wait(
                    {next_event, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_event not in done:
                    next_event.cancel()
                    break
                event = next_event.result()
                current = handle.doc.to_py()
                line: dict[str, Any] = {
                    "event": "change",
                    "origin": event.origin,
                    "heads": _heads(handle.doc.core),
                    "changed": _changed_paths(previous, current),
                }
                if not args.no_content:
                    line["doc"] = current
                _emit(line)
                previous = current
                seen += 1
        except StopAsyncIteration:
            pass
        finally:
            stopping.cancel()
        await handle.close(flush=False)
    return 0


def _heads(core: Any) -> list[str]:
    return sorted(encode_heads(core.get_heads()))


def _emit(line: dict[str, Any]) -> None:
    print(_to_json(line), flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


def _to_json(value: Any, indent: int | None = None) -> str:
    """JSON with bytes as base64 and timestamps as ISO 8601 text."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default)


_MAX_CHANGED_PATHS = 50


def _changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """Slash-separated paths whose value differs between two to_py() trees (at most 50)."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= _MAX_CHANGED_PATHS:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys()):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{where}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}/{index}")
        elif a != b or type(a) is not type(b):
            out.append(where or "/")

    walk(old, new, path)
    return out


_MISSING = object()
_PLAIN = re.compile(r"[^\s\"'#:{}\[\],&*!|>%@`-][^\n\"]*")
_KEYWORDS = {"true", "false", "null"}


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return f"<{len(data)} bytes> {base64.b64encode(data).decode('ascii')}"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        plain = (
            _PLAIN.fullmatch(value)
            and value == value.strip()
            and value not in _KEYWORDS
            and not _looks_numeric(value)
        )
        return value if plain else json.dumps(value, ensure_ascii=False)
    return repr(value) if not isinstance(value, (int, float)) else json.dumps(value)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text_lines(value: Any, indent: int = 0) -> list[str]:
    """A document as indented text: ``key: value``, ``- item`` for lists."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        lines = []
        for key, item in value.items():
            label = _scalar_text(str(key))
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{label}:")
                lines.extend(_text_lines(item, indent + 1))
            else:
                lines.append(f"{pad}{label}: {_inline(item)}")
        return lines
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _text_lines(item, indent + 1)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_inline(item)}")
        return lines
    return [pad + _inline(value)]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar_text(value)
