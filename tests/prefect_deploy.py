"""prefect.yaml deployed as users deploy it: the `prefect` CLI, process workers, flow runs waited for.

Shared by the deployment tests (tests/test_deployment.py on the session's test server,
tests/test_prefect_at_scale.py on a Prefect server of its own backed by PostgreSQL). Every call
talks to the API that the current Prefect settings name (``PREFECT_API_URL``); the subprocesses get
it through their environment (:func:`prefect_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from tests.clirun import BIN, REPO, clean_env, run_cli

POOL = "triage-pool"  # the work pool prefect.yaml names
# Every scheduled deployment in prefect.yaml (their schedules are removed for the tests).
SCHEDULED = (
    "triage/triage-every-15-min",
    "readback/readback-hourly",
    "weekly-digest/weekly-digest",
    "retrain/retrain-weekly",
    "retrain/retrain-when-due",
    "triage/triage-parallel",
)


def prefect_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment for `prefect` commands and workers (``extra`` wins)."""
    env = clean_env(
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``prefect ARGS`` in the repository; a failure fails the test with its output."""
    done = run_cli(*args, cwd=REPO, env=env, timeout=300, program="prefect")
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def deploy(env: dict[str, str]) -> None:
    """Create the process pool, `prefect deploy --all`, and remove every schedule and its runs.

    The cron schedules would add runs of their own during a test; only the test's should run.
    """
    prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", env=env)
    prefect("--no-prompt", "deploy", "--all", env=env)

    async def unschedule() -> None:
        async with get_client() as client:
            deps = [await client.read_deployment_by_name(name) for name in SCHEDULED]
            for dep in deps:
                for schedule in await client.read_deployment_schedules(dep.id):
                    await client.delete_deployment_schedule(dep.id, schedule.id)
            ids = {dep.id for dep in deps}
            for run in await client.read_flow_runs():
                if run.deployment_id in ids and run.state and run.state.is_scheduled():
                    await client.delete_flow_run(run.id)

    asyncio.run(unschedule())


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM a process started in a session of its own (and its children), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)


@contextlib.contextmanager
def workers(
    env: dict[str, str], count: int = 1, limit: int | None = None, log: Path | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` `prefect worker start` processes polling the pool, stopped on exit.

    Args:
        env: Their environment (:func:`prefect_env`).
        count: How many workers.
        limit: Each worker's ``--limit`` (flow runs at once), or none.
        log: A file their output is appended to (else discarded).
    """
    args = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    if limit is not None:
        args += ["--limit", str(limit)]
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        try:
            for n in range(count):
                procs.append(
                    subprocess.Popen(
                        [*args, "--name", f"worker-{n + 1}-{uuid.uuid4().hex[:6]}"],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=out,
                        start_new_session=True,
                    )
                )
            yield procs
        finally:
            for p in procs:
                stop(p)


def wait_for_run(run_id: uuid.UUID, timeout_s: float = 600) -> FlowRun:
    """Poll the flow run until its state is final; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            current = client.read_flow_run(run_id)
            if current.state and current.state.is_final():
                return current
            time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout_s}s")


def run_and_wait(name: str, timeout_s: float = 600) -> FlowRun:
    """Start a run of deployment ``name`` (as the scheduler would) and wait for its end."""
    run = run_deployment(name, timeout=0)
    assert isinstance(run, FlowRun)
    return wait_for_run(run.id, timeout_s)
