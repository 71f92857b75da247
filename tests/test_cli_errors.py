"""A bad port, a busy port, a bad environment variable or a negative count: one line, no traceback.

Each test runs the real command line in a new process, as a user or a service manager does: the
failures found by the audit were interpreter aborts (exit 134/139) and tracebacks that only show
there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirun import store_held_by_another_process
from triage.store import open_store

# Configuration/usage errors exit 2 (README, "Commands": exit codes).
USAGE = 2


def triage(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``triage ARGS`` in a new process, with only the TRIAGE_ variables given here."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "triage.cli", *args],
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == USAGE, output
    assert "Traceback" not in output and "terminate called" not in output, output
    errors = [row for row in result.stderr.splitlines() if row.startswith("error:")]
    assert errors == [line], output


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a real listening socket holds for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


SLACK_ENV = {"SLACK_BOT_TOKEN": "xoxb-fake", "SLACK_SIGNING_SECRET": "abc123abc123"}
INTAKE_ENV = {"TRIAGE_INTAKE_SECRET": "abcdefabcdefabcdefabcdefabcdef12"}


# ----------------------------------------------------------------------------- servers
def test_slack_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path, busy_port: int) -> None:
    result = triage("slack", "serve", "--port", str(busy_port), cwd=tmp_path, **SLACK_ENV)

    assert_one_line(
        result, f"error: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    )


def test_slack_serve_refuses_a_port_out_of_range_in_one_line(tmp_path: Path) -> None:
    result = triage("slack", "serve", "--port", "99999", cwd=tmp_path, **SLACK_ENV)

    assert_one_line(result, "error: cannot listen on 127.0.0.1:99999: the port must be 0-65535")


def test_intake_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path, busy_port: int) -> None:
    spool = str(tmp_path / "spool")
    args = ("intake", "serve", "--port", str(busy_port), "--spool-dir", spool)

    result = triage(*args, cwd=tmp_path, **INTAKE_ENV)

    assert_one_line(
        result, f"error: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    )


def test_intake_serve_refuses_a_bad_port_in_one_line(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")

    result = triage(
        "intake", "serve", "--port", "-1", "--spool-dir", spool, cwd=tmp_path, **INTAKE_ENV
    )

    assert_one_line(result, "error: cannot listen on 127.0.0.1:-1: the port must be 0-65535")


# ----------------------------------------------------------------------------- environment
@pytest.fixture
def store_file(tmp_path: Path) -> str:
    """An empty triage store, so that `status` gets as far as reading the variables."""
    path = tmp_path / "triage.duckdb"
    with open_store(path):
        pass
    return str(path)


def test_a_lock_wait_that_is_not_seconds_is_named_in_one_line(
    tmp_path: Path, store_file: str
) -> None:
    result = triage("status", "--db", store_file, cwd=tmp_path, TRIAGE_LOCK_WAIT="30s")

    assert_one_line(
        result, "error: TRIAGE_LOCK_WAIT must be a number of seconds such as 30, not '30s'"
    )


def test_duckdb_threads_that_are_not_a_number_are_named_in_one_line(
    tmp_path: Path, store_file: str
) -> None:
    result = triage("status", "--db", store_file, cwd=tmp_path, TRIAGE_DUCKDB_THREADS="two")

    assert_one_line(
        result,
        "error: TRIAGE_DUCKDB_THREADS must be a whole number of threads (1 or more), not 'two'",
    )


# ----------------------------------------------------------------------------- counts
@pytest.mark.parametrize(
    ("args", "option"),
    [(("quarantine", "--limit", "-1", "--db"), "--limit"), (("bench", "--n", "-5"), "--n")],
)
def test_a_negative_count_is_a_usage_error(
    tmp_path: Path, store_file: str, args: tuple[str, ...], option: str
) -> None:
    # quarantine reads the store before it uses --limit, so it gets one to read.
    full = (*args, store_file) if args[-1] == "--db" else args
    result = triage(*full, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == USAGE, output
    assert "Traceback" not in output, output
    assert f"Invalid value for '{option}'" in output


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("quarantine", "--source", "nope"), "source"),
        (("quarantine", "clear", "--source", "nope"), "source"),
        (("outbox", "retry", "--destination", "nope"), "destination"),
    ],
)
def test_a_name_that_is_neither_configured_nor_stored_is_refused(
    tmp_path: Path, store_file: str, args: tuple[str, ...], what: str
) -> None:
    # A typo answered "quarantine is empty", "cleared 0" or "requeued 0" with exit 0: nothing
    # told the user the name matched nothing.
    result = triage(*args, "--db", store_file, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == USAGE and "Traceback" not in output, output
    (line,) = [row for row in result.stderr.splitlines() if row.startswith("error:")]
    assert line.startswith(f"error: no {what} named 'nope' in ") and "(configured: " in line


# ----------------------------------------------------------------------------- output paths
@pytest.mark.parametrize(
    "args",
    [
        ("report", "--out", "{blocked}/report"),
        ("testimonials", "export", "--out", "{blocked}/t.csv"),
        ("testimonials", "export", "--out", "{folder}"),
        ("corrections", "export", "--out", "{blocked}/c.jsonl"),
        ("config", "schema", "--out", "{blocked}/s.json"),
        ("train", "--starter-only", "--out", "{blocked}/model"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(
    tmp_path: Path, store_file: str, args: tuple[str, ...]
) -> None:
    # Under a regular file, or a folder where a file goes: a traceback (exit 1), for `train`
    # only after the whole training had run.
    blocked = tmp_path / "afile"
    blocked.write_text("a file, not a folder")
    folder = tmp_path / "adir"
    folder.mkdir()
    filled = [a.format(blocked=blocked, folder=folder) for a in args]
    with_db = [*filled, "--db", store_file] if args[0] not in ("config", "train") else filled
    result = triage(*with_db, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == USAGE and "Traceback" not in output, output
    (line,) = [row for row in result.stderr.splitlines() if row.startswith("error:")]
    assert line.startswith("error: cannot write ")
    assert f"{blocked} is a file, not a folder" in line or "it is a folder" in line


def test_training_data_with_a_label_seen_once_is_refused_before_training(tmp_path: Path) -> None:
    # One example per label left the calibration split with nothing to train on, and spaCy's
    # E930 came out as a traceback.
    data = tmp_path / "tiny.csv"
    data.write_text(
        "text,label\nlove it,kudos\nlove it so much,kudos\nhow much for 10 seats,sales_lead\n"
        "it crashes,service_issue\n",
        encoding="utf-8",
    )
    result = triage("train", "--data", str(data), "--out", "model", cwd=tmp_path)
    assert_one_line(
        result,
        "error: training needs at least 2 examples of each label; only 1 of: sales_lead, "
        "service_issue",
    )
    assert not (tmp_path / "model" / "meta.json").exists()


def test_retrain_waits_for_a_held_store_as_long_as_told_and_says_busy(tmp_path: Path) -> None:
    # retrain opened the store itself: it ignored TRIAGE_LOCK_WAIT (waited the default 30 s)
    # and then exited 2, "fix something", for what is "busy, try again" (exit 1) elsewhere.
    db = tmp_path / "triage.duckdb"
    with store_held_by_another_process(db):
        started = time.monotonic()
        result = triage("retrain", "--db", str(db), cwd=tmp_path, TRIAGE_LOCK_WAIT="1")
        waited = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr.startswith(f"error: {db} is locked by another process"), output
    assert "Traceback" not in output and waited < 20, (waited, output)
