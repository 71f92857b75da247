"""The command line as users run it: the installed ``triage`` in a subprocess, exit codes and output.

Exit codes: 0 success, 1 a failed source / a missing or busy store, 2 a configuration or database
problem that needs fixing (README, Commands).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.clirun import clean_env, run_cli, store_held_by_another_process
from triage.customers.stages import STAGES

DEMO_VALID_ITEMS = 233 + 158  # expected_labels.csv and expected_customer_labels.csv


@pytest.fixture
def work(tmp_path: Path, demo_config: Path) -> Path:
    """A working folder holding ./triage.yaml (a copy of the demo) and nothing else."""
    for entry in demo_config.parent.iterdir():
        target = tmp_path / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copy(entry, target)
    return tmp_path


def _failing_source(work: Path) -> None:
    cfg = work / "triage.yaml"
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace(
            "sources:\n",
            "sources:\n  - {name: reddit-brand, type: reddit, queries: [nimbus], "
            "auth_url: 'http://127.0.0.1:9'}\n",
            1,
        ),
        encoding="utf-8",
    )


@pytest.mark.slow
def test_a_clean_run_exits_0_with_its_summary_and_both_times(work: Path) -> None:
    # As a user runs it: no PREFECT_API_URL, so triage starts Prefect's temporary server.
    done = run_cli("run", cwd=work, env=clean_env(ephemeral=True))

    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    times = re.match(
        r"triage run finished in ([\d.]+)s \(flow ([\d.]+)s, Prefect server start ([\d.]+)s, "
        r"imports and Prefect bookkeeping ([\d.]+)s\)  \(database triage\.duckdb\)$",
        first,
    )
    assert times, first
    wall, flow, server, other = map(float, times.groups())
    assert server > 0 and flow > 0 and wall >= flow + server
    assert abs(wall - flow - server - other) < 0.2
    assert f"classified {DEMO_VALID_ITEMS} (" in done.stdout
    assert "bulk-import        fetched      6  new      2  quarantined    4" in done.stdout
    assert "FAILED" not in done.stdout
    assert (work / "triage.duckdb").exists()
    # The demo's recurring customers reach every lifecycle stage (issue 16).
    customers = next(line for line in done.stdout.splitlines() if line.startswith("customers "))
    counts = dict(re.findall(r"(\w[\w ]*?) (\d+)(?:,|$| \()", customers.split(": ", 1)[1]))
    assert set(counts) == {s.replace("_", " ") for s in STAGES} and all(
        int(n) > 0 for n in counts.values()
    ), customers

    # Again, as JSON, against a running server: nothing new, no server started.
    again = run_cli("run", "--json", cwd=work)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["server_start_seconds"] is None
    assert summary["wall_seconds"] >= summary["seconds"] > 0
    assert sum(s["stored"] for s in summary["sources"].values()) == 0
    assert summary["failed_sources"] == {}


@pytest.mark.slow
def test_a_failed_source_exits_1_naming_it_after_the_others_ran(work: Path) -> None:
    _failing_source(work)

    done = run_cli("run", "--no-deliver", cwd=work)

    assert done.returncode == 1, done.stderr
    assert re.search(
        r"^  reddit-brand +FAILED: ConnectorError: .*REDDIT_CLIENT_ID", done.stdout, re.MULTILINE
    )
    assert "FAILED sources: reddit-brand (the other sources were triaged; exit code 1)" in (
        done.stdout
    )
    assert f"classified {DEMO_VALID_ITEMS} (" in done.stdout
    assert "Traceback" not in done.stderr

    as_json = run_cli("run", "--json", "--no-deliver", cwd=work)
    assert as_json.returncode == 1
    assert list(json.loads(as_json.stdout)["failed_sources"]) == ["reddit-brand"]


def test_a_configuration_error_exits_2_naming_the_key(work: Path) -> None:
    cfg = work / "triage.yaml"
    text = cfg.read_text(encoding="utf-8").replace("    pattern:", "    patern:")
    cfg.write_text(text, encoding="utf-8")
    line = text.splitlines().index('    patern: "malformed*.jsonl"') + 1

    for command in (["run"], ["status"], ["quarantine"], ["config", "check"]):
        done = run_cli(*command, cwd=work)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr == (
            f"error: triage.yaml:{line}: sources[3].patern: unknown setting 'patern' of source "
            "'bulk-import' (did you mean 'pattern'?)\n"
        ), command
        assert done.stdout == ""
    assert not (work / "triage.duckdb").exists()  # nothing ran, nothing was created


@pytest.mark.slow
def test_status_and_quarantine_after_a_run(work: Path) -> None:
    assert run_cli("run", "--no-deliver", cwd=work).returncode == 0

    status = run_cli("status", cwd=work)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].startswith(
        f"items {DEMO_VALID_ITEMS}, classified {DEMO_VALID_ITEMS}"
    )
    as_json = json.loads(run_cli("status", "--json", cwd=work).stdout)
    assert as_json["items_total"] == DEMO_VALID_ITEMS and as_json["quarantined"] == 4

    quarantine = run_cli("quarantine", cwd=work)
    assert quarantine.returncode == 0, quarantine.stderr
    assert quarantine.stdout.count("[bulk-import]") == 4
    assert "invalid JSON" in quarantine.stdout


@pytest.mark.parametrize("command", ["status", "quarantine"])
def test_status_and_quarantine_on_a_missing_damaged_or_locked_store(
    work: Path, command: str
) -> None:
    db = work / "triage.duckdb"
    missing = run_cli(command, cwd=work)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"error: no database at {db.name} yet; run `triage run` first\n"

    db.write_bytes(os.urandom(64 * 1024))
    damaged = run_cli(command, cwd=work)
    assert damaged.returncode == 2
    assert damaged.stderr == f"error: {db.name} is not a DuckDB database file; it was not touched\n"

    db.unlink()
    with store_held_by_another_process(db):
        locked = run_cli(command, cwd=work, env=clean_env(TRIAGE_LOCK_WAIT="1"))
    assert locked.returncode == 1
    assert locked.stderr.startswith(f"error: {db.name} is locked by another process")
    assert locked.stderr.count("\n") == 1 and "Traceback" not in locked.stderr


def test_classify_writes_one_line_per_row_and_fails_2_on_a_missing_file(work: Path) -> None:
    rows = work / "in.csv"
    rows.write_text(
        "text\n"
        "the app crashes every time I open a note\n"
        "do you offer a team plan with SSO? pricing?\n",
        encoding="utf-8",
    )
    done = run_cli("classify", "--input", rows, "--output", work / "out.jsonl", cwd=work)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    assert len(out) == 2
    assert all({"label", "labels", "scores", "needs_review"} <= set(o) for o in out)
    assert "classified 2 rows" in done.stderr

    missing = run_cli(
        "classify", "--input", work / "nope.csv", "--output", work / "o.jsonl", cwd=work
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


@pytest.mark.slow
def test_progress_per_source_batch_and_stage(work: Path) -> None:
    # A backfill of 12,000 mentions read in batches of 5,000: each batch is reported on stderr
    # (stdout keeps the summary); `-v` adds a line per stage.
    drop = work / "drops" / "backfill.jsonl"
    with drop.open("w", encoding="utf-8") as f:
        for i in range(12_000):
            row = {"id": f"b{i}", "text": f"love the new sync, note {i}", "created_at": 1.7e9 + i}
            f.write(json.dumps(row) + "\n")
    cfg = work / "triage.yaml"
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace(
            "sources:\n", "sources:\n  - {name: backfill, type: file, path: drops/backfill.jsonl}\n"
        ),
        encoding="utf-8",
    )

    done = run_cli("run", "--no-deliver", "--batch-size", "5000", cwd=work)

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(l.endswith("fetch backfill: batch 2, 10,000 read, 10,000 new so far") for l in lines)
    assert any(l.endswith("fetch backfill: batch 3, 12,000 read, 12,000 new so far") for l in lines)
    assert any("classify: batch 3, " in l for l in lines)
    assert not any("fetch social" in l for l in lines)  # a one-batch source stays quiet
    assert done.stdout.startswith("triage run finished in ")

    verbose = run_cli("run", "-v", "--no-deliver", cwd=work)
    assert verbose.returncode == 0, verbose.stderr
    for stage in ("fetch social: started", "fetch social: 0 read, 0 new in", "classify: 0 in"):
        assert stage in verbose.stderr, stage
    assert "route: 0 in" in verbose.stderr and "deliver" not in verbose.stderr
