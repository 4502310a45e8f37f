"""Every code block of the README runs as written (issue 12).

Blocks are found in README.md and run the way a reader would run them:
plain Python in a fresh interpreter, cells with top-level ``await`` or
``%magics`` in a real kernel, the server example in a process that gets
Ctrl-C, the JavaScript example under Node with the official packages, and
the short shell commands in a shell. Port 3030 is replaced by a free port
(a reader's machine has 3030 free; a test machine may not), and where a
block expects ``autosync serve`` to be running, a server is.

A block that cannot run here says why in :data:`NOT_RUN` (a person must sign
in at a browser), so a new block is run unless someone decides otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autosync_jupyter import BackgroundSyncServer
from tests.interop.jspeer import JS_DIR, require_js_install
from tests.jupyter.kernel import running_kernel

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent

#: Blocks (by a phrase they contain) that need what a test cannot have.
NOT_RUN = {
    "await get_token(": "signs in through a person's browser at a real OIDC provider",
}


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def printed(code: str) -> list[str]:
    """What the block's ``print(...)  # output`` lines say they print."""
    return re.findall(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", code, re.MULTILINE)


def on_port(code: str, port: int) -> str:
    return code.replace("3030", str(port))


def needs_kernel(block: Block) -> bool:
    code = block.code
    return (
        "%autosync" in code
        or "autosync.share(" in code
        or re.search(r"^\S.*\bawait ", code, re.M) is not None
        or re.search(r"^async with ", code, re.M) is not None
    )


def kind(block: Block) -> str:
    for phrase, why in NOT_RUN.items():
        if phrase in block.code:
            return f"not run: {why}"
    if block.language == "python":
        if "serve_forever()" in block.code:
            return "server"
        return "kernel" if needs_kernel(block) else "python"
    return block.language


BLOCKS = readme_blocks()


def blocks_of(*kinds: str) -> list[Block]:
    return [b for b in BLOCKS if kind(b) in kinds]


def test_every_block_is_run_or_says_why() -> None:
    """No block slips through: each is of a kind run below, or listed in NOT_RUN."""
    kinds = {str(b): kind(b) for b in BLOCKS}
    unknown = {
        b: k
        for b, k in kinds.items()
        if k not in ("python", "kernel", "server", "sh", "js") and not k.startswith("not run")
    }
    assert not unknown
    assert any(printed(b.code) for b in BLOCKS)  # the output checks below have work
    assert sum(k.startswith("not run") for k in kinds.values()) == len(NOT_RUN)


@pytest.fixture(scope="module")
def serving() -> Iterator[BackgroundSyncServer]:
    """``autosync serve`` as the README's client examples expect it (on a free port)."""
    with BackgroundSyncServer(port=free_port(), data_dir=None) as server:
        yield server


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("block", blocks_of("python"), ids=str)
def test_python_block(block: Block, tmp_path: Path, serving: BackgroundSyncServer) -> None:
    done = run_python(on_port(block.code, serving.port), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for expected in printed(block.code):
        assert expected in done.stdout


@pytest.mark.parametrize("block", blocks_of("kernel"), ids=str)
def test_notebook_block(block: Block, tmp_path: Path, serving: BackgroundSyncServer) -> None:
    """A cell in a real kernel (top-level await, magics), with a hub for ``share``."""
    port = serving.port if "serve --port" not in block.code else free_port()
    env = {"AUTOSYNC_JUPYTER_URL": serving.url}
    with running_kernel(tmp_path, env=env) as kernel:
        out = kernel.run(on_port(block.code, port), timeout=120)
        assert "Traceback" not in out.stderr, out.stderr
        for expected in printed(block.code):
            assert expected in out.stdout
        if "%autosync status" in block.code:
            assert "autosync server at" in out.text or "autosync server" in str(out.results)


@pytest.mark.parametrize("block", blocks_of("server"), ids=str)
def test_server_block_stops_cleanly_on_ctrl_c(block: Block, tmp_path: Path) -> None:
    """The "From Python" server prints its URL, serves, and ends quietly on Ctrl-C."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", on_port(block.code, port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"ws://127.0.0.1:{port} "), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert (tmp_path / ".automerge").is_dir()


@pytest.mark.parametrize("block", blocks_of("js"), ids=str)
def test_js_block(block: Block, serving: BackgroundSyncServer) -> None:
    """The JavaScript example under Node: prints the URL, the server has it, Node exits."""
    require_js_install()
    script = JS_DIR / f"readme-{os.getpid()}.mjs"
    script.write_text(on_port(block.code, serving.port), encoding="utf-8")
    try:
        done = subprocess.run(
            ["node", str(script)], capture_output=True, text=True, timeout=60, cwd=JS_DIR
        )
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("automerge:")
    assert serving.read_document(url.removeprefix("automerge:")) == {"hello": "world"}


# The database the README's PostgreSQL examples name.
README_DATABASE = "postgresql://autosync@db.example/automerge"

# Shell lines that are the set-up itself (run by CI), or open a desktop app.
_SETUP = ("./scripts/", "scripts/", "pip install", "jupyter lab", "SKIP_JUPYTER_BUILDER")


def shell_lines() -> list[tuple[Block, str]]:
    out = []
    for block in blocks_of("sh"):
        text = block.code.replace("\\\n", " ")
        for line in text.splitlines():
            command = line.split("#", 1)[0].strip()
            if command and not command.startswith(_SETUP):
                out.append((block, command))
    return out


@pytest.mark.parametrize(("block", "command"), shell_lines(), ids=lambda v: str(v)[:60])
def test_shell_command(
    block: Block, command: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Short commands run to success; ``autosync serve`` starts, listens and stops on Ctrl-C."""
    if command.startswith(("autosync fsck", "autosync migrate")):
        subprocess.run(["autosync", "create", "{}"], cwd=tmp_path, check=True)
    if README_DATABASE in command:  # the reader's database: the tests' throw-away one
        command = command.replace(README_DATABASE, request.getfixturevalue("postgres_url"))
    port = free_port()
    command = on_port(command, port)
    if " serve" not in command:
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return
    argv = shlex.split(command)
    if "--port" not in argv:
        argv += ["--port", str(port)]  # the default, 3030, may be taken on a test machine
    proc = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "listening on" in line, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
