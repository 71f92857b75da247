"""The deployment as users run it: `prefect deploy` from prefect.yaml, a process worker, a real server.

The server is the session's Prefect test server (a real API in its own process). The deployment
is created by `prefect deploy --all` from the repository's own prefect.yaml, and a
`prefect worker start` process runs its flow runs in subprocesses, exactly as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.variables import Variable

from tests.clirun import BIN, REPO, clean_env, run_cli

DEPLOYMENT = "triage/triage-every-15-min"
# The read-back and the weekly digest (issue 16), deployed from the same prefect.yaml.
OTHER_DEPLOYMENTS = ("readback/readback-hourly", "weekly-digest/weekly-digest")
POOL = "triage-pool"  # the work pool prefect.yaml names
# Every scheduled deployment in prefect.yaml (their schedules are removed for the test).
SCHEDULED = (
    DEPLOYMENT,
    *OTHER_DEPLOYMENTS,
    "retrain/retrain-weekly",
    "retrain/retrain-when-due",
    "triage/triage-parallel",
)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return clean_env(
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_LOGGING_LEVEL="WARNING",
    )


def _prefect(*args: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, cwd=REPO, env=_env(), timeout=300, program="prefect")
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def deployment() -> Iterator[None]:
    """prefect.yaml deployed to the test server, its schedule removed, and a worker polling."""
    _prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    _prefect("--no-prompt", "deploy", "--all")

    async def unschedule() -> None:
        # The cron schedules would add runs of their own during the test; only ours should run.
        async with get_client() as client:
            deps = [await client.read_deployment_by_name(name) for name in SCHEDULED]
            for dep in deps:
                for schedule in await client.read_deployment_schedules(dep.id):
                    await client.delete_deployment_schedule(dep.id, schedule.id)
            ids = {dep.id for dep in deps}
            runs = await client.read_flow_runs()
            for run in runs:
                if run.deployment_id in ids and run.state and run.state.is_scheduled():
                    await client.delete_flow_run(run.id)

    import asyncio

    asyncio.run(unschedule())
    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield
    finally:
        for name in ("triage_config", "triage_db"):  # the server is shared with other tests
            Variable.unset(name)
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _run_and_wait(timeout_s: float = 600, name: str = DEPLOYMENT) -> FlowRun:
    run = run_deployment(name, timeout=0)
    assert isinstance(run, FlowRun)
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            current = client.read_flow_run(run.id)
            if current.state and current.state.is_final():
                return current
            time.sleep(1)
    raise AssertionError(f"flow run {run.id} did not finish in {timeout_s}s")


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
