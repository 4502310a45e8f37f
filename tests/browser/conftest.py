"""Browser tests: a real JupyterLab driven by headless Chromium (Playwright).

They need Playwright (the Python package, ``pip install playwright``) and the
system Chromium at ``/usr/bin/chromium`` (``scripts/install-browser``); Playwright's
own browser downloads are never used. Without them the tests are skipped on a
developer machine, but fail in CI (``CI`` set): a CI run that silently skipped
every browser test would prove nothing.

Fixtures:

- ``lab_server`` (session): one ``jupyter lab`` for the whole run, isolated from
  the user's configuration, offline (no news, no update check), see
  :class:`LabServer`.
- ``browser`` (module): Chromium launched through the Playwright *sync* API.
- ``page`` (function): a fresh browser context and page per test. It records
  every request and WebSocket URL (``page.requests_seen``), the browser console
  (``page.console_lines``) and one line per kernel WebSocket frame
  (``page.kernel_messages``, e.g. "-> shell execute_request"). On failure a
  screenshot (its path; the directory is ``$BROWSER_ARTIFACTS_DIR`` or a fresh
  temporary one), the console, the kernel messages and the tail of the Lab log
  are attached to the test report. At teardown every kernel is shut down.

Drive notebooks with the helpers of ``lab.py``.

Browser tests are *sync* tests. While Playwright's sync API is alive it marks
its own event loop as the running loop of the main thread, so ``asyncio.run``
and pytest-asyncio cannot run while it is: not in a test that uses ``page``, and
not in a later test of the same module either. That is why ``browser`` is
module-scoped (Playwright stops when the module's tests are done, and the async
tests of other modules run as usual): keep modules that use ``page`` free of
async tests and async fixtures, and do a browser test's asyncio work in a thread.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.ci import skip_or_fail

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, WebSocket

CHROMIUM = Path("/usr/bin/chromium")
#: Headless Chromium as root, offline: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "scripts/install-browser, and pip install -e '.[test]'"

#: Seconds JupyterLab may take to answer /api/status after it was started.
LAB_START_TIMEOUT = 60.0
#: Seconds JupyterLab may take to exit after /api/shutdown (then SIGTERM, SIGKILL).
LAB_STOP_TIMEOUT = 20.0
_LOG_TAIL_LINES = 60

#: Front-end plugins that would talk to the internet or pop up toasts that
#: cover the notebook: the "Would you like to receive official Jupyter news?"
#: announcements (news feed, update check).
_DISABLED_LAB_PLUGINS = [
    "@jupyterlab/apputils-extension:announcements",
]


def missing_browser_install() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return f"the Python package playwright is not installed (run: {INSTALL_HINT})"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (run: {INSTALL_HINT})"
    if importlib.util.find_spec("jupyterlab") is None:
        return f"jupyterlab is not installed (run: {INSTALL_HINT})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/browser with ``browser``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True, scope="session")
def _require_browser_install() -> None:
    """Skip (locally) or fail (in CI) when Playwright or Chromium is missing.

    Session-scoped so that it runs before ``lab_server`` starts JupyterLab.
    """
    skip_or_fail(missing_browser_install())


# --------------------------------------------------------------------------- JupyterLab


@dataclass
class LabServer:
    """A running ``jupyter lab`` subprocess."""

    url: str  # "http://127.0.0.1:PORT/", with the trailing slash
    token: str
    root_dir: Path  # notebooks go here (see lab.write_notebook)
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Call the Jupyter REST API (``path`` like ``"api/sessions"``); the JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def shutdown_kernels(self) -> None:
        """Shut down every kernel (and its session), e.g. after a test."""
        for kernel in self.api("GET", "api/kernels"):
            with contextlib.suppress(urllib.error.HTTPError):
                self.api("DELETE", f"api/kernels/{kernel['id']}", timeout=30.0)


def _write_lab_config(config_dir: Path) -> None:
    """An isolated Jupyter config dir for an offline, quiet JupyterLab."""
    config_dir.mkdir(parents=True, exist_ok=True)
    server_config = {
        "LabApp": {
            # No news feed and no "a new JupyterLab is available" check.
            "news_url": None,
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            # No PyPI queries from the extension manager.
            "extension_manager": "readonly",
            # window.jupyterapp, so that tests can run JupyterLab commands
            # (lab.run_command), e.g. switch to the dark theme.
            "expose_app_in_browser": True,
        },
    }
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(server_config))
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(exist_ok=True)
    page_config = {"disabledExtensions": dict.fromkeys(_DISABLED_LAB_PLUGINS, True)}
    (labconfig / "page_config.json").write_text(json.dumps(page_config))
    # User settings (JUPYTERLAB_SETTINGS_DIR points here): never fetch news or
    # check for updates, and keep every cell in the DOM so that cell indices
    # and locators do not depend on scrolling.
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    user_settings = {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }
    for plugin, values in user_settings.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _wait_for_server_info(runtime_dir: Path, process: subprocess.Popen[bytes]) -> int:
    """The port from the server's ``jpserver-PID.json`` once it is written."""
    info_file = runtime_dir / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + LAB_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {process.returncode}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(info_file.read_text())["port"])
        time.sleep(0.1)
    raise RuntimeError(f"jupyter lab wrote no {info_file.name} within {LAB_START_TIMEOUT} s")


