"""A throw-away PostgreSQL server for the tests of the PostgreSQL store.

It runs the machine's own PostgreSQL binaries (Debian's ``postgresql``
package, which ``scripts/install-postgres`` installs) on a fresh cluster in
a temporary directory, listening on 127.0.0.1 at a free port with trust
authentication, and is stopped at the end of the test session. PostgreSQL
refuses to run as root, so when the tests run as root (CI does) every
server command runs as the ``postgres`` system user the package creates,
and the cluster's directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

#: The superuser of the throw-away cluster (trust authentication: no password).
USER = "autosync"
_RUN_AS = "postgres"


def postgres_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: Debian keeps them off the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def missing_prerequisite() -> str | None:
    """Why a PostgreSQL server cannot be run here, or None when it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    if postgres_bin_dir() is None:
        return "PostgreSQL is not installed (scripts/install-postgres)"
    if os.geteuid() == 0 and _run_as_prefix() is None:
        return f"running as root, and there is no {_RUN_AS!r} user or no runuser to run PostgreSQL"
    return None


def _run_as_prefix() -> list[str] | None:
    """The command prefix that drops root for PostgreSQL, or None if it cannot be done."""
    runuser = shutil.which("runuser")
    if runuser is None:
        return None
    try:
        import pwd

        pwd.getpwnam(_RUN_AS)
    except KeyError:
        return None
    return [runuser, "-u", _RUN_AS, "--"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A running cluster; :meth:`new_database` gives each test an empty database."""

    def __init__(self, root: Path, port: int, prefix: list[str], bin_dir: Path) -> None:
        self.root = root
        self.port = port
        self._prefix = prefix
        self._bin = bin_dir

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a name made above, not input
        return self.url(name)

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")
        return ""

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._prefix, str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a fresh cluster, yield it, stop it and remove its files."""
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None, missing_prerequisite()
    prefix: list[str] = []
    if os.geteuid() == 0:
        run_as = _run_as_prefix()
        assert run_as is not None, missing_prerequisite()
        prefix = run_as
    root = Path(tempfile.mkdtemp(prefix="autosync-pg-"))
    try:
        if prefix:
            shutil.chown(root, _RUN_AS, _RUN_AS)
        init = subprocess.run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",  # the cluster dies with the session; its creation need not be durable
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        server: PostgresServer | None = None
        for _attempt in range(5):  # the free port may be taken between the probe and the start
            candidate = PostgresServer(root, _free_port(), prefix, bin_dir)
            options = f"-c listen_addresses=127.0.0.1 -p {candidate.port} -k {root}"
            started = candidate.pg_ctl("-o", options, "-l", str(root / "server.log"), "-w", "start")
            if started.returncode == 0:
                server = candidate
                break
        if server is None:
            raise RuntimeError(f"PostgreSQL did not start:\n{candidate.log()}")
        try:
            yield server
        finally:
            server.pg_ctl("-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
