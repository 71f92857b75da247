"""Shared fixtures: one Prefect test server per session, a clean environment, local fakes."""

from __future__ import annotations

import importlib
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.fakes.slack import FakeSlack, start_fake_slack

# The PostgreSQL server and per-test databases (started only by tests that ask for them).
pytest_plugins = ("tests.pg_fixture",)

DEMO_DIR = Path(__file__).resolve().parents[1] / "triage" / "demo"
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# Modules that draw from the global ``random`` module in Prefect's background threads: the
# events client's websocket keepalive pings and reconnect backoff, and delivery retry jitter.
_BACKGROUND_RANDOM_USERS = (
    "websockets.asyncio.connection",
    "websockets.client",
    "prefect._internal._observation_delivery",
)


def _private_random_for_background_threads() -> None:
    """Give the modules Prefect runs in background threads their own random generator.

    Hypothesis checks that a strategy leaves the global ``random`` state untouched and warns
    ("Do not use the `random` module inside strategies") when it changes during a draw. The
    events client keeps a websocket open to the test server, and a keepalive ping that lands in
    the middle of any fuzz test's draw changed that state from another thread, so a full run now
    and then warned about an innocent test. A private generator per module keeps pings out of
    the global state while the warning stays live for our own strategies.
    """
    for name in _BACKGROUND_RANDOM_USERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue  # private modules: an older or newer Prefect or websockets may not have one
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API for the whole session: flows run for real, once per test.

    ``make mutation`` sets TRIAGE_TESTS_WITHOUT_PREFECT: it runs only tests that never touch
    Prefect, hundreds of times over, and a harness per run would cost more than the tests.
    """
    if os.environ.get("TRIAGE_TESTS_WITHOUT_PREFECT"):
        yield
        return
    _private_random_for_background_threads()
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's tokens or configuration; each has its own outbox folder."""
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "TRIAGE_CONFIG",
        "TRIAGE_DB",
        "TRIAGE_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(tmp_path / "outbox"))


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """The local fake Slack Web API, with the client pointed at it through the environment."""
    state, server = start_fake_slack()
    monkeypatch.setenv("SLACK_BOT_TOKEN", state.token)
    monkeypatch.setenv("SLACK_API_URL", state.url)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """A private copy of the bundled demo configuration and feeds, safe to modify."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, target)
    return target / "triage.yaml"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh DuckDB file path."""
    return tmp_path / "triage.duckdb"