def _wait_for_status(url: str, token: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LAB_START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError) as e:
            last_error = e
        time.sleep(0.1)
    raise RuntimeError(f"jupyter lab did not answer /api/status: {last_error}")


def _stop_lab(lab: LabServer) -> list[str]:
    """Stop the server and its kernels; the problems seen (empty when clean)."""
    import psutil

    problems: list[str] = []
    process = lab.process
    try:
        kernels = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kernels = []
    if process.poll() is None:
        try:
            lab.api("POST", "api/shutdown", timeout=10.0)  # also shuts down kernels
        except (OSError, urllib.error.URLError) as e:
            problems.append(f"POST /api/shutdown failed: {e}")
        try:
            process.wait(LAB_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"jupyter lab still ran {LAB_STOP_TIMEOUT} s after /api/shutdown")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    if process.returncode not in (0, -signal.SIGTERM):
        problems.append(f"jupyter lab exited with status {process.returncode}")
    _gone, alive = psutil.wait_procs(kernels, timeout=10)
    for child in alive:
        problems.append(f"child process {child.pid} outlived jupyter lab; killed")
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    return problems


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """One JupyterLab for the session, on 127.0.0.1 at a free port.

    Isolated: its own config dir (offline settings, see ``_write_lab_config``),
    runtime dir, workspaces dir and IPython dir; the data dir stays the default
    one, where the installed lab extensions (ipywidgets, anywidget) live.
    """
    base = tmp_path_factory.mktemp("jupyterlab")
    root_dir = base / "root"
    config_dir = base / "config"
    runtime_dir = base / "runtime"
    workspaces_dir = base / "workspaces"
    for d in (root_dir, runtime_dir, workspaces_dir, base / "notary"):
        d.mkdir()
    _write_lab_config(config_dir)
    token = secrets.token_hex(24)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(workspaces_dir),
        "JUPYTERLAB_SETTINGS_DIR": str(config_dir / "lab" / "user-settings"),
        "IPYTHONDIR": str(base / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",  # no platformdirs deprecation warning in the log
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("JUPYTER_TOKEN", None)
    env.pop("JUPYTER_PORT", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--LabApp.workspaces_dir={workspaces_dir}",
        "--ServerApp.allow_root=True",
        # The notebook-trust database and signing key, not in the user's data dir.
        f"--NotebookNotary.data_dir={base / 'notary'}",
    ]
    log_path = base / "jupyterlab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest does not hit it mid-teardown
        )
    lab = LabServer(url="", token=token, root_dir=root_dir, log_path=log_path, process=process)
    try:
        port = _wait_for_server_info(runtime_dir, process)
        lab.url = f"http://127.0.0.1:{port}/"
        _wait_for_status(lab.url, token, process)
    except BaseException as e:
        problems = _stop_lab(lab)
        pytest.fail(
            f"JupyterLab did not start: {e}\n{problems}\n--- {log_path} (tail) ---\n"
            f"{lab.log_tail()}",
            pytrace=False,
        )
    yield lab
    problems = _stop_lab(lab)
    assert not problems, f"{problems}\n--- {log_path} (tail) ---\n{lab.log_tail()}"


