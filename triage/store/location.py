"""Where the store lives: a DuckDB file path, or a PostgreSQL URL (``postgresql://…``).

The same ``database:`` setting, ``TRIAGE_DB`` variable and ``--db`` option take either; this module
tells them apart and shows a URL without its password.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

SCHEMES = ("postgresql://", "postgres://")


def is_server(database: str | Path) -> bool:
    """True for a PostgreSQL URL, False for a file path."""
    return isinstance(database, str) and database.lower().startswith(SCHEMES)


def shown(database: str | Path) -> str:
    """The database as it may be printed or logged: a URL loses its password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", str(database))


def exists(database: str | Path) -> bool:
    """Whether there is a store to read: a server is assumed to be there (connecting will tell)."""
    return is_server(database) or Path(database).exists()


def spool_base(database: str | Path) -> Path:
    """Where files that belong beside the store go: beside the file, or ``./triage-<db>``."""
    if not is_server(database):
        return Path(database)
    name = urlsplit(str(database)).path.strip("/") or "triage"
    return Path(f"triage-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}")


def file_in_the_way(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists as something other than a folder.

    ``mkdir(parents=True)`` under a regular file fails with a bare errno; naming the file that
    blocks the path is what lets the user fix it (the store's folder and every output path).
    """
    return next((a for a in (folder, *folder.parents) if a.exists() and not a.is_dir()), None)


def why_not_made(folder: Path, exc: OSError) -> str:
    """Why ``folder`` could not be made or written into, in words the user can act on."""
    blocker = file_in_the_way(folder)
    return f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
