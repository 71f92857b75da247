"""Shared fixtures: one Prefect test server per session, a clean environment, local fakes."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[None]:
    """A temporary Prefect API for the whole session: flows run for real, once per test.

    ``make mutation`` sets TRIAGE_TESTS_WITHOUT_PREFECT: it runs only tests that never touch
    Prefect, hundreds of times over, and a harness per run would cost more than the tests.
    """
    if os.environ.get("TRIAGE_TESTS_WITHOUT_PREFECT"):
        yield
        return
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
