"""Run the installed ``triage`` (and ``prefect``) commands as users do: a subprocess, a clean env."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import PREFECT_API_URL

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def clean_env(*, ephemeral: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of the developer's or the test run's settings.

    Args:
        ephemeral: Let ``triage run`` start Prefect's temporary server, as it does for a user;
            otherwise the commands use the session's test server (no start-up cost per call).
        extra: More variables to set.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "TRIAGE_", "SLACK_", "REDDIT_"))
    }
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    if not ephemeral:
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env.update(extra)
    return env


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    program: str = "triage",
) -> subprocess.CompletedProcess[str]:
    """Run ``triage ARGS`` (the installed console script) and capture its output."""
    return subprocess.run(
        [str(BIN / program), *map(str, args)],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def store_held_by_another_process(db: Path) -> Iterator[None]:
    """Another process holds ``db``'s DuckDB write lock (as a running flow does) inside the block."""
    hold = f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('held', flush=True)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + "; time.sleep(120)"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()