# --------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (the system one) via the Playwright sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed browser test: attach a screenshot path, the console and the Lab log."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        page = funcargs.get("page")
        if page is not None:
            report.sections.extend(_failure_sections(item, page, funcargs.get("lab_server")))
    return report


def _failure_sections(
    item: pytest.Item, page: Page, lab: LabServer | None
) -> list[tuple[str, str]]:
    sections = []
    shot_dir = Path(os.environ.get("BROWSER_ARTIFACTS_DIR") or _default_artifacts_dir())
    shot_dir.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.nodeid)[-150:]
    shot = shot_dir / f"{name}.png"
    try:
        page.screenshot(path=str(shot), full_page=True, timeout=10_000)
        text = str(shot)
    except Exception as e:  # a crashed or hung page must not hide the test's failure
        text = f"(no screenshot: {e})"
    print(f"\nscreenshot of the failed browser test: {text}", file=sys.stderr)
    sections.append(("browser screenshot", text))
    console = getattr(page, "console_lines", None)
    if console:
        sections.append(("browser console", "\n".join(console[-80:])))
    kernel_messages = getattr(page, "kernel_messages", None)
    if kernel_messages:
        sections.append(("kernel messages (last 80)", "\n".join(kernel_messages[-80:])))
    if lab is not None:
        sections.append(("jupyterlab log (tail)", lab.log_tail()))
    return sections


_artifacts_dir: Path | None = None


def _default_artifacts_dir() -> Path:
    global _artifacts_dir
    if _artifacts_dir is None:
        import tempfile

        _artifacts_dir = Path(tempfile.mkdtemp(prefix="browser-test-artifacts-"))
    return _artifacts_dir


_MSG_TYPE = re.compile(rb'"msg_type"\s*:\s*"(\w+)"')
_CHANNEL = re.compile(rb'"channel"\s*:\s*"(\w+)"')


def _summary(direction: str, payload: str | bytes) -> str:
    """ "-> shell execute_request": a kernel WebSocket frame in a few words.

    Works for JSON frames and for the binary v1 kernel protocol alike, which
    carries the channel name and the JSON header as text.
    """
    raw = payload.encode(errors="replace") if isinstance(payload, str) else payload
    msg_type = _MSG_TYPE.search(raw)
    channel = _CHANNEL.search(raw)
    if channel is None and isinstance(payload, bytes) and len(payload) > 16:
        # v1 protocol: offsets (8 bytes each), then the channel name.
        channel = re.search(rb"(shell|iopub|stdin|control)", payload[:200])
    return " ".join(
        [
            direction,
            channel.group(1).decode() if channel else "?",
            msg_type.group(1).decode() if msg_type else f"({len(raw)} bytes)",
        ]
    )


@pytest.fixture
def page(browser: Browser, lab_server: LabServer) -> Iterator[Page]:
    """A fresh context and page for one test.

    Extra attributes: ``page.requests_seen`` (the URL of every request and
    WebSocket, in order; see ``lab.non_local_requests``) and
    ``page.console_lines`` (the browser console, "type: text") and
    ``page.kernel_messages`` (one line per kernel WebSocket frame: direction,
    channel, msg_type; shown in the report of a failed test).
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    new_page = context.new_page()
    requests_seen: list[str] = []
    console_lines: list[str] = []
    kernel_messages: list[str] = []

    def on_request(request: Request) -> None:
        requests_seen.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        console_lines.append(f"{message.type}: {message.text}")

    def on_websocket(ws: WebSocket) -> None:
        requests_seen.append(ws.url)
        if "/api/kernels/" in ws.url:
            ws.on("framesent", lambda payload: kernel_messages.append(_summary("->", payload)))
            ws.on("framereceived", lambda payload: kernel_messages.append(_summary("<-", payload)))

    new_page.on("request", on_request)
    new_page.on("websocket", on_websocket)
    new_page.on("console", on_console)
    new_page.on("pageerror", lambda error: console_lines.append(f"pageerror: {error}"))
    new_page.requests_seen = requests_seen  # type: ignore[attr-defined]
    new_page.console_lines = console_lines  # type: ignore[attr-defined]
    new_page.kernel_messages = kernel_messages  # type: ignore[attr-defined]
    try:
        yield new_page
    finally:
        context.close()
        lab_server.shutdown_kernels()
