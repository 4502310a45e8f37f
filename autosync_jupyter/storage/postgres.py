"""A durable store in a PostgreSQL database.

:class:`PostgresStore` keeps the same bytes as :class:`~.files.FileStore`
(snapshots and change chunks that ``Document.load`` accepts), in three
tables that :meth:`PostgresStore.open` creates when they are missing::

    autosync_meta     (key text PRIMARY KEY, value text)
                      'schema_version' -> '1', 'storage_id' -> UUID text
    autosync_chunks   (seq bigint identity, doc_id text, kind text
                       ('snapshot' | 'incremental'), data bytea,
                       written_at timestamptz; PRIMARY KEY (doc_id, seq))
    autosync_corrupt  (id, doc_id, seq, kind, data, damaged_bytes, found_at):
                      rows whose bytes were not sound chunks, set aside

"Durable" means committed. Appends are queued in memory and written by
:meth:`PostgresStore.flush` as one transaction, one row per touched
document (group commit), so many concurrent flushes cost one commit. A
compaction inserts the verified snapshot and deletes the rows it covers in
one transaction. A row whose bytes are damaged (edited by hand, restored
from a broken backup) is copied to ``autosync_corrupt`` and replaced by its
sound chunks, as the file store's quarantine does with a file.

It needs ``psycopg`` 3, an optional dependency:
``pip install 'autosync-jupyter[postgres]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..crdt.chunks import check_chunks, scan_chunks
from ..errors import StorageError
from ..ids import DocumentId, is_valid_document_id
from .append_queue import AppendQueue
from .base import COMPACTION_FLOOR, Damage, Store, StoreLocked, check_id

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "CHANNEL",
    "INSTALL_HINT",
    "SCHEMA_VERSION",
    "PostgresStore",
    "is_postgres_url",
    "redacted_url",
]

logger = logging.getLogger("autosync_jupyter.storage")

_T = TypeVar("_T")

#: The version of the tables this module writes, kept in ``autosync_meta``.
SCHEMA_VERSION: Final = 1
#: What to run when psycopg is missing.
INSTALL_HINT: Final = "pip install 'autosync-jupyter[postgres]'"

# More rows than this per document make every load fetch many small values;
# each flush adds one row per touched document.
MAX_ROWS: Final = 1000

#: The channel on which a shared store announces, at commit, the documents
#: a flush wrote: payload ``"<sender> <doc_id>"``, one per document.
CHANNEL: Final = "autosync_changes"

_SNAPSHOT: Final = "snapshot"
_INCREMENTAL: Final = "incremental"
_STORAGE_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Taken, per transaction, by every store that creates or upgrades the tables,
# so two processes opening a new database at once do not race on CREATE.
_SCHEMA_LOCK: Final = 0x6175746F73796E63  # "autosync"

# Used only when the URL does not say otherwise: a database that vanished
# from the network must fail a flush in seconds, not after the kernel's
# TCP timeouts (hours), so that the server reports it and retries.
_CONNECTION_DEFAULTS: Final = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS autosync_meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS autosync_chunks (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        doc_id text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('snapshot', 'incremental')),
        data bytea NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (doc_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS autosync_corrupt (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        doc_id text NOT NULL,
        seq bigint NOT NULL,
        kind text NOT NULL,
        data bytea NOT NULL,
        damaged_bytes bigint NOT NULL,
        found_at timestamptz NOT NULL DEFAULT now()
    )""",
)


