"""The `autosync` command line, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autosync_jupyter.crdt.values import new_document
from autosync_jupyter.errors import DocumentUnavailable
from autosync_jupyter.ids import generate_document_id

REPO = Path(__file__).resolve().parents[1]


def autosync(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "autosync_jupyter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_create_then_ls(tmp_path: Path) -> None:
    """`create` prints an automerge URL; `ls` lists it and `ls --json` shows its content."""
    data = str(tmp_path / "d")
    made = autosync("create", "--data-dir", data, '{"title": "hi", "n": [1, 2]}')
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith("automerge:")
    listed = autosync("ls", "--data-dir", data)
    assert listed.stdout.split() == [url]
    content = json.loads(autosync("ls", "--data-dir", data, "--json").stdout)
    assert content == {url.removeprefix("automerge:"): {"title": "hi", "n": [1, 2]}}


def test_create_rejects_non_object(tmp_path: Path) -> None:
    """`create` with JSON that is not an object fails with a clear message."""
    result = autosync("create", "--data-dir", str(tmp_path / "d"), "[1, 2]")
    assert result.returncode == 1 and "JSON object" in result.stderr


def test_create_says_the_argument_is_not_json(tmp_path: Path) -> None:
    """`create '{title: hi}'` names the argument and shows how to write it (not a bare error)."""
    result = autosync("create", "--data-dir", str(tmp_path / "d"), "{title: hi}")
    assert result.returncode == 1
    assert "the initial content '{title: hi}' is not JSON" in result.stderr
    assert """'{"title": "hi"}'""" in result.stderr
    assert not (tmp_path / "d").exists()


def test_create_on_a_running_server(tmp_path: Path) -> None:
    """`create --url` adds a document over the network while `serve` holds the directory."""
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    serve = [sys.executable, "-m", "autosync_jupyter", "serve", "--port", "0", "--data-dir"]
    with subprocess.Popen(
        [*serve, str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as server:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        locked = autosync("create", "--data-dir", str(data), "{}")
        assert locked.returncode == 1 and "autosync create --url" in locked.stderr
        made = autosync("create", "--url", url, '{"title": "remote"}')
        assert made.returncode == 0, made.stderr
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    content = json.loads(autosync("ls", "--data-dir", str(data), "--json").stdout)
    assert content == {made.stdout.strip().removeprefix("automerge:"): {"title": "remote"}}


def test_ls_of_an_empty_store_says_so(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    result = autosync("ls", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0 and result.stdout == ""
    assert "no documents in" in result.stderr


def test_serve_help_shows_the_data_dir_default() -> None:
    assert "(default: .automerge)" in autosync("serve", "--help").stdout


def test_serve_on_a_taken_port_says_so_and_leaves_no_directory(tmp_path: Path) -> None:
    """No raw [Errno 98], and the data directory it would have made is not left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = autosync("serve", "--port", port, "--data-dir", str(tmp_path / "new"))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


def test_ls_of_missing_directory_fails_clearly(tmp_path: Path) -> None:
    """`ls` of a directory that does not exist says so."""
    result = autosync("ls", "--data-dir", str(tmp_path / "nope"))
    assert result.returncode == 1 and "no data directory" in result.stderr


def test_ls_reads_an_r_data_directory(tmp_path: Path) -> None:
    """An R package data directory (`<id>.automerge`) is listed and read; bad names skipped."""
    doc_id = generate_document_id()
    (tmp_path / f"{doc_id}.automerge").write_bytes(new_document({"from": "R"}).save())
    (tmp_path / "not-an-id.automerge").write_bytes(b"junk")
    content = json.loads(autosync("ls", "--data-dir", str(tmp_path), "--json").stdout)
    assert content == {doc_id: {"from": "R"}}


def test_serve_stops_cleanly_on_sigint_with_nothing_lost(tmp_path: Path) -> None:
    """`serve` prints its URL, and Ctrl-C (SIGINT) exits 0 after flushing."""
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "autosync_jupyter", "serve", "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on ws://127.0.0.1:"), line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    assert (data / "st" / "orage-adapter-id").is_file()


def test_serve_refuses_a_directory_in_use(tmp_path: Path) -> None:
    """A second server on the same data directory fails with a clear error."""
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "autosync_jupyter",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data),
    ]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as first:
        assert first.stdout is not None and first.stdout.readline().startswith("listening")
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
        assert second.returncode == 1 and "in use" in second.stderr
        first.terminate()
        first.wait(timeout=20)


def test_serve_with_auth_needs_tls() -> None:
    """`serve --auth` over plain ws:// fails with a clear message."""
    result = autosync("serve", "--port", "0", "--ephemeral", "--auth", "--oidc-client-id", "x")
    assert result.returncode == 1 and "TLS" in result.stderr


async def test_serve_with_auth_checks_tokens(tmp_path: Path) -> None:
    """`serve --auth` accepts a valid ID token and refuses a missing one."""
    from autosync_jupyter import ServerError, fetch
    from tests.oidc_provider import CLIENT_ID, running_provider

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with running_provider() as provider:
        args = ["--oidc-issuer", provider.issuer, "--oidc-client-id", CLIENT_ID]
        cmd = [sys.executable, "-m", "autosync_jupyter", "serve", "--port", "0", "--auth"]
        cmd += [*args, "--insecure-auth-on-loopback", "--data-dir", str(tmp_path / "d")]
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        ) as proc:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            try:
                with pytest.raises(ServerError, match="Authentication failed"):
                    await fetch(url, "4NMNnkMhL8jXrdJ9jamS58PAVdXu", timeout=10)
                with pytest.raises(DocumentUnavailable):
                    await fetch(url, "4NMNnkMhL8jXrdJ9jamS58PAVdXu", token=provider.mint())
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=20)


