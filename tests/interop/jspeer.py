"""Drive an official JavaScript automerge-repo client (``js/peer.mjs``) from asyncio.

One :class:`JSPeer` is one Node process running a stock ``Repo`` with the
``BrowserWebSocketClientAdapter`` pointed at a sync server. Requests and replies
are JSON lines over stdin/stdout; see the header of ``js/peer.mjs``.

    async with JSPeer.start(server.url) as alice, JSPeer.start(server.url) as bob:
        doc = await alice.create({"title": "hi"})
        found = await bob.find(doc["documentId"])
        assert found["state"] == "ready"
        await alice.change(doc["documentId"], [Op.set(["title"], "hello")])
        await bob.wait_for(doc["documentId"], path=["title"], equals="hello")

Every failed request raises :class:`JSPeerError` with the tail of Node's stderr,
so a failing test says what the JavaScript side saw.

``JSPeer.start(url, version="1.2.1")`` runs another automerge-repo release than
the default 2.5.6 (:data:`JS_REPO_VERSIONS`, installed side by side under npm
aliases, see ``js/versions.mjs``); :func:`js_check_ids` asks a release's own
validators about document ids.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import shutil
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_JS_REPO_VERSION",
    "JS_DIR",
    "JS_REPO_VERSIONS",
    "JSPeer",
    "JSPeerError",
    "Op",
    "js_check_ids",
    "js_value",
    "missing_js_install",
    "missing_js_release",
    "node_executable",
    "peer_node_flags",
    "require_js_install",
    "require_js_release",
]

#: The npm project holding peer.mjs, sync-server.mjs and their node_modules.
JS_DIR = Path(__file__).resolve().parent / "js"

_PEER_SCRIPT = JS_DIR / "peer.mjs"
INSTALL_HINT = "npm ci --prefix tests/interop/js"

#: The automerge-repo release peers and the JS sync server run unless told otherwise.
DEFAULT_JS_REPO_VERSION = "2.5.6"
# Every release installed side by side in js/ and the package (an npm alias
# for all but the default) holding it; js/versions.mjs has the same table.
_RELEASE_PACKAGES = {
    "1.2.1": "repo121",
    "2.0.8": "repo208",
    "2.5.6": "@automerge/automerge-repo",
    "2.6.0-alpha.3": "repo26",
}
#: The automerge-repo releases the interop tests can run, oldest first.
JS_REPO_VERSIONS = tuple(_RELEASE_PACKAGES)
_VALIDATE_SCRIPT = JS_DIR / "validate-ids.mjs"


def missing_js_install() -> str | None:
    """Why the JS side cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return f"node is not on PATH (install Node.js >= 20, then {INSTALL_HINT})"
    if not (JS_DIR / "node_modules").is_dir():
        return f"tests/interop/js/node_modules is missing (run: {INSTALL_HINT})"
    return None


def missing_js_release(version: str) -> str | None:
    """Why automerge-repo ``version`` cannot run here, or None when it can."""
    missing = missing_js_install()
    if missing is not None:
        return missing
    package = _RELEASE_PACKAGES.get(version)
    if package is None:
        return f"automerge-repo {version} is not one of {', '.join(JS_REPO_VERSIONS)}"
    if not (JS_DIR / "node_modules" / package / "package.json").is_file():
        return f"automerge-repo {version} ({package}) is not installed (run: {INSTALL_HINT})"
    return None


def require_js_release(version: str) -> None:
    """Skip (locally) or fail (in CI) when automerge-repo ``version`` is not installed."""
    from tests.ci import skip_or_fail

    skip_or_fail(missing_js_release(version))


def require_js_install() -> None:
    """Skip the calling test (locally) or fail it (in CI) when the JS side cannot run.

    Imports pytest only when called: the benchmarks import this module too.
    """
    from tests.ci import skip_or_fail

    skip_or_fail(missing_js_install())


_STDERR_TAIL = 300
# Replies can carry whole documents (export), far above asyncio's 64 KiB default.
_LINE_LIMIT = 256 * 1024 * 1024

DocPath = str | int | Sequence[str | int]


