"""Start sync servers as subprocesses for the interop tests and the benchmark.

Both servers follow one CLI contract: bind to ``--port 0`` on ``--host``, print
one stdout line ``listening on ws://HOST:PORT`` (``wss://`` with TLS) once
connections are accepted, and exit cleanly (status 0) on SIGTERM/SIGINT.

    async with js_sync_server(tmp_path / "js") as server:
        ...  # server.url == "ws://127.0.0.1:PORT"

    async with py_sync_server(tmp_path / "py") as server:
        ...  # runs `python -m autosync_jupyter serve --host 127.0.0.1 --port 0 ...`

The context managers yield a :class:`ServerProcess` (``url``, ``pid``,
``logs()``), not a bare URL string: failures print the server's log, and the
benchmark samples the process. A server that fails to start, or does not stop
cleanly within ``stop_timeout`` of SIGTERM, raises :class:`ServerError` with
its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jspeer import JS_DIR, node_executable

__all__ = [
    "REPO_ROOT",
    "ServerError",
    "ServerProcess",
    "TLSFiles",
    "js_sync_server",
    "make_tls_files",
    "py_sync_server",
    "run_server",
]

#: The repository checkout holding the autosync_jupyter package.
REPO_ROOT = Path(__file__).resolve().parents[2]

_SYNC_SERVER_SCRIPT = JS_DIR / "sync-server.mjs"
_LISTENING_RE = re.compile(r"listening on (wss?://\S+)")
_LOG_TAIL = 2000


class ServerError(RuntimeError):
    """A server subprocess failed to start or to stop cleanly."""


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS server: its certificate chain, key, and the CA to trust."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class ServerProcess:
    """A running server subprocess."""

    name: str
    url: str
    process: asyncio.subprocess.Process
    data_dir: Path
    started_at: float
    _log: deque[str] = field(repr=False)

    @property
    def pid(self) -> int:
        """Process id of the server (for psutil sampling)."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once stopped, None while running."""
        return self.process.returncode

    def logs(self) -> str:
        """The server's recent stdout and stderr lines."""
        return "\n".join(self._log)

    def __str__(self) -> str:
        return self.url


async def _pump(
    stream: asyncio.StreamReader | None,
    prefix: str,
    log: deque[str],
    on_line: Callable[[str], None] | None = None,
) -> None:
    if stream is None:
        return
    async for raw in stream:
        line = prefix + raw.decode("utf-8", "replace").rstrip("\n")
        log.append(line)
        if on_line is not None:
            on_line(line)


@contextlib.asynccontextmanager
async def run_server(
    name: str,
    argv: Sequence[str],
    *,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 10.0,
    require_clean_exit: bool = True,
    on_line: Callable[[str], None] | None = None,
) -> AsyncIterator[ServerProcess]:
    """Run ``argv`` until it prints its ``listening on`` line; SIGTERM it on exit.

    ``on_line`` sees every line the server prints (its log keeps only the last ones).

    Raises:
        ServerError: the process exited or stayed silent for ``startup_timeout``
            seconds before listening; or (when the body did not raise) it needed
            SIGKILL to stop, or exited with a non-zero status although
            ``require_clean_exit`` is set.
    """
    log: deque[str] = deque(maxlen=_LOG_TAIL)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    stderr_task = asyncio.create_task(_pump(proc.stderr, "", log, on_line))
    stdout_task: asyncio.Task[None] | None = None
    command = " ".join(argv)

    def failure(message: str) -> ServerError:
        tail = "\n".join(log) or "(no output)"
        return ServerError(f"{name}: {message}\ncommand: {command}\n--- server log ---\n{tail}")

    async def read_url() -> str:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append(line)
            match = _LISTENING_RE.search(line)
            if match:
                return match.group(1)
        await proc.wait()
        raise failure(f"exited with status {proc.returncode} before listening")

    async def stop() -> bool:
        """SIGTERM, then SIGKILL after stop_timeout; True if SIGKILL was needed."""
        killed = False
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), stop_timeout)
            except asyncio.TimeoutError:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await asyncio.gather(stderr_task, *([stdout_task] if stdout_task else []))
        return killed

    try:
        url = await asyncio.wait_for(read_url(), startup_timeout)
    except asyncio.TimeoutError:
        await stop()
        raise failure(f"no 'listening on' line within {startup_timeout} s") from None
    except BaseException:
        await stop()
        raise
    stdout_task = asyncio.create_task(_pump(proc.stdout, "", log, on_line))
    server = ServerProcess(name, url, proc, data_dir, time.monotonic(), log)
    try:
        yield server
    except BaseException:
        await stop()
        raise
    killed = await stop()
    if killed:
        raise failure(f"did not exit within {stop_timeout} s of SIGTERM (killed)")
    if require_clean_exit and proc.returncode != 0:
        raise failure(f"exited with status {proc.returncode} after SIGTERM (expected 0)")


