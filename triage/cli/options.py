"""Options, error exits and the store-opening path shared by the ``triage`` sub-commands."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from triage.config import Config
    from triage.store import Store

T = TypeVar("T")

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Configuration file (default: TRIAGE_CONFIG, ./triage.yaml, demo)."
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="DuckDB file or postgresql:// URL (default: TRIAGE_DB or the config's)."
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_config_or_exit(config: str | None, db: str | None = None) -> Config:
    """The validated configuration, or exit 2 with the problems (file, line and key of each)."""
    from flows.settings import load_config
    from triage.config import ConfigError

    try:
        return load_config(config, database=db)
    except ConfigError as exc:
        fail(str(exc), 2)


def lock_wait_or_exit() -> float:
    """``TRIAGE_LOCK_WAIT``: seconds to wait for a running flow to release the store (30).

    README documents it as a number of seconds; anything else (``30s``, ``-1``) exits 2 with one
    line naming the variable instead of a ValueError from deep inside the store.
    """
    raw = os.environ.get("TRIAGE_LOCK_WAIT") or "30"
    try:
        wait_s = float(raw)
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s < float("inf"):  # also refuses nan and inf
        fail(f"TRIAGE_LOCK_WAIT must be a number of seconds such as 30, not {raw!r}", 2)
    return wait_s


def bind_or_exit(make: Callable[[], T], host: str, port: int) -> T:
    """``make()`` (a server that binds ``host:port``), or exit 2 with one line saying why not.

    A busy port, an unknown host or a port outside 0-65535 is something to fix before starting,
    like a configuration error; nothing has been started yet, so exiting here leaves no thread.
    """
    try:
        return make()
    except OverflowError:
        # socket.bind's answer to a port outside 0-65535 ("bind(): port must be 0-65535.").
        fail(f"cannot listen on {host}:{port}: the port must be 0-65535", 2)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        fail(f"cannot listen on {host}:{port}: {reason}", 2)


def writable_or_exit(path: Path, *, folder: bool = False) -> None:
    """Exit 2 with one line unless ``path`` (a file, or with ``folder`` a folder) can be written.

    Checked before the work, not after it: an output path under a regular file, or a folder
    given where a file goes, ended a report, an export or a whole training in a traceback.
    The folder that will hold it is created here, as the command would create it anyway.
    """
    if not folder and path.is_dir():
        fail(f"cannot write {path}: it is a folder; give a file name", 2)
    if folder and path.exists() and not path.is_dir():
        fail(f"cannot write into {path}: it is a file, not a folder", 2)
    where = path if folder else path.parent
    from triage.store.location import file_in_the_way

    blocker = file_in_the_way(where)
    if blocker is not None:
        fail(f"cannot write {path}: {blocker} is a file, not a folder", 2)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", 2)
    if not os.access(where, os.W_OK):
        fail(f"cannot write {path}: {where} is not writable", 2)


@contextmanager
def store_or_exit(
    cfg: Config, *, read_only: bool = False, must_exist: bool | None = None
) -> Iterator[Store]:
    """Open the configuration's store, or exit with one line saying why it cannot be used.

    A missing store exits 1 (run ``triage run`` first), a locked one 1 after waiting
    ``TRIAGE_LOCK_WAIT`` seconds (default 30; try again later), a damaged one, a newer schema or
    a file that is not a triage store 2. ``must_exist`` (default: ``read_only``) refuses to
    create a missing store.
    """
    from triage.store import StoreError, location, open_store

    if (read_only if must_exist is None else must_exist) and not location.exists(cfg.database):
        fail(f"no database at {cfg.database} yet; run `triage run` first", 1)
    wait_s = lock_wait_or_exit()
    try:
        with open_store(cfg.database, read_only=read_only, wait_s=wait_s) as store:
            yield store
    except StoreError as exc:
        fail(str(exc), exc.exit_code)
