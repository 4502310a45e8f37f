"""A real IPython kernel (jupyter_client) for the tests, and what its cells produced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.manager import KernelManager, start_new_kernel

__all__ = ["CellError", "Kernel", "Output", "off_loop", "running_kernel"]

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking jupyter_client call from async code, in a worker thread.

    jupyter_client's blocking API makes an event loop in each thread that
    calls it and never closes it; left to the garbage collector, it becomes a
    ResourceWarning (an error here) in whatever test runs then. Closing it
    after the call keeps the tests deterministic.
    """

    def call() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_event_loop_policy().get_event_loop()
                if not loop.is_running():
                    loop.close()
            asyncio.set_event_loop(None)

    return await asyncio.to_thread(call)


class CellError(AssertionError):
    """A cell raised; the message carries the exception name and value."""

    def __init__(self, ename: str, evalue: str, output: Output) -> None:
        super().__init__(f"{ename}: {evalue}\nstdout: {output.stdout}\nstderr: {output.stderr}")
        self.ename = ename
        self.evalue = evalue
        self.output = output


@dataclass
class Output:
    """Everything one cell sent back."""

    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result / display_data
    error: tuple[str, str] | None = None

    @property
    def text(self) -> str:
        """The text/plain of every result and display, joined by newlines."""
        return "\n".join(str(r.get("text/plain", "")) for r in self.results)

    def add(self, msg: dict[str, Any]) -> None:
        """Record one IOPub message of the cell."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                self.stdout += content["text"]
            else:
                self.stderr += content["text"]
        elif kind in ("execute_result", "display_data"):
            self.results.append(content["data"])
        elif kind == "error":
            self.error = (content["ename"], content["evalue"])

    def data(self, mime: str) -> list[Any]:
        """Every displayed value of one MIME type."""
        return [r[mime] for r in self.results if mime in r]


class Kernel:
    """A python3 kernel started in ``cwd``; :meth:`run` executes a cell."""

    def __init__(self, manager: KernelManager, client: Any, cwd: Path) -> None:
        self.manager = manager
        self.client = client
        self.cwd = cwd

    def run(self, code: str, *, timeout: float = 60.0, allow_error: bool = False) -> Output:
        """Execute ``code`` as one cell; raise :class:`CellError` if it raised."""
        out = Output()
        reply = self.client.execute_interactive(code, output_hook=out.add, timeout=timeout)
        content = reply["content"]
        if content["status"] == "error" and out.error is None:
            # UsageError from a magic: printed to stderr, named only in the reply.
            out.error = (content.get("ename", ""), content.get("evalue", ""))
        if out.error is not None and not allow_error:
            raise CellError(*out.error, output=out)
        return out

    def create_subshell(self, *, timeout: float = 30.0) -> str:
        """A new ipykernel subshell (a thread of its own); returns its id."""
        request = self.client.session.msg("create_subshell_request", {})
        self.client.control_channel.send(request)
        reply = self.client.control_channel.get_msg(timeout=timeout)
        return str(reply["content"]["subshell_id"])

    def send_to_widget(
        self, comm_id: str, content: dict[str, Any], *, subshell_id: str | None = None
    ) -> None:
        """Send a custom widget message, as a front end's ``model.send(content)`` does."""
        msg = self.client.session.msg(
            "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": content}}
        )
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        self.client.shell_channel.send(msg)

    def wait_for_widget_message(
        self, comm_id: str, kind: str, *, timeout: float = 15.0
    ) -> dict[str, Any]:
        """The next custom message of ``type`` ``kind`` the widget sends to its front end."""
        for msg in self._iopub_until(time.monotonic() + timeout):
            content = msg["content"]
            data = content.get("data", {}) if msg["msg_type"] == "comm_msg" else {}
            custom = data.get("content", {}) if data.get("method") == "custom" else {}
            if content.get("comm_id") == comm_id and custom.get("type") == kind:
                return dict(custom)
        raise TimeoutError(f"the widget sent no {kind!r} message within {timeout} s")

    def _iopub_until(self, deadline: float) -> Iterator[dict[str, Any]]:
        """IOPub messages as they come, until ``time.monotonic()`` passes ``deadline``."""
        while time.monotonic() < deadline:
            try:
                yield self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue

    def run_in_subshell(self, code: str, *, timeout: float = 30.0) -> Output:
        """Execute ``code`` in a new ipykernel subshell (a thread of its own)."""
        subshell_id = self.create_subshell(timeout=timeout)
        execute = self.client.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        execute["header"]["subshell_id"] = subshell_id
        self.client.shell_channel.send(execute)
        out = Output()
        for msg in self._iopub_until(time.monotonic() + timeout):
            if msg["parent_header"].get("msg_id") != execute["header"]["msg_id"]:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
            out.add(msg)
        raise TimeoutError(f"the subshell did not finish within {timeout} s")

    def value(self, expression: str, *, timeout: float = 60.0) -> Any:
        """Evaluate ``expression`` in the kernel and return it (through its repr)."""
        import ast

        text = self.run(expression, timeout=timeout).text
        return ast.literal_eval(text)


@contextlib.contextmanager
def running_kernel(cwd: Path, env: dict[str, str] | None = None) -> Iterator[Kernel]:
    """Start a kernel of this interpreter in ``cwd`` and shut it down afterwards."""
    environment = dict(os.environ)
    # The kernel must import this checkout, not whatever is installed elsewhere.
    root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, environment.get("PYTHONPATH", "")) if p
    )
    environment.update(env or {})
    manager, client = start_new_kernel(
        kernel_name="python3",
        cwd=str(cwd),
        env=environment,
        startup_timeout=60,
    )
    try:
        yield Kernel(manager, client, cwd)
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=False)