# -- the PostgreSQL store ----------------------------------------------------------------


def serve_until_interrupted(*args: str) -> subprocess.Popen[str]:
    """`autosync serve --port 0 ARGS` started; its first line (the URL) not yet read."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "autosync_jupyter", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def test_serve_on_a_postgres_store(postgres_url: str, tmp_path: Path) -> None:
    """`serve --store postgresql://…` keeps documents in the database, across restarts."""
    with serve_until_interrupted("--store", postgres_url) as server:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        locked = autosync("create", "--store", postgres_url, "{}")
        assert locked.returncode == 1 and "autosync create --url" in locked.stderr
        made = autosync("create", "--url", url, '{"title": "in the database"}')
        assert made.returncode == 0, made.stderr
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    doc_id = made.stdout.strip().removeprefix("automerge:")
    content = json.loads(autosync("ls", "--store", postgres_url, "--json").stdout)
    assert content == {doc_id: {"title": "in the database"}}
    assert not (tmp_path / ".automerge").exists() and not (REPO / ".automerge").exists()
    with serve_until_interrupted("--store", postgres_url) as server:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        fetched = autosync("fetch", url, doc_id, "--json")
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout) == {"title": "in the database"}


def test_migrate_both_ways(postgres_url: str, tmp_path: Path) -> None:
    """`migrate DIR URL` copies every document into the database, `migrate URL DIR` back; twice
    copies nothing new."""
    source, back = str(tmp_path / "source"), str(tmp_path / "back")
    for title in ("one", "two"):
        assert (
            autosync("create", "--data-dir", source, json.dumps({"title": title})).returncode == 0
        )
    expected = json.loads(autosync("ls", "--data-dir", source, "--json").stdout)
    assert len(expected) == 2

    there = autosync("migrate", source, postgres_url)
    assert there.returncode == 0, there.stderr
    assert "2 documents: 2 copied, 0 already there, 0 merged, 0 failed" in there.stdout
    assert json.loads(autosync("ls", "--store", postgres_url, "--json").stdout) == expected

    again = autosync("migrate", source, postgres_url)
    assert again.returncode == 0, again.stderr
    assert "2 documents: 0 copied, 2 already there" in again.stdout

    home = autosync("migrate", postgres_url, back)
    assert home.returncode == 0, home.stderr
    assert "2 copied" in home.stdout
    assert json.loads(autosync("ls", "--data-dir", back, "--json").stdout) == expected
    fsck = autosync("fsck", "--data-dir", back)
    assert fsck.returncode == 0, fsck.stdout


def test_fsck_on_a_postgres_store(postgres_url: str) -> None:
    """fsck --store reports a damaged row; --repair sets it aside; then all is sound."""
    import psycopg

    made = autosync("create", "--store", postgres_url, '{"title": "x"}')
    assert made.returncode == 0, made.stderr
    doc_id = made.stdout.strip().removeprefix("automerge:")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE autosync_chunks SET data = data || '\\x856f4a83ff'::bytea")
    checked = autosync("fsck", "--store", postgres_url)
    assert checked.returncode == 1
    assert f"DAMAGED  {doc_id}  5 damaged bytes in 1 row" in checked.stdout
    repaired = autosync("fsck", "--store", postgres_url, "--repair")
    assert repaired.returncode == 1 and "set aside: autosync_corrupt/1" in repaired.stdout
    sound = autosync("fsck", "--store", postgres_url)
    assert sound.returncode == 0, sound.stdout
    assert f"ok       {doc_id}" in sound.stdout


def test_two_shared_servers_on_one_database(postgres_url: str) -> None:
    """`serve --store URL --store-shared` twice: a document made through one is served by the
    other, and stays there when the first is killed."""
    assert autosync("serve", "--store-shared").returncode != 0  # needs a postgresql:// store
    with (
        serve_until_interrupted("--store", postgres_url, "--store-shared") as first,
        serve_until_interrupted("--store", postgres_url, "--store-shared") as second,
    ):
        try:
            urls = []
            for server in (first, second):
                assert server.stdout is not None
                urls.append(server.stdout.readline().split()[-1])
            made = autosync("create", "--url", urls[0], '{"title": "through a"}')
            assert made.returncode == 0, made.stderr
            doc_id = made.stdout.strip().removeprefix("automerge:")
            first.kill()  # kill -9: what it acknowledged is in the database
            first.wait(timeout=20)
            # The second server hears of the new id at the commit's NOTIFY;
            # asked before, it says "unavailable": ask again (bounded).
            deadline = time.monotonic() + 60
            while (fetched := autosync("fetch", urls[1], doc_id, "--json")).returncode != 0:
                assert time.monotonic() < deadline, fetched.stderr
            assert json.loads(fetched.stdout) == {"title": "through a"}
        finally:
            for server in (first, second):
                if server.poll() is None:
                    server.send_signal(signal.SIGINT)
                    server.wait(timeout=20)
        assert second.returncode == 0
