"""The deployment as users run it: `prefect deploy` from prefect.yaml, a process worker, a real server.

The server is the session's Prefect test server (a real API in its own process). The deployment
is created by `prefect deploy --all` from the repository's own prefect.yaml, and a
`prefect worker start` process runs its flow runs in subprocesses, exactly as in production.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.variables import Variable

from tests.prefect_deploy import deploy, prefect_env, run_and_wait, workers

DEPLOYMENT = "triage/triage-every-15-min"
# The read-back and the weekly digest (issue 16), deployed from the same prefect.yaml.
OTHER_DEPLOYMENTS = ("readback/readback-hourly", "weekly-digest/weekly-digest")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment() -> Iterator[None]:
    """prefect.yaml deployed to the test server, its schedule removed, and a worker polling."""
    env = prefect_env()
    deploy(env)
    with workers(env):
        try:
            yield
        finally:
            for name in ("triage_config", "triage_db"):  # the server is shared with other tests
                Variable.unset(name)


def _run_and_wait(timeout_s: float = 600, name: str = DEPLOYMENT) -> FlowRun:
    return run_and_wait(name, timeout_s)


def _task_run_names(run_id: uuid.UUID) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    return {r.name for r in runs}


def _items(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else 0


def test_a_failed_source_fails_the_deployment_run_and_variables_apply_without_redeploy(
    deployment: None, demo_config: Path, tmp_path: Path
) -> None:
    # The demo's sources plus one whose credentials are missing: it fails after its retries.
    text = demo_config.read_text(encoding="utf-8").replace(
        "sources:\n",
        "sources:\n  - {name: reddit-brand, type: reddit, queries: [nimbus], "
        "auth_url: 'http://127.0.0.1:9', base_url: 'http://127.0.0.1:9'}\n",
        1,
    )
    demo_config.write_text(text, encoding="utf-8")
    first_db, second_db = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    Variable.set("triage_config", str(demo_config), overwrite=True)
    Variable.set("triage_db", str(first_db), overwrite=True)

    run = _run_and_wait()

    assert run.state is not None and run.state.is_failed(), run.state
    assert "reddit-brand" in (run.state.message or "")
    assert "1 of 8 sources failed" in (run.state.message or "")
    names = _task_run_names(run.id)
    sources = ["reddit-brand", "social", "app-reviews", "web-form", "bulk-import"]
    sources += ["blog-comments", "community-forum", "customers"]
    assert names == {f"fetch-and-store[{s}]" for s in sources} | {
        "apply-review-decisions",
        "classify",
        "route",
        "deliver",
        "drift-watch",
        "retention",
    }
    # The other sources were fetched, classified and routed all the same.
    assert _items(first_db) == 233 + 158  # the demo feeds and its recurring customers

    # Change the variable the way the README says (overwrite) and run again, with no redeploy.
    Variable.set("triage_db", str(second_db), overwrite=True)
    again = _run_and_wait()

    assert again.state is not None and again.state.is_failed()
    assert _items(second_db) == 233 + 158  # the new value was read when the run started


def test_readback_and_weekly_digest_deployments_run_from_prefect_yaml(
    deployment: None, demo_config: Path, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    text = demo_config.read_text(encoding="utf-8").replace(
        "outbox_dir: outbox", f"outbox_dir: {outbox}", 1
    )
    demo_config.write_text(text, encoding="utf-8")
    db = tmp_path / "customers.duckdb"
    Variable.set("triage_config", str(demo_config), overwrite=True)
    Variable.set("triage_db", str(db), overwrite=True)
    assert _run_and_wait().state.is_completed()  # type: ignore[union-attr]

    readback = _run_and_wait(name=OTHER_DEPLOYMENTS[0])

    assert readback.state is not None and readback.state.is_completed(), readback.state
    with duckdb.connect(str(db), read_only=True) as con:
        stages = dict(
            con.execute("SELECT stage, count(*) FROM customer_profiles GROUP BY 1").fetchall()
        )
    assert len(stages) == 7 and all(stages.values())  # every lifecycle stage, refreshed

    digest = _run_and_wait(name=OTHER_DEPLOYMENTS[1])

    assert digest.state is not None and digest.state.is_completed(), digest.state
    # No Slack token in the worker's environment: the digest is a preview in the outbox.
    previews = list((outbox / "marketing-channel").glob("digest-*.json"))
    assert len(previews) == 1 and previews[0].stat().st_size > 1000