def is_postgres_url(text: object) -> bool:
    """Tell whether ``text`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(text, str) and text.lower().startswith(("postgresql://", "postgres://"))


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StorageError(f"the PostgreSQL store needs psycopg 3: {INSTALL_HINT}") from exc
    return psycopg


def redacted_url(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    if is_postgres_url(dsn):
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[-1]
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{host}")
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(query=query))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


@dataclasses.dataclass
class _Row:
    kind: str
    size: int


class PostgresStore(Store):
    """A durable store in a PostgreSQL database (tables ``autosync_*``).

    Appends are queued in memory and written by :meth:`flush` in one
    transaction per batch, whatever the number of changes, documents and
    callers it holds; the rows are durable once it commits (the session
    insists on ``synchronous_commit`` when the server turned it off). All
    database work goes through one connection, one operation at a time, in
    the order it was asked for. A lost connection is opened again at the
    next operation; the operation that met the loss raises
    :class:`StorageError` and a failed flush keeps its bytes queued.

    :meth:`open` takes a session advisory lock on the store (one writing
    store per database schema, as the file store locks its directory;
    shared by every store opened with ``shared``) and
    lists the document ids with one query that reads only the primary
    key's index (about a second per million documents), so that ``in``,
    which the hub asks synchronously, answers from memory; no document is
    read until :meth:`load`.

    Args:
        dsn: a ``postgresql://user:password@host:port/database`` URL or a
            libpq connection string. The tables go into the first schema of
            the connection's ``search_path`` (``?options=-csearch_path%3Dx``
            picks another).
        compaction_floor: incremental bytes below which
            :meth:`needs_compaction` stays False.
        read_only: only read (``autosync ls``, ``fsck``): no lock, nothing
            created, repaired or removed, damaged bytes skipped; append,
            compact and delete raise :class:`StorageError`.
        shared: several server processes use the database at once (each
            with its own shared store): the lock taken is a shared one
            (excluding only stores opened without ``shared``), every flush
            announces the documents it wrote on the ``autosync_changes``
            channel when it commits, and a second connection LISTENs for
            the others' announcements and hands them to :meth:`watch`'s
            callback; :meth:`load_new` reads what they wrote.

    Raises:
        StorageError: psycopg is not installed.
    """

    def __init__(
        self,
        dsn: str,
        *,
        compaction_floor: int = COMPACTION_FLOOR,
        read_only: bool = False,
        shared: bool = False,
    ) -> None:
        self._psycopg = _import_psycopg()
        self._shared = shared and not read_only
        # Names this store in its announcements, so it skips its own.
        self._sender = uuid.uuid4().hex
        self._watchers: list[Callable[[DocumentId], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._dsn = dsn
        self._label = redacted_url(dsn)
        self._floor = compaction_floor
        self._read_only = read_only
        self._conn: AsyncConnection[Any] | None = None
        # One operation at a time on the connection: a transaction must not
        # take in another coroutine's statements.
        self._lock = asyncio.Lock()
        self._state = "new"
        self._storage_id: str | None = None
        self._ids: set[DocumentId] = set()
        # Per document, the rows this process read or wrote: what a
        # compaction may delete. A row another process wrote and we never
        # read is never deleted, so no change is lost.
        self._rows: dict[DocumentId, dict[int, _Row]] = {}
        self._damage: dict[DocumentId, Damage] = {}
        self._queue = AppendQueue()
        self._batches = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self._label!r})"

    @property
    def location(self) -> str:
        """The database's URL without its password."""
        return self._label

    @property
    def storage_id(self) -> str:
        """The id in ``autosync_meta``, reused across runs."""
        if self._storage_id is None:
            raise StorageError("open() the store first")
        return self._storage_id

    @property
    def durable(self) -> bool:
        """True: committed appends survive a crash (False if opened read-only)."""
        return not self._read_only

    @property
    def shared(self) -> bool:
        """Whether other server processes may write to the database at the same time."""
        return self._shared

    @property
    def batches(self) -> int:
        """How many transactions :meth:`flush` has committed."""
        return self._batches

    def _require_open(self, *, writing: bool = False) -> None:
        if self._state == "new":
            raise StorageError("open() the store first")
        if self._state != "open":
            raise StorageError(f"the store in {self._label} is closed")
        if writing and self._read_only:
            raise StorageError(f"the store in {self._label} was opened read-only")

    # -- the connection

    async def _connect(self) -> AsyncConnection[Any]:
        psycopg = self._psycopg
        try:
            given = psycopg.conninfo.conninfo_to_dict(self._dsn)
        except psycopg.Error as exc:
            raise StorageError(f"not a PostgreSQL connection string: {self._label}") from exc
        extra = {k: v for k, v in _CONNECTION_DEFAULTS.items() if k not in given}
        conn: AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, **extra
        )
        try:
            row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            if row is not None and row[0] == "off":
                # "off" acknowledges a commit before its WAL is on disk; the
                # contract promises durability once flush() returns.
                await conn.execute("SET synchronous_commit TO on")
            if not self._read_only and self._storage_id is not None:
                await self._take_lock(conn, self._storage_id)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _take_lock(self, conn: AsyncConnection[Any], storage_id: str) -> None:
        # Session-level: held until this connection ends, which PostgreSQL
        # notices at once when the process dies.
        # A shared store takes the lock shared: shared stores coexist, and
        # exclude (and are excluded by) a store that wants it alone.
        function = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
        cur = await conn.execute(
            f"SELECT {function}(hashtextextended(%s, 0))",
            ("autosync_jupyter store " + storage_id,),
        )
        row = await cur.fetchone()
        if row is None or row[0] is not True:
            if self._shared:
                raise StoreLocked(
                    f"{self._label} is in use by a server that is not shared (--store-shared)"
                )
            raise StoreLocked(
                f"{self._label} is in use by another store; run one server per database "
                "(or every server with --store-shared)"
            )

    async def _run(
        self, what: str, operation: Callable[[AsyncConnection[Any]], Awaitable[_T]]
    ) -> _T:
        """Run ``operation`` on the connection, one operation at a time.

        A connection found broken (the server restarted, a proxy dropped an
        idle session) is opened again and the operation run once more on
        it: each operation is one transaction, or harmless to repeat.
        """
        psycopg = self._psycopg
        async with self._lock:
            for attempt in range(2):
                reused = self._conn is not None and not self._conn.closed
                try:
                    if not reused:
                        self._conn = None
                        self._conn = await self._connect()
                    assert self._conn is not None
                    return await operation(self._conn)
                except psycopg.Error as exc:
                    broken = self._conn is None or self._conn.broken or self._conn.closed
                    await self._drop_if_unusable()
                    if attempt == 0 and reused and broken:
                        logger.warning(
                            "lost the connection to %s (%s); connecting again", self._label, exc
                        )
                        continue
                    raise StorageError(f"cannot {what} in {self._label}: {exc}") from exc
                except BaseException:
                    await self._drop_if_unusable()
                    raise
        raise AssertionError("unreachable")

    async def _drop_if_unusable(self) -> None:
        # A connection left inside a transaction (an operation cancelled
        # half-way) or broken is closed; the server rolls back what it held.
        conn = self._conn
        if conn is None:
            return
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if conn.closed or conn.broken or conn.info.transaction_status != idle:
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()

    # -- open

    async def open(self) -> None:
        """Connect, create the tables if missing, read or make the storage id, list documents.

        Raises:
            StorageError: the database cannot be reached, holds tables of a
                newer schema, or (read-only) holds no store;
                :class:`StoreLocked` when another open store holds it.
        """
        if self._state != "new":
            raise StorageError(f"the store in {self._label} is already open (or closed)")

        async def prepare(conn: AsyncConnection[Any]) -> set[DocumentId]:
            if self._read_only:
                self._storage_id = await self._read_schema(conn)
            else:
                self._storage_id = await self._prepare_schema(conn)
                await self._take_lock(conn, self._storage_id)
            return await self._list_ids(conn)

        try:
            ids = await self._run("open the store", prepare)
        except BaseException:
            await self._close_connection()
            raise
        self._ids |= ids
        self._state = "open"
        if self._shared:
            listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._listener = asyncio.ensure_future(self._listen(listening))
            try:
                await listening
            except BaseException:
                await self.close()
                raise
        logger.info(
            "opened %s: %d documents, storage id %s%s",
            self._label,
            len(ids),
            self._storage_id,
            " (shared)" if self._shared else "",
        )

    async def _prepare_schema(self, conn: AsyncConnection[Any]) -> str:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                await conn.execute(statement)
            meta = await self._meta(conn)
            version = self._check_version(meta)
            if version is None:
                await conn.execute(
                    "INSERT INTO autosync_meta (key, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
            storage_id = meta.get("storage_id")
            if storage_id is None or not _STORAGE_ID_RE.fullmatch(storage_id):
                if storage_id is not None:
                    logger.warning("%s holds no usable storage id; making a new one", self._label)
                storage_id = str(uuid.uuid4())
                await conn.execute(
                    "INSERT INTO autosync_meta (key, value) VALUES ('storage_id', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (storage_id,),
                )
                logger.info("created storage id %s in %s", storage_id, self._label)
        return storage_id

    # -- several servers on one database

    def watch(self, callback: Callable[[DocumentId], None]) -> None:
        """Call ``callback(doc_id)`` when another process may have written to ``doc_id``.

        Only for a shared store (a no-op otherwise). Called from the event
        loop, for each document another process's flush committed, after
        the id was added to ``in``; and, after the listening connection was
        lost and made again (announcements may have been missed meanwhile),
        for every document this store has read (see :meth:`load_new`) and
        every id that appeared in the database.
        """
        if self._shared:
            self._watchers.append(callback)

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        """LISTEN for the other processes' announcements, connecting again when lost."""
        psycopg = self._psycopg
        delay = 0.5
        first = True
        while self._state == "open":
            conn: AsyncConnection[Any] | None = None
            try:
                given = psycopg.conninfo.conninfo_to_dict(self._dsn)
                extra = {k: v for k, v in _CONNECTION_DEFAULTS.items() if k not in given}
                extra.setdefault("application_name", "autosync listen")
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **extra)
                await conn.execute(f"LISTEN {CHANNEL}")
                # Listening from now on; what was announced before may be
                # missed: new ids are listed, and every document read is
                # treated as changed.
                ids = await self._list_ids(conn)
                appeared = ids - self._ids
                self._ids |= ids
                if first:
                    first = False
                    listening.set_result(None)
                else:
                    logger.info("listening to %s again", self._label)
                    for changed in appeared | set(self._rows):
                        self._announce(changed)
                delay = 0.5
                async for note in conn.notifies():
                    sender, _, text = note.payload.partition(" ")
                    if sender == self._sender or not is_valid_document_id(text):
                        continue
                    self._ids.add(DocumentId(text))
                    self._announce(DocumentId(text))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if first:
                    if not listening.done():
                        listening.set_exception(
                            StorageError(f"cannot listen to {self._label}: {exc}")
                        )
                    return
                logger.warning(
                    "lost the listening connection to %s (%s); connecting again", self._label, exc
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self._state == "open":
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _announce(self, doc_id: DocumentId) -> None:
        for callback in list(self._watchers):
            try:
                callback(doc_id)
            except Exception:
                logger.exception("a watcher of %s failed", self._label)

    async def load_new(self, doc_id: DocumentId) -> bytes | None:
        """Read the rows of ``doc_id`` that this store has not read or written yet.

        For a document this store has loaded (and not forgotten): the rows
        other processes wrote since, checked as :meth:`load` checks them,
        and counted from now on (``needs_compaction``, and a compaction
        may delete them, so give them to the document before compacting).
        None when there is nothing new, or the document was not loaded.
        Rows are told apart by their ``seq``, not by its order: a row with
        a smaller ``seq`` may commit later.
        """
        doc_id = check_id(doc_id)
        self._require_open()
        if doc_id not in self._rows:
            return None
        pieces: list[bytes] = []
        rows: dict[int, _Row] = {}
        damage = Damage()

        async def read(conn: AsyncConnection[Any]) -> None:
            pieces.clear()
            rows.clear()
            known = list(self._rows.get(doc_id, {}))
            cur = await conn.execute(
                "SELECT seq, kind, data FROM autosync_chunks "
                "WHERE doc_id = %s AND seq <> ALL(%s) "
                "ORDER BY (kind = 'snapshot') DESC, seq",
                (doc_id, known),
            )
            await self._take_rows(conn, doc_id, await cur.fetchall(), damage, pieces, rows)

        await self._run(f"read document {doc_id}", read)
        known = self._rows.get(doc_id)
        if known is None:  # forgotten meanwhile
            return None
        known.update(rows)
        return b"".join(pieces) or None

    async def _read_schema(self, conn: AsyncConnection[Any]) -> str:
        cur = await conn.execute("SELECT to_regclass('autosync_chunks') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or row[0] is not True:
            raise StorageError(f"no autosync store in {self._label} (no autosync_chunks table)")
        meta = await self._meta(conn)
        self._check_version(meta)
        storage_id = meta.get("storage_id")
        if storage_id is not None and _STORAGE_ID_RE.fullmatch(storage_id):
            return storage_id
        return str(uuid.uuid4())  # never announced: a read-only store serves no peer

    async def _meta(self, conn: AsyncConnection[Any]) -> dict[str, str]:
        cur = await conn.execute("SELECT key, value FROM autosync_meta")
        return {str(key): str(value) for key, value in await cur.fetchall()}

    def _check_version(self, meta: dict[str, str]) -> int | None:
        text = meta.get("schema_version")
        if text is None:
            return None
        if not text.isdigit() or int(text) > SCHEMA_VERSION:
            raise StorageError(
                f"the tables in {self._label} have schema version {text[:20]!r}; this "
                f"autosync-jupyter knows version {SCHEMA_VERSION} (upgrade it)"
            )
        return int(text)

    async def _list_ids(self, conn: AsyncConnection[Any]) -> set[DocumentId]:
        # The primary key's index answers this without reading any data.
        cur = await conn.execute("SELECT DISTINCT doc_id FROM autosync_chunks")
        found: set[DocumentId] = set()
        for (doc_id,) in await cur.fetchall():
            if is_valid_document_id(doc_id):
                found.add(DocumentId(doc_id))
            else:
                logger.warning("skipping rows of %r in %s: not a document id", doc_id, self._label)
        return found

    def document_ids(self) -> set[DocumentId]:
        """Return the ids of every document found at open, appended or compacted since."""
        if self._state == "new":
            raise StorageError("open() the store first")
        return set(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        """Tell whether the store holds ``doc_id``."""
        return isinstance(doc_id, str) and doc_id in self._ids

    # -- load

    async def load(self, doc_id: DocumentId) -> bytes | None:
        """Read and check the document's rows; see :meth:`Store.load`.

        A row with damaged bytes is copied to ``autosync_corrupt`` and
        replaced by its sound chunks (deleted if none are left), in one
        transaction; the rest loads.
        """
        doc_id = check_id(doc_id)
        self._require_open()
        # Taken now so that every append made before this call is in the
        # result, whether or not its batch commits before the read.
        unwritten = self._queue.unwritten(doc_id)
        damage = Damage()
        pieces: list[bytes] = []
        rows: dict[int, _Row] = {}

        async def read(conn: AsyncConnection[Any]) -> None:
            nonlocal damage
            damage = Damage()
            pieces.clear()
            rows.clear()
            cur = await conn.execute(
                "SELECT seq, kind, data FROM autosync_chunks WHERE doc_id = %s "
                "ORDER BY (kind = 'snapshot') DESC, seq",
                (doc_id,),
            )
            await self._take_rows(conn, doc_id, await cur.fetchall(), damage, pieces, rows)

        await self._run(f"read document {doc_id}", read)
        self._damage[doc_id] = damage
        known = self._rows.setdefault(doc_id, {})
        known.update(rows)
        result = b"".join(pieces) + unwritten
        return result or None

    async def _take_rows(
        self,
        conn: AsyncConnection[Any],
        doc_id: DocumentId,
        found: list[tuple[Any, ...]],
        damage: Damage,
        pieces: list[bytes],
        rows: dict[int, _Row],
    ) -> None:
        """Check each ``(seq, kind, data)`` row read; keep the sound bytes and count the row."""
        for seq, kind, data in found:
            kind = _SNAPSHOT if kind == _SNAPSHOT else _INCREMENTAL
            good = await self._checked(conn, doc_id, int(seq), kind, bytes(data), damage)
            if good:
                pieces.append(good)
                rows[int(seq)] = _Row(kind, len(good))

    async def _checked(
        self,
        conn: AsyncConnection[Any],
        doc_id: DocumentId,
        seq: int,
        kind: str,
        data: bytes,
        damage: Damage,
    ) -> bytes:
        """Return the sound chunks of one row, setting its damaged bytes aside."""
        scan = scan_chunks(data)
        if not scan.bad:
            return data
        bad = sum(end - start for start, end in scan.bad)
        damage.damaged_bytes += bad
        damage.files += 1
        good = scan.good_bytes(data)
        if self._read_only:
            logger.warning(
                "document %s: row %d in %s has %d damaged bytes; reading the rest "
                "(read-only: not repaired)",
                doc_id,
                seq,
                self._label,
                bad,
            )
            return good
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO autosync_corrupt (doc_id, seq, kind, data, damaged_bytes) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (doc_id, seq, kind, data, bad),
            )
            row = await cur.fetchone()
            if good:
                await conn.execute(
                    "UPDATE autosync_chunks SET data = %s WHERE doc_id = %s AND seq = %s",
                    (good, doc_id, seq),
                )
            else:
                await conn.execute(
                    "DELETE FROM autosync_chunks WHERE doc_id = %s AND seq = %s", (doc_id, seq)
                )
        aside = Path("autosync_corrupt") / str(row[0] if row else "?")
        damage.set_aside.append(aside)
        logger.warning(
            "document %s: row %d in %s has %d damaged bytes in %d place(s); kept %d sound "
            "bytes, moved the original to %s",
            doc_id,
            seq,
            self._label,
            bad,
            len(scan.bad),
            len(good),
            aside,
        )
        return good

    def damage(self, doc_id: DocumentId) -> Damage:
        """What the last :meth:`load` of ``doc_id`` found damaged (nothing before a load).

        ``set_aside`` names rows of ``autosync_corrupt`` as ``autosync_corrupt/<id>``.
        """
        return self._damage.get(check_id(doc_id), Damage())

    # -- append and flush

    def append(self, doc_id: DocumentId, data: bytes) -> None:
        """Queue change bytes; see :meth:`Store.append`."""
        if not (isinstance(doc_id, str) and doc_id in self._ids):  # validated once per id
            doc_id = check_id(doc_id)
        data = check_chunks(data, "appended data")
        self._require_open(writing=True)
        self._queue.add(doc_id, data)
        self._ids.add(doc_id)

    async def flush(self) -> None:
        """Commit everything appended before this call; see :meth:`Store.flush`."""
        await self._queue.flush(self._write_batch)

    async def _write_batch(self, batch: dict[DocumentId, bytes], count: int) -> None:
        async def insert(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO autosync_chunks (doc_id, kind, data) "
                    "SELECT d, 'incremental', b "
                    "FROM unnest(%s::text[], %s::bytea[]) AS t(d, b) "
                    "RETURNING doc_id, seq",
                    (list(batch), list(batch.values())),
                )
                written = await cur.fetchall()
                if self._shared:
                    # Delivered only if the transaction commits.
                    await conn.execute(
                        "SELECT pg_notify(%s, %s || ' ' || d) FROM unnest(%s::text[]) AS d",
                        (CHANNEL, self._sender, list(batch)),
                    )
                return written

        written = await self._run("write a batch", insert)
        for doc_id, seq in written:
            doc_id = DocumentId(doc_id)
            if self._queue.being_written(doc_id):  # not deleted meanwhile
                self._rows.setdefault(doc_id, {})[int(seq)] = _Row(_INCREMENTAL, len(batch[doc_id]))
        self._batches += 1
        logger.debug("committed a batch of %d appends to %d documents", count, len(batch))

    # -- compact and delete

    def needs_compaction(self, doc_id: DocumentId) -> bool:
        """Tell whether the change bytes outweigh the snapshot, or the rows are many.

        True when the document's incremental bytes (stored and queued)
        reach the larger of its snapshot size and ``compaction_floor``, or
        when it has more than 1000 rows. Only what this process has loaded
        or written counts.
        """
        if not isinstance(doc_id, str):
            return False
        rows = self._rows.get(doc_id, {})
        snapshot = sum(row.size for row in rows.values() if row.kind == _SNAPSHOT)
        incremental = sum(row.size for row in rows.values() if row.kind == _INCREMENTAL)
        incremental += self._queue.unwritten_size(doc_id)
        return incremental >= max(snapshot, self._floor) or len(rows) > MAX_ROWS

    async def compact(
        self,
        doc_id: DocumentId,
        snapshot: bytes,
        heads: list[bytes],
        *,
        verify: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Insert ``snapshot`` and delete the rows it covers, in one transaction.

        See :meth:`Store.compact`. The snapshot is read back inside the
        transaction and given to ``verify`` (off the event loop); unless
        both succeed the transaction rolls back and nothing changes. The
        rows deleted are those this process had read or written when the
        call was made: bytes appended after it (queued, or in a batch being
        committed) stay, as do rows another process wrote.
        """
        doc_id = check_id(doc_id)
        snapshot = check_chunks(snapshot, "snapshot")
        self._require_open(writing=True)
        covered = list(self._rows.get(doc_id, {}))

        async def replace(conn: AsyncConnection[Any]) -> int:
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO autosync_chunks (doc_id, kind, data) "
                    "VALUES (%s, 'snapshot', %s) RETURNING seq",
                    (doc_id, snapshot),
                )
                row = await cur.fetchone()
                assert row is not None
                seq = int(row[0])
                cur = await conn.execute(
                    "SELECT data FROM autosync_chunks WHERE doc_id = %s AND seq = %s",
                    (doc_id, seq),
                )
                back = await cur.fetchone()
                written = bytes(back[0]) if back is not None else b""
                if written != snapshot or (
                    verify is not None and not await asyncio.to_thread(verify, written)
                ):
                    raise StorageError(
                        f"the new snapshot of document {doc_id} did not read back intact "
                        "or does not load; nothing was removed"
                    )
                await conn.execute(
                    "DELETE FROM autosync_chunks WHERE doc_id = %s AND seq = ANY(%s)",
                    (doc_id, covered),
                )
                return seq

        seq = await self._run(f"compact document {doc_id}", replace)
        rows = self._rows.setdefault(doc_id, {})
        for old in covered:
            rows.pop(old, None)
        rows[seq] = _Row(_SNAPSHOT, len(snapshot))
        self._ids.add(doc_id)

    def forget(self, doc_id: DocumentId) -> None:
        """Drop the sizes and damage report kept for ``doc_id``; the next load rebuilds them.

        Until then a compaction deletes no row of it (it covers none it knows).
        """
        doc_id = check_id(doc_id)
        self._rows.pop(doc_id, None)
        self._damage.pop(doc_id, None)

    async def delete(self, doc_id: DocumentId) -> None:
        """Delete the document's rows and forget its queued appends."""
        doc_id = check_id(doc_id)
        self._require_open(writing=True)
        self._queue.discard(doc_id)
        self._ids.discard(doc_id)
        self._rows.pop(doc_id, None)

        async def remove(conn: AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM autosync_chunks WHERE doc_id = %s", (doc_id,))

        await self._run(f"delete document {doc_id}", remove)

    async def close(self) -> None:
        """Commit what was appended so far, refuse further appends, disconnect."""
        if self._state != "open":
            self._state = "closed"
            return
        try:
            await self.flush()
        finally:
            self._state = "closed"
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener
            async with self._lock:
                await self._close_connection()
        logger.info("closed %s", self._label)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            idle = self._psycopg.pq.TransactionStatus.IDLE
            if not (conn.broken or self._read_only) and conn.info.transaction_status == idle:
                # The backend releases a session's locks only when it has
                # ended, a moment after the client hangs up: a store opened
                # right after this one would be refused. Bounded: a dead
                # network must not hold up closing.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.execute("SELECT pg_advisory_unlock_all()"), 2.0)
            with contextlib.suppress(Exception):
                await conn.close()