def node_executable() -> str:
    """Return the path of ``node``, or raise a RuntimeError saying how to get it."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; the interop tests need Node.js >= 20")
    return node


@functools.cache
def node_major_version() -> int:
    """The major version of ``node`` (20 for v20.20.2)."""
    out = subprocess.run(
        [node_executable(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip().lstrip("v").split(".")[0])


def peer_node_flags(version: str | None) -> list[str]:
    """Node options a client peer of ``version`` needs on this Node.

    The 2.6 client adapter uses the global ``WebSocket``, which Node has
    unflagged from 22 (2.6 declares node >= 22.13); Node 20 has the same
    implementation (undici's) behind ``--experimental-websocket``.
    """
    if version is not None and version.startswith("2.6") and node_major_version() < 22:
        return ["--experimental-websocket"]
    return []


class JSPeerError(RuntimeError):
    """A request to the JavaScript peer failed, or the peer process died."""


async def js_check_ids(
    ids: Sequence[str], *, version: str, generate: int = 0, timeout: float = 30.0
) -> dict[str, Any]:
    """Check ``ids`` with automerge-repo ``version``'s own validators (``js/validate-ids.mjs``).

    Returns ``{"version", "releases", "results", "generated"}``: per id
    ``{"id", "url", "documentId", "interpret"}`` (isValidAutomergeUrl,
    isValidDocumentId, interpretAsDocumentId, which ``repo.find`` runs first),
    and ``generate`` ids made by that release's ``generateAutomergeUrl``.
    """
    proc = await asyncio.create_subprocess_exec(
        node_executable(),
        str(_VALIDATE_SCRIPT),
        "--repo-version",
        version,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
    )
    request = json.dumps({"ids": list(ids), "generate": generate}).encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(request), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise JSPeerError(f"validate-ids.mjs ({version}) did not answer in {timeout} s") from None
    if proc.returncode != 0:
        raise JSPeerError(
            f"validate-ids.mjs ({version}) exited with status {proc.returncode}:\n"
            + err.decode("utf-8", "replace")[-4000:]
        )
    result: dict[str, Any] = json.loads(out)
    return result


def js_value(value: Any) -> Any:
    """Convert a Python value to the JSON shape peer.mjs turns into Automerge values.

    ``bytes`` become ``{"$bytes": base64}`` and aware ``datetime``s
    ``{"$date": ms}``; dicts, lists and scalars pass through.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$date": round(value.timestamp() * 1000)}
    if isinstance(value, Mapping):
        return {str(k): js_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [js_value(v) for v in value]
    return value


def _path(path: DocPath) -> list[str | int]:
    if isinstance(path, str | int):
        return [path]
    return list(path)


class Op:
    """Builders for the operations accepted by :meth:`JSPeer.change`."""

    @staticmethod
    def set(path: DocPath, value: Any) -> dict[str, Any]:
        """Set a map key or list index (strings become collaborative text)."""
        return {"op": "set", "path": _path(path), "value": js_value(value)}

    @staticmethod
    def delete(path: DocPath) -> dict[str, Any]:
        """Delete a map key or list element."""
        return {"op": "delete", "path": _path(path)}

    @staticmethod
    def splice(path: DocPath, index: int, delete: int = 0, insert: str = "") -> dict[str, Any]:
        """Splice the text at ``path``: delete ``delete`` characters at ``index``, insert."""
        return {
            "op": "splice",
            "path": _path(path),
            "index": index,
            "delete": delete,
            "insert": insert,
        }

    @staticmethod
    def counter(path: DocPath, value: int = 0) -> dict[str, Any]:
        """Create an Automerge ``Counter(value)`` at ``path``."""
        return {"op": "counter", "path": _path(path), "value": value}

    @staticmethod
    def increment(path: DocPath, by: int = 1) -> dict[str, Any]:
        """Increment the counter at ``path``."""
        return {"op": "increment", "path": _path(path), "by": by}

    @staticmethod
    def mark(
        path: DocPath, start: int, end: int, name: str, value: Any, expand: str = "after"
    ) -> dict[str, Any]:
        """Mark characters ``start``..``end`` of the text at ``path`` (rich text)."""
        return {
            "op": "mark",
            "path": _path(path),
            "start": start,
            "end": end,
            "name": name,
            "value": js_value(value),
            "expand": expand,
        }

    @staticmethod
    def unmark(
        path: DocPath, start: int, end: int, name: str, expand: str = "after"
    ) -> dict[str, Any]:
        """Remove mark ``name`` from characters ``start``..``end`` of the text at ``path``."""
        return {
            "op": "unmark",
            "path": _path(path),
            "start": start,
            "end": end,
            "name": name,
            "expand": expand,
        }

    @staticmethod
    def push(path: DocPath, *values: Any) -> dict[str, Any]:
        """Append ``values`` to the list at ``path``."""
        return {"op": "push", "path": _path(path), "values": [js_value(v) for v in values]}


class JSPeer:
    """A running ``peer.mjs`` process; create with :meth:`JSPeer.start`."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: list[str]) -> None:
        self._proc = proc
        self._argv = argv
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stderr: deque[str] = deque(maxlen=_STDERR_TAIL)
        self._events: list[dict[str, Any]] = []
        self._event_added = asyncio.Condition()
        self._closed = False
        self.peer_id: str = ""
        self.storage_id: str | None = None
        #: The automerge-repo release the peer runs (e.g. ``"2.5.6"``).
        self.version: str = ""
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name="jspeer-stdout"),
            asyncio.create_task(self._read_stderr(), name="jspeer-stderr"),
        ]

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        url: str,
        storage: str | os.PathLike[str] | None = None,
        peer_id: str | None = None,
        *,
        share: bool = True,
        trace: bool = False,
        retry_interval_ms: int | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        wait_connected: bool = True,
        timeout: float = 15.0,
        debug: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[JSPeer]:
        """Start a JS client peer connected to ``url`` and stop it on exit.

        Args:
            url: ``ws://`` or ``wss://`` URL of the sync server.
            storage: directory for a ``NodeFSStorageAdapter``; without it the
                peer is ephemeral (``isEphemeral: true``, no storage id).
            peer_id: fixed peer id (default: the library's random ``peer-...``).
            share: the peer's announce policy (``sharePolicy``); True as in browsers.
            trace: emit a ``wire`` event for every protocol message.
            retry_interval_ms: the adapter's reconnect interval (library default 5000).
            ca_file: extra CA certificates (PEM) to trust for ``wss://``.
            wait_connected: wait until the server answered ``join`` with ``peer``.
            timeout: seconds to wait for the process and the connection.
            debug: value for the ``DEBUG`` env var (e.g. ``"automerge-repo:*"``).
            version: the automerge-repo release to run (see :data:`JS_REPO_VERSIONS`;
                default 2.5.6); the peer refuses to start if another one is installed.
        """
        argv = [node_executable(), *peer_node_flags(version), str(_PEER_SCRIPT), "--url", url]
        if storage is not None:
            argv += ["--storage", os.fspath(storage)]
        if peer_id is not None:
            argv += ["--peer-id", peer_id]
        argv += ["--share", "true" if share else "false"]
        if retry_interval_ms is not None:
            argv += ["--retry-interval", str(retry_interval_ms)]
        if trace:
            argv.append("--trace")
        if version is not None:
            argv += ["--repo-version", version]
        env = dict(os.environ)
        if ca_file is not None:
            env["NODE_EXTRA_CA_CERTS"] = os.fspath(ca_file)
        if debug is not None:
            env["DEBUG"] = debug
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=JS_DIR,
            env=env,
            limit=_LINE_LIMIT,
        )
        peer = cls(proc, argv)
        try:
            ready = await peer.wait_event("ready", timeout=timeout)
            peer.peer_id = ready["peerId"]
            peer.storage_id = ready.get("storageId")
            peer.version = ready["repoVersion"]
            if wait_connected:
                await peer.wait_event("peer", timeout=timeout)
            yield peer
        finally:
            await peer._shutdown()

    async def _shutdown(self) -> None:
        if self._closed:
            return
        if self._proc.returncode is None:
            # Ask for a clean close (flushes storage), then make sure it is gone.
            with contextlib.suppress(Exception):
                await self.request("close", timeout=5.0)
            try:
                await asyncio.wait_for(self._proc.wait(), 5.0)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._closed = True
        if self._proc.stdin is not None:
            self._proc.stdin.close()
            with contextlib.suppress(Exception):
                await self._proc.stdin.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing ------------------------------------------------------------

    @property
    def pid(self) -> int:
        """Process id of the Node process."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status of the Node process, None while it runs."""
        return self._proc.returncode

    def stderr_tail(self) -> str:
        """The last lines Node wrote to stderr (and any stray stdout)."""
        return "\n".join(self._stderr)

    def _failure(self, message: str) -> JSPeerError:
        tail = self.stderr_tail() or "(empty)"
        return JSPeerError(f"{message}\n--- node peer stderr (last lines) ---\n{tail}")

    async def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                self._stderr.append(f"stdout: {line}")
                continue
            if not isinstance(msg, dict):
                self._stderr.append(f"stdout: {line}")
            elif "event" in msg:
                async with self._event_added:
                    self._events.append(msg)
                    self._event_added.notify_all()
            elif "id" in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        # EOF: the process is gone; fail whoever still waits.
        await self._proc.wait()
        await asyncio.sleep(0)  # let the stderr reader catch up
        error = self._failure(f"node peer exited with status {self._proc.returncode}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        async with self._event_added:
            self._event_added.notify_all()

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        async for raw in self._proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    async def request(self, cmd: str, *, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Send one command and return its reply; raise JSPeerError if it failed."""
        if self._proc.returncode is not None or self._proc.stdin is None:
            raise self._failure(f"{cmd}: node peer is not running")
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        line = json.dumps({"id": ident, "cmd": cmd, **args}) + "\n"
        try:
            self._proc.stdin.write(line.encode())
            await self._proc.stdin.drain()
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise self._failure(f"{cmd}: no reply from the node peer within {timeout} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise self._failure(f"{cmd}: node peer closed its stdin") from None
        finally:
            self._pending.pop(ident, None)
        if not reply.get("ok"):
            raise self._failure(f"{cmd} failed in the JS peer: {reply.get('error')}")
        return reply

    # -- events --------------------------------------------------------------

    @property
    def event_count(self) -> int:
        """Number of events seen so far; pass it as ``since`` to wait for newer ones."""
        return len(self._events)

    def events_of(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        """All events of one kind (``peer``, ``change``, ``ephemeral``, ``wire``, ...)."""
        return [e for e in self._events[since:] if e.get("event") == kind]

    async def wait_event(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        since: int = 0,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Return the first event of ``kind`` (matching ``where``) at index >= ``since``."""

        def find() -> dict[str, Any] | None:
            for event in self._events[since:]:
                if event.get("event") == kind and (where is None or where(event)):
                    return event
            return None

        async def wait() -> dict[str, Any]:
            async with self._event_added:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    if self._proc.returncode is not None and self._tasks[0].done():
                        raise self._failure(f"node peer exited while waiting for {kind!r}")
                    await self._event_added.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise self._failure(f"no {kind!r} event from the node peer in {timeout} s") from None

    # -- commands ------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """Peer id, storage id and connected peers."""
        return await self.request("info")

    async def create(self, value: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``repo.create(value)``; returns documentId, url, heads, doc."""
        return await self.request("create", value=js_value(dict(value or {})))

    async def find(self, doc_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """``repo.find(id)``: state is ``ready``, ``unavailable`` or ``timeout``.

        The reply also has ``elapsed_ms``, ``doc`` and ``heads`` (None unless ready).
        """
        return await self.request(
            "find", documentId=doc_id, timeout_ms=round(timeout * 1000), timeout=timeout + 15
        )

    async def snapshot(self, doc_id: str) -> dict[str, Any]:
        """State, document, heads (bs58 and hex) of a known document."""
        return await self.request("doc", documentId=doc_id)

    async def doc(self, doc_id: str) -> Any:
        """The document as JSON (None unless the handle is ready)."""
        return (await self.snapshot(doc_id))["doc"]

    async def change(
        self, doc_id: str, ops: Sequence[Mapping[str, Any]], *, message: str | None = None
    ) -> list[str]:
        """Apply ``ops`` (see :class:`Op`) in one change; returns the new heads."""
        extra: dict[str, Any] = {"message": message} if message is not None else {}
        reply = await self.request("change", documentId=doc_id, ops=list(ops), **extra)
        heads: list[str] = reply["heads"]
        return heads

    async def history(self, doc_id: str) -> list[dict[str, Any]]:
        """Every change as automerge decodes it: hash, actor (hex), seq, time (seconds),
        message, deps, startOp, ops; in the handle's topological order."""
        reply = await self.request("history", documentId=doc_id)
        changes: list[dict[str, Any]] = reply["changes"]
        return changes

    async def heads(self, doc_id: str) -> list[str]:
        """Current heads (bs58check, as automerge-repo URLs use them)."""
        reply = await self.request("heads", documentId=doc_id)
        heads: list[str] = reply["heads"]
        return heads

    async def wait_for(
        self,
        doc_id: str,
        *,
        path: DocPath | None = None,
        equals: Any = None,
        heads: Sequence[str] | None = None,
        state: str | None = None,
        doc: Any = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Wait until ``path`` equals ``equals``, the heads equal ``heads``, the
        handle reaches ``state``, or the whole document equals ``doc``."""
        args: dict[str, Any] = {"documentId": doc_id, "timeout_ms": round(timeout * 1000)}
        if path is not None:
            args.update(path=_path(path), equals=js_value(equals))
        elif heads is not None:
            args["heads"] = list(heads)
        elif state is not None:
            args["state"] = state
        elif doc is not None:
            args["doc"] = js_value(doc)
        else:
            raise ValueError("wait_for needs path/equals, heads, state or doc")
        return await self.request("wait_for", timeout=timeout + 15, **args)

    async def wait_synced(self, doc_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the server has acknowledged exactly this peer's heads for the doc.

        Uses the server's ``storageId`` from its ``peer`` message, as automerge-repo's
        ``handle.getSyncInfo(storageId)`` does.
        """
        return await self.request(
            "wait_for",
            documentId=doc_id,
            synced=True,
            timeout_ms=round(timeout * 1000),
            timeout=timeout + 15,
        )

    async def broadcast(self, doc_id: str, message: Any) -> None:
        """``handle.broadcast(message)`` (an ephemeral message)."""
        await self.request("broadcast", documentId=doc_id, message=js_value(message))

    async def presence_start(
        self,
        doc_id: str,
        state: Mapping[str, Any],
        *,
        heartbeat_ms: int | None = None,
        ttl_ms: int | None = None,
    ) -> None:
        """``new Presence({handle}).start({initialState: state, ...})`` (automerge-repo 2.x)."""
        args: dict[str, Any] = {"documentId": doc_id, "state": js_value(dict(state))}
        if heartbeat_ms is not None:
            args["heartbeat_ms"] = heartbeat_ms
        if ttl_ms is not None:
            args["ttl_ms"] = ttl_ms
        await self.request("presence_start", **args)

    async def presence_broadcast(self, doc_id: str, channel: str, value: Any) -> None:
        """``presence.broadcast(channel, value)``: change one key of the announced state."""
        await self.request(
            "presence_broadcast", documentId=doc_id, channel=channel, value=js_value(value)
        )

    async def presence_states(self, doc_id: str) -> dict[str, Any]:
        """``presence.getPeerStates().value``: peer id -> {peerId, lastSeenAt, value, ...}."""
        reply = await self.request("presence_states", documentId=doc_id)
        peers: dict[str, Any] = reply["peers"]
        return peers

    async def presence_stop(self, doc_id: str) -> None:
        """``presence.stop()``: a goodbye, and no more heartbeats."""
        await self.request("presence_stop", documentId=doc_id)

    async def events(self, *, keep: bool = False) -> list[dict[str, Any]]:
        """Drain the ephemeral messages received so far (documentId, senderId, message)."""
        reply = await self.request("events", keep=keep)
        events: list[dict[str, Any]] = reply["events"]
        return events

    async def import_doc(self, binary: bytes, doc_id: str | None = None) -> dict[str, Any]:
        """``repo.import(binary, {docId})``: a document with a chosen id."""
        args: dict[str, Any] = {"binary": base64.b64encode(binary).decode("ascii")}
        if doc_id is not None:
            args["documentId"] = doc_id
        return await self.request("import", **args)

    async def export(self, doc_id: str) -> bytes:
        """``Automerge.save`` of the document."""
        reply = await self.request("export", documentId=doc_id)
        return base64.b64decode(reply["binary"])

    async def disconnect(self) -> None:
        """Close the WebSocket (the adapter stops retrying)."""
        await self.request("disconnect")

    async def reconnect(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Reconnect with the same peer id; by default wait for the server's ``peer``."""
        await self.request(
            "reconnect", wait=wait, timeout_ms=round(timeout * 1000), timeout=timeout + 15
        )

    async def peers(self) -> dict[str, Any]:
        """Connected peer ids and their metadata."""
        return await self.request("peers")

    async def sync_info(self, doc_id: str, storage_id: str | None = None) -> dict[str, Any]:
        """What this client knows of the server's heads for a document (by storage id)."""
        args: dict[str, Any] = {"documentId": doc_id}
        if storage_id is not None:
            args["storageId"] = storage_id
        return await self.request("sync_info", **args)

    async def flush(self) -> None:
        """Write pending document saves to storage."""
        await self.request("flush")
