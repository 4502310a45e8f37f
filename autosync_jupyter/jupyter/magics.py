"""The ``%autosync`` line magic: a sync server, documents and widgets from notebook cells.

``%autosync --help`` lists the subcommands; ``%autosync SUBCOMMAND --help``
explains one. Every subcommand runs in the kernel's main thread; the server
of ``serve`` lives in the kernel's event loop and keeps serving between and
during cells.
"""

from __future__ import annotations

import argparse
import html
import json
import keyword
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display as _display

from ..auth.tls import client_ssl_context
from ..crdt.document import Document
from ..crdt.history import ChangeRecord
from ..errors import AutosyncError
from ..ids import document_url
from ..runtime.client import fetch
from ..runtime.connection import DocHandle
from ..runtime.options import add_serve_arguments, server_from_arguments
from ..runtime.server import SyncServer
from ..wording import counted
from .session import KernelSession, current_session

__all__ = ["AutosyncMagics", "ServerStatus"]

#: The variable ``%autosync fetch`` and ``%autosync open`` bind without ``-o``.
DEFAULT_VARIABLE = "doc"
#: The variable ``%autosync login`` binds the token to without ``-o``.
DEFAULT_TOKEN_VARIABLE = "autosync_token"


def display(obj: object) -> None:
    """Show ``obj`` in the cell's output (rich display)."""
    _display(obj)  # type: ignore[no-untyped-call,unused-ignore]


class _HelpShown(Exception):
    """argparse printed help (or the version): nothing more to do."""


class _Parser(argparse.ArgumentParser):
    # argparse exits the process on --help and on errors; a kernel must not.
    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            raise UsageError(message or "invalid arguments")
        raise _HelpShown()

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\n(see `{self.prog} --help`)")


def _parser() -> _Parser:
    parser = _Parser(
        prog="%autosync",
        description="Automerge sync from a notebook: a server in this kernel, documents "
        "fetched into variables, live documents, a document browser and OIDC login.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def command(name: str, help: str, description: str | None = None) -> _Parser:
        made: _Parser = sub.add_parser(name, help=help, description=description or help)
        return made

    serve = command(
        "serve",
        "start a sync server in this kernel (returns at once; it keeps serving)",
        "Start an automerge-repo sync server in this kernel's event loop. The socket is "
        "listening when the magic returns; JavaScript, Rust, R and Python peers can connect "
        "to the printed URL. One server per kernel; `%autosync stop` ends it.",
    )
    add_serve_arguments(serve, default_port=0)

    command("stop", "stop this kernel's server (peers see a clean close)")
    command("status", "this kernel's server: URL, documents, connected peers")

    create = command("create", "make a new document (on this kernel's server by default)")
    create.add_argument("--name", metavar="VAR", help="bind a live handle of it to VAR")
    create.add_argument(
        "--content", metavar="JSON", help='initial content, a JSON object: \'{"title": "x"}\''
    )
    create.add_argument("--url", help="make it on this server instead of the kernel's")
    _client_options(create)

    for name, what in (
        ("fetch", "fetch a document into a variable (a snapshot: a Document)"),
        ("open", "bind a LIVE document handle to a variable: edits flow both ways"),
    ):
        p = command(
            name,
            what,
            f"{what}. With one argument, DOC is fetched from this kernel's server. "
            f"VAR defaults to `{DEFAULT_VARIABLE}`.",
        )
        p.add_argument("target", nargs="+", metavar="[URL] DOC", help="server URL and document")
        p.add_argument("-o", "--output", metavar="VAR", default=DEFAULT_VARIABLE)
        p.add_argument(
            "--allow-empty",
            action="store_true",
            help="accept an empty document when the server answers with one (a server "
            "that creates documents on request) instead of failing",
        )
        _client_options(p)

    docs = command("docs", "show the document browser (this kernel's server, or URL)")
    docs.add_argument("url", nargs="?", help="a remote server (lists what is open on it)")
    _client_options(docs)

    view = command("view", "show a live view of a document held in a variable")
    view.add_argument("variable", metavar="VAR")

    history = command(
        "history",
        "print the changes of a document held in a variable, newest last",
        "Print the history of the document in VAR (a Document or a live handle): one line "
        "per change with its time (or 'time unknown'), author (actor), sequence number, "
        "message and hash, oldest first, the newest last. In Python: VAR.history().",
    )
    history.add_argument("variable", metavar="VAR")
    history.add_argument(
        "-n",
        "--last",
        type=int,
        default=20,
        metavar="N",
        help="show the last N changes (default: 20; 0: all)",
    )

    share = command(
        "share",
        "publish a notebook document to JupyterLab (the Automerge panel), live",
        "Publish the document in VAR (a Document, a live handle or a dict) to the Jupyter "
        "server's sync hub, where the Automerge panel of JupyterLab opens it live: browser "
        "edits show up in VAR, kernel edits in the browser. A dict in VAR is replaced by the "
        "live handle.",
    )
    share.add_argument("variable", metavar="VAR")
    share.add_argument("--url", help="the hub's ws://.../autosync/ws URL (default: this server)")
    share.add_argument("--token", metavar="VAR", help="variable holding the Jupyter token")

    login = command(
        "login",
        "show the sign-in widget (OIDC: popup with PKCE, device code when remote)",
    )
    login.add_argument("--issuer", help="OIDC issuer (default: $OIDC_ISSUER, then Google)")
    login.add_argument("--client-id", help="OAuth client id (default: $OIDC_CLIENT_ID)")
    login.add_argument(
        "--flow",
        choices=["auto", "browser", "callback", "device"],
        default="auto",
        help="auto (default): loopback redirect when the browser is on this machine, else "
        "the Jupyter server's callback page, else a device code; or force one",
    )
    login.add_argument("--device", action="store_true", help="same as --flow device")
    login.add_argument("-o", "--output", metavar="VAR", default=DEFAULT_TOKEN_VARIABLE)
    return parser


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", metavar="VAR", help="variable holding an ID token (or a login widget)"
    )
    parser.add_argument("--cafile", help="PEM certificate to trust for wss:// (self-signed)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default: 30)")


