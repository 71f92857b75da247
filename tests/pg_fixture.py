"""PostgreSQL fixtures: one real server per test session, one fresh database per test.

The server is started by the project itself (:mod:`triage.pgserver`) unless
``TRIAGE_TEST_PG_URL`` names an existing one (its role needs CREATEDB); it starts only when a
test asks for it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from triage import pgserver


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    """A running PostgreSQL server for the whole session, stopped and deleted at its end."""
    with pgserver.running(os.environ.get("TRIAGE_TEST_PG_URL") or None) as server:
        yield server


@contextlib.contextmanager
def fresh_database(server: pgserver.PgServer, prefix: str = "triage_test") -> Iterator[str]:
    """Create an empty database named ``<prefix>_<random>``, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def pg_url(pg_server: pgserver.PgServer) -> Iterator[str]:
    """The URL of an empty database of its own for one test, dropped afterwards."""
    with fresh_database(pg_server) as url:
        yield url
