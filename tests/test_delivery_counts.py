"""Honest delivery counts (issue 12): previews are never reported as sends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.triage import triage
from tests.fakes.slack import FakeSlack
from triage.cli import app as cli_app
from triage.cli.pipeline import print_summary as _print_summary


def status(config: Path, db: Path) -> dict[str, int]:
    result = CliRunner().invoke(
        cli_app, ["status", "--json", "--config", str(config), "--db", str(db)]
    )
    assert result.exit_code == 0, result.output
    deliveries: dict[str, int] = json.loads(result.output)["deliveries"]
    return deliveries


def test_previews_are_counted_apart_from_sends(
    demo_config: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = triage(config_path=str(demo_config), database=str(db_path))
    second = triage(config_path=str(demo_config), database=str(db_path))

    previewed = first["deliver"]["previewed"]
    assert previewed == first["route"]["enqueued"] > 0 and first["deliver"]["sent"] == 0
    counts = status(demo_config, db_path)
    assert counts["sent"] == 0  # nothing was posted anywhere
    assert counts["previewed"] == previewed
    # The summary says so when there were previews, and only then.
    _print_summary(first)
    out = capsys.readouterr().out
    assert f"previews {previewed}" in out and "written as JSON previews" in out
    _print_summary(second)
    assert "written as JSON previews" not in capsys.readouterr().out
    assert second["deliver"]["preview_destinations"] == []


def test_sends_are_counted_as_sends(
    fake_slack: FakeSlack,
    demo_config: Path,
    db_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = triage(config_path=str(demo_config), database=str(db_path))

    counts = status(demo_config, db_path)
    assert counts["sent"] == summary["deliver"]["sent"] == len(fake_slack.posted()) > 0
    assert counts["previewed"] == 0
    _print_summary(summary)
    assert "written as JSON previews" not in capsys.readouterr().out


def test_failed_deliveries_name_each_destination_and_its_first_error(
    demo_config: Path,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "failed 396" alone gave the operator nothing to act on: every preview had met a folder
    # under a regular file, which only the outbox table said.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(blocker / "outbox"))
    summary = triage(config_path=str(demo_config), database=str(db_path))

    d = summary["deliver"]
    assert d["failed"] == summary["route"]["enqueued"] > 0 and d["previewed"] == 0
    failures = d["failures"]
    assert sum(f["failed"] for f in failures.values()) == d["failed"]
    assert all("Not a directory" in f["error"] for f in failures.values())
    _print_summary(summary)
    out = capsys.readouterr().out
    for name, f in failures.items():
        assert f"  {name}: {f['failed']} to retry; first error: NotADirectoryError" in out