def history_table(history: Sequence[ChangeRecord], *, last: int = 20) -> str:
    """The lines ``%autosync history`` prints: the last ``last`` changes (0: all), newest last.

    >>> from autosync_jupyter import Document
    >>> doc = Document({"n": 1})
    >>> print(history_table(doc.history()).splitlines()[0])
    1 change
    """
    total = len(history)
    shown = history[-last:] if last else history[:]
    lines = [counted(total, "change") + (f", the last {len(shown)}" if len(shown) < total else "")]
    if not shown:
        return lines[0]
    rows = [
        (record.when, record.actor[:8], str(record.seq), record.message or "", record.hash[:12])
        for record in shown
    ]
    header = ("time", "actor", "seq", "message", "hash")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    widths[3] = min(widths[3], 60)
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2])]
        message = row[3] if len(row[3]) <= 60 else row[3][:59] + "…"
        cells += [message.replace("\n", " ").ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _check_variable(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{name!r} is not a valid Python variable name")
    return name


class ServerStatus:
    """What ``%autosync status`` shows: a table in notebooks, text elsewhere."""

    def __init__(self, server: SyncServer | None) -> None:
        self.url = server.url if server is not None else None
        self.data_dir = server.data_location if server is not None else None
        self.documents = server.document_summaries() if server is not None else []
        self.peers = (
            [(p.peer_id, p.remote_address or "") for p in server.hub.peers() if not p.upstream]
            if server is not None
            else []
        )
        #: ``(url, state)`` of each upstream server: joined, or why not.
        self.upstreams = (
            [
                (u.shown, "joined" if u.joined.is_set() else (u.last_error or "connecting"))
                for u in server.upstreams
            ]
            if server is not None
            else []
        )

    def __repr__(self) -> str:
        if self.url is None:
            return "no autosync server runs in this kernel (`%autosync serve` starts one)"
        lines = [
            f"autosync server at {self.url} (data: {self.data_dir or 'memory'})",
            f"{counted(len(self.documents), 'document')}, {counted(len(self.peers), 'peer')}",
        ]
        lines += [
            f"  {d.document_id}  {counted(len(d.heads), 'head')}  {counted(d.peers, 'peer')}"
            for d in self.documents
        ]
        lines += [f"  peer {peer} from {address}" for peer, address in self.peers]
        lines += [f"  upstream {url}: {state}" for url, state in self.upstreams]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if self.url is None:
            return f"<p>{html.escape(repr(self))}</p>"
        rows = "".join(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(document_url(d.document_id)),
                "" if d.size is None else f"{d.size:,} B",
                html.escape(", ".join(h[:8] for h in d.heads)),
                d.peers,
            )
            for d in self.documents
        )
        peers = "".join(
            f"<li><code>{html.escape(peer)}</code> from {html.escape(address)}</li>"
            for peer, address in self.peers
        )
        upstreams = "".join(
            f"<div>upstream <code>{html.escape(url)}</code>: {html.escape(state)}</div>"
            for url, state in self.upstreams
        )
        return (
            f"<div class='autosync-status'><b>autosync server</b> at "
            f"<code>{html.escape(self.url)}</code> (data: "
            f"{html.escape(self.data_dir or 'memory')})"
            f"<table><thead><tr><th>document</th><th>size</th><th>heads</th><th>peers</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
            f"<div>{counted(len(self.peers), 'connected peer')}</div><ul>{peers}</ul>"
            f"{upstreams}</div>"
        )


@magics_class
class AutosyncMagics(Magics):
    """``%autosync``: see ``%autosync --help``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call,unused-ignore]
        self._parser = _parser()
        self._commands: dict[str, Callable[[argparse.Namespace], None]] = {
            "serve": self._serve,
            "stop": self._stop,
            "status": self._status,
            "create": self._create,
            "fetch": self._fetch,
            "open": self._open,
            "docs": self._docs,
            "view": self._view,
            "history": self._history,
            "login": self._login,
            "share": self._share,
        }

    @line_magic  # type: ignore[untyped-decorator,unused-ignore]
    def autosync(self, line: str) -> None:
        """Automerge sync from a notebook; ``%autosync --help`` lists the subcommands."""
        try:
            # A trailing "# ..." is a comment, as on any other line of a cell.
            args = self._parser.parse_args(shlex.split(line, comments=True))
        except _HelpShown:
            return
        try:
            self._commands[args.command](args)
        except AutosyncError as exc:
            raise UsageError(f"%autosync {args.command}: {exc}") from None
        except (ValueError, OSError) as exc:
            raise UsageError(f"%autosync {args.command}: {exc}") from None

    # -- helpers -----------------------------------------------------------------

    @property
    def _session(self) -> KernelSession:
        session = current_session()
        assert session is not None
        return session

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _token(self, args: argparse.Namespace) -> str | None:
        if args.token is None:
            return None
        name = _check_variable(args.token)
        if name not in self._ns:
            raise UsageError(f"--token {name}: no such variable")
        value = self._ns[name]
        token = getattr(value, "token", value)  # a LoginWidget holds its token
        if not isinstance(token, str) or not token:
            raise UsageError(f"--token {name}: the variable holds no token (sign in first)")
        return token

    def _ssl(self, args: argparse.Namespace) -> Any:
        return client_ssl_context(args.cafile) if args.cafile else None

    def _url_and_doc(self, target: Sequence[str]) -> tuple[str, str]:
        if len(target) == 1:
            return self._session.require_server().url, target[0]
        if len(target) == 2:
            return target[0], target[1]
        raise UsageError("expected [URL] DOC")

    # -- subcommands -------------------------------------------------------------

    def _serve(self, args: argparse.Namespace) -> None:
        session = self._session
        session.require_kernel("%autosync serve")
        session.check_no_server()  # before a certificate is made for nothing
        server, notes = server_from_arguments(args)
        started = time.perf_counter()
        session.run(session.start_server(server), "%autosync serve")
        elapsed = (time.perf_counter() - started) * 1000
        for note in notes:
            print(note)
        where = server.data_location if server.data_location != "memory" else "memory only"
        print(f"autosync server listening on {server.url} (data: {where}; {elapsed:.0f} ms)")
        for upstream in server.upstreams:
            if upstream.joined.is_set():
                print(f"upstream {upstream.shown}: joined")
            else:
                why = upstream.last_error or "connecting"
                print(f"upstream {upstream.shown}: {why} (retrying in the background)")
        print(
            "Connect a peer: new Repo({ network: [new WebSocketClientAdapter("
            f'"{server.url}")] }}); then repo.find("automerge:<id>").\n'
            "Make a document: %autosync create --name doc"
        )

    def _stop(self, args: argparse.Namespace) -> None:
        url = self._session.run(self._session.stop_server(), "%autosync stop")
        print(f"stopped the server at {url}" if url else "no server was running in this kernel")

    def _status(self, args: argparse.Namespace) -> None:
        session = current_session(create=False)
        server = session.server if session is not None else None
        display(ServerStatus(server if server is not None and server.running else None))

    def _create(self, args: argparse.Namespace) -> None:
        content = None
        if args.content is not None:
            try:
                content = json.loads(args.content)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--content is not JSON: {exc}") from None
            if not isinstance(content, dict):
                raise UsageError("--content must be a JSON object")
        name = _check_variable(args.name) if args.name else None
        session = self._session
        doc_id: str
        if args.url is None:
            server = session.require_server()
            doc_id = session.run(server.create_document(content), "%autosync create")
            url = server.url
        else:
            url = args.url

            async def create_remote() -> str:
                conn = await session.connection(url, token=self._token(args), ssl=self._ssl(args))
                handle = await conn.create(content, timeout=args.timeout)
                return handle.document_id

            doc_id = session.run(create_remote(), "%autosync create")
        print(document_url(doc_id))
        if name is not None:
            self._bind_live(url, doc_id, name, args)

    def _bind_live(self, url: str, doc_id: str, name: str, args: argparse.Namespace) -> None:
        session = self._session

        async def open_live() -> Any:
            conn = await session.connection(url, token=self._token(args), ssl=self._ssl(args))
            allow_empty = getattr(args, "allow_empty", False)  # not an option of create
            return await conn.open(doc_id, timeout=args.timeout, allow_empty=allow_empty)

        self._ns[name] = session.run(open_live(), "%autosync open")
        print(f"`{name}` is live: edit with `with {name}.change() as d: ...`")

    def _fetch(self, args: argparse.Namespace) -> None:
        name = _check_variable(args.output)
        url, doc_id = self._url_and_doc(args.target)
        document = self._session.run(
            fetch(
                url,
                doc_id,
                token=self._token(args),
                ssl=self._ssl(args),
                timeout=args.timeout,
                allow_empty=args.allow_empty,
            ),
            "%autosync fetch",
        )
        self._ns[name] = document
        print(f"fetched into `{name}` ({len(document.heads)} heads)")

    def _open(self, args: argparse.Namespace) -> None:
        name = _check_variable(args.output)
        url, doc_id = self._url_and_doc(args.target)
        self._bind_live(url, doc_id, name, args)

    def _docs(self, args: argparse.Namespace) -> None:
        from .browser import DocumentBrowser

        session = self._session
        session.require_kernel("%autosync docs")
        if args.url is None:
            display(DocumentBrowser(session.require_server()))
            return
        conn = session.run(
            session.connection(args.url, token=self._token(args), ssl=self._ssl(args)),
            "%autosync docs",
        )
        display(DocumentBrowser(conn))

    def _view(self, args: argparse.Namespace) -> None:
        from .live_view import LiveView

        name = _check_variable(args.variable)
        if name not in self._ns:
            raise UsageError(f"no variable named {name!r}")
        self._session.require_kernel("%autosync view")
        display(LiveView(self._ns[name], title=name))

    def _history(self, args: argparse.Namespace) -> None:
        name = _check_variable(args.variable)
        if name not in self._ns:
            raise UsageError(f"no variable named {name!r}")
        value = self._ns[name]
        document = value.doc if isinstance(value, DocHandle) else value
        if not isinstance(document, Document):
            raise UsageError(
                f"{name} holds a {type(value).__name__}, not a Document or a live handle"
            )
        if args.last < 0:
            raise UsageError("-n must be 0 (all) or more")
        print(history_table(document.history(), last=args.last))

    def _share(self, args: argparse.Namespace) -> None:
        from .share import share

        name = _check_variable(args.variable)
        if name not in self._ns:
            raise UsageError(f"no variable named {name!r}")
        value = self._ns[name]
        try:
            handle = share(value, url=args.url, token=self._token(args))
        except TypeError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(value, (Document, DocHandle)):
            self._ns[name] = handle
        print(f"shared `{name}` as {handle.url}: open it from JupyterLab's Automerge panel")

    def _login(self, args: argparse.Namespace) -> None:
        from .login_widget import LoginWidget

        name = _check_variable(args.output)
        self._session.require_kernel("%autosync login")
        widget = LoginWidget(
            args.client_id, issuer=args.issuer, flow="device" if args.device else args.flow
        )

        def bind(token: str) -> None:
            self._ns[name] = token

        widget.on_login(bind)
        display(widget)