def js_sync_server(
    data_dir: Path,
    tls: TLSFiles | None = None,
    *,
    port: int = 0,
    peer_id: str | None = None,
    debug: str | None = None,
    version: str | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 10.0,
    require_clean_exit: bool = True,
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """The official JS sync server (``js/sync-server.mjs``) on a free loopback port.

    Args:
        data_dir: its NodeFS storage directory (created if missing).
        tls: serve ``wss://`` with these files (see :func:`make_tls_files`).
        port: the port to listen on; 0 picks a free one. A restart on the port a
            killed server used lets clients reconnect to the same URL.
        peer_id: override ``storage-server-<hostname>``.
        debug: value for ``DEBUG`` (e.g. ``"automerge-repo:*,WebsocketServer"``).
        version: the automerge-repo release to run (default 2.5.6; see
            ``jspeer.JS_REPO_VERSIONS``).
        startup_timeout, stop_timeout, require_clean_exit: see :func:`run_server`.
    """
    argv = [node_executable(), str(_SYNC_SERVER_SCRIPT), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if tls is not None:
        argv += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    if peer_id is not None:
        argv += ["--peer-id", peer_id]
    if version is not None:
        argv += ["--repo-version", version]
    env = dict(os.environ)
    if debug is not None:
        env["DEBUG"] = debug
    return run_server(
        "js-sync-server" if version is None else f"js-sync-server-{version}",
        argv,
        data_dir=data_dir,
        env=env,
        cwd=JS_DIR,
        startup_timeout=startup_timeout,
        stop_timeout=stop_timeout,
        require_clean_exit=require_clean_exit,
    )


def py_sync_server(
    data_dir: Path,
    *extra_args: str,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 10.0,
    require_clean_exit: bool = True,
    on_line: Callable[[str], None] | None = None,
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """Our server: ``python -m autosync_jupyter serve`` on a free loopback port.

    ``extra_args`` are appended to the command line (e.g. TLS options);
    ``port`` 0 picks a free port. The checkout is put first on ``PYTHONPATH``
    so an uninstalled tree works.
    ``env`` replaces the inherited environment; the timeouts and
    ``require_clean_exit`` are as in :func:`run_server`.
    """
    argv = [sys.executable, "-m", "autosync_jupyter", "serve"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *extra_args]
    full_env = dict(os.environ if env is None else env)
    pythonpath = full_env.get("PYTHONPATH")
    full_env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    return run_server(
        "py-sync-server",
        argv,
        data_dir=data_dir,
        env=full_env,
        cwd=REPO_ROOT,
        startup_timeout=startup_timeout,
        stop_timeout=stop_timeout,
        require_clean_exit=require_clean_exit,
        on_line=on_line,
    )


def make_tls_files(directory: Path, hostnames: Sequence[str] = ("localhost",)) -> TLSFiles:
    """Write a throw-away CA and a server certificate for 127.0.0.1 and ``hostnames``.

    Clients trust ``ca`` (Node: ``NODE_EXTRA_CA_CERTS``; Python: ``ssl``
    ``cafile``). Uses ``cryptography``, a dependency of the package.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    valid = (now - dt.timedelta(days=1), now + dt.timedelta(days=30))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autosync interop test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    files = TLSFiles(
        cert=directory / "server.pem", key=directory / "server.key", ca=directory / "ca.pem"
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files
