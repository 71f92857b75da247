"""Real exports through the ``file`` source, and recovering from quarantine through the CLI.

The export test uses the README's own configuration example, so the documentation cannot drift from
what the connector reads. The quarantine commands run as a user runs them: ``triage`` in a
subprocess, checking exit codes and the lines people read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from connectors import SourceContext, file
from connectors.file_reader import JSON_ARRAY_HINT
from flows.settings import load_config
from flows.triage import ingest
from triage.cli import app
from triage.cli.sources import mostly_quarantined
from triage.config import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_backfill_example() -> dict[str, Any]:
    """The ``file`` source example under "Bulk backfill with `file`" in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("#### Bulk backfill with `file`") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    (source,) = yaml.safe_load(block.group(1))
    return dict(source)


def zendesk_export(rows: int = 30) -> str:
    """A helpdesk CSV export as such tools write it: US dates, quoted multi-line descriptions."""
    lines = ["Ticket ID,Subject,Description,Status,Created at,Requester,Requester email,Via"]
    texts = [
        "Charged twice for March, please refund one of them",
        'Love the new editor.\nThe "focus mode" is exactly what I needed',
        "Do you offer a discount for 40 seats, billed yearly?",
        "Export to PDF cuts off the last page, every time",
        "Would be great to have dark mode on Android",
    ]
    for i in range(rows):
        text = texts[i % len(texts)].replace('"', '""')
        day, hour = 1 + i % 28, 1 + i % 12
        stamp = f"11/{day:02d}/2025 {hour:02d}:{i % 60:02d} {'AM' if i % 2 else 'PM'}"
        via = "email" if i % 3 else "web"
        lines.append(
            f'{4100 + i},"Ticket {i}","{text}",open,{stamp},Person {i},p{i}@example.com,{via}'
        )
    return "\n".join(lines) + "\n"


def row_start_lines(text: str) -> list[int]:
    """Where each data row of a CSV text starts, counting the file's lines from 1 (the csv module's
    own count, independent of the connector)."""
    reader = csv.reader(io.StringIO(text))
    next(reader)
    starts, previous = [], reader.line_num
    for _ in reader:
        starts.append(previous + 1)
        previous = reader.line_num
    return starts


def write_config(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump({"database": str(tmp_path / "t.duckdb"), "sources": sources}))
    return path


def run_ingest(config_path: Path, name: str, batch_size: int = 5000) -> dict[str, Any]:
    cfg = load_config(config_path)
    return ingest(cfg, next(s for s in cfg.sources if s.name == name), batch_size=batch_size)


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def triage_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``triage ARGS`` as a user runs it (a new process, the installed entry point's module)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "triage.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ----------------------------------------------------------------------------- field mapping
def test_the_readme_export_example_reads_a_real_export_whole(tmp_path: Path) -> None:
    source = readme_backfill_example()
    folder = tmp_path / source["path"]
    folder.mkdir(parents=True)
    (folder / "tickets-2025-11.csv").write_text(zendesk_export(30), encoding="utf-8")
    config = write_config(tmp_path, [source])

    result = run_ingest(config, source["name"])

    # A finished file has nothing to say beyond its counts.
    assert result == {**result, "fetched": 30, "stored": 30, "quarantined": 0, "notes": []}
    got = {
        r[0]: r[1:]
        for r in rows(
            tmp_path, "SELECT external_id, created_at, source_type, author_handle FROM items"
        )
    }
    assert len(got) == 30
    # 11/01/2025 01:00 PM in New York (EDT, before the clocks went back) is 17:00 UTC;
    # 11/04/2025 04:03 AM (EST, after) is 09:03 UTC.
    assert got["4100"][0] == datetime(2025, 11, 1, 17, 0, tzinfo=UTC)
    assert got["4103"][0] == datetime(2025, 11, 4, 9, 3, tzinfo=UTC)
    # `channel` is read from the mapped column; without it, the source's source_type applies.
    assert got["4100"][1] == "web" and got["4101"][1] == "email"
    assert got["4101"][2] == "p1@example.com"
    (text,) = rows(tmp_path, "SELECT text FROM items WHERE external_id = '4101'")[0]
    assert text == 'Love the new editor.\nThe "focus mode" is exactly what I needed'


def test_a_semicolon_export_reads_like_the_comma_one(tmp_path: Path) -> None:
    # The same export saved by a spreadsheet in a locale that writes ';': the descriptions hold
    # commas and quoted line breaks, which must stay inside their cells.
    out = io.StringIO()
    csv.writer(out, delimiter=";", lineterminator="\n").writerows(
        csv.reader(io.StringIO(zendesk_export(30)))
    )
    source = readme_backfill_example()
    folder = tmp_path / source["path"]
    folder.mkdir(parents=True)
    (folder / "tickets-2025-11.csv").write_text(out.getvalue(), encoding="utf-8-sig")
    config = write_config(tmp_path, [source])

    result = run_ingest(config, source["name"])

    # A finished file has nothing to say beyond its counts.
    assert result == {**result, "fetched": 30, "stored": 30, "quarantined": 0, "notes": []}
    got = dict(rows(tmp_path, "SELECT external_id, text FROM items"))
    assert got["4100"] == "Charged twice for March, please refund one of them"
    assert got["4101"] == 'Love the new editor.\nThe "focus mode" is exactly what I needed'


def test_internal_field_names_still_work_and_both_spellings_are_one_field(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("Key,Body,When\nk1,hello there,2026-01-02T03:04:05Z\n")
    fields = {"external_id": "Key", "text": "Body", "created_at": "When"}
    ctx = SourceContext(name="a", settings={"path": "a.csv", "fields": fields}, base_dir=tmp_path)
    (batch,) = list(file.fetch(ctx, None))
    assert batch.items is not None and batch.items.column("external_id").to_pylist() == ["k1"]
    with pytest.raises(ConfigError, match="maps 'external_id' twice"):
        file.validate("a", {"path": "a.csv", "fields": {"id": "Key", "external_id": "Key"}})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"feilds": {"text": "Body"}}, "unknown setting 'feilds'"),
        ({"fields": {"txt": "Body"}}, "unknown field 'txt' in 'fields'"),
        ({"fields": "Body"}, "'fields' must be a mapping"),
        ({"date_format": "MM/DD/YYYY"}, "date_format must be a strptime pattern"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not an IANA time zone"),
        ({"max_record_bytes": "1MB"}, "max_record_bytes must be a whole number"),
        ({"settle_seconds": -1}, "settle_seconds must be a number of seconds >= 0"),
        ({"settle_seconds": "1m"}, "settle_seconds must be a number of seconds >= 0"),
        ({"path": None}, "'path' is required"),
    ],
)
def test_bad_file_settings_are_configuration_errors_naming_the_key(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    source = {"name": "drop", "type": "file", "path": "drops", **settings}
    config = write_config(tmp_path, [source])
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config)
    # `triage run` stops at once with exit 2 and one line naming the source and the key.
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--no-deliver"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "source 'drop'" in result.output


def test_unknown_settings_of_other_connectors_are_refused_too(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [{"name": "blog", "type": "rss", "url": "feed.xml", "backfil_days": 3}]
    )
    with pytest.raises(ConfigError, match="unknown setting 'backfil_days'.*backfill_days"):
        load_config(config)


# ----------------------------------------------------------------------------- line numbers
def test_quarantine_line_numbers_count_from_the_start_of_the_file(tmp_path: Path) -> None:
    good = '{"id": "%s", "text": "fine", "created_at": "2026-01-02T03:04:05Z"}'
    lines = [good % "a", "", good % "b", "{broken", good % "c", good % "d", "[1]", good % "e"]
    drop = tmp_path / "d.jsonl"
    drop.write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, [{"name": "d", "type": "file", "path": "d.jsonl"}])
    run_ingest(config, "d", batch_size=2)
    # More lines, read by a later run that resumes from the cursor.
    with drop.open("a") as fh:
        fh.write(good % "f" + "\n" + "not json either\n")
    run_ingest(config, "d", batch_size=2)
    reasons = sorted(r[0].split(":")[0] for r in rows(tmp_path, "SELECT reason FROM quarantine"))
    assert reasons == ["d.jsonl line 10", "d.jsonl line 4", "d.jsonl line 7"]

    # CSV: quoted fields span lines; the number is the line where the record starts.
    csv_text = (
        "id,text,created_at\n"
        'c1,"two\nlines",2026-01-02T03:04:05Z\n'
        "c2,,2026-01-02T03:04:05Z\n"
        'c3,"three\nlines\nhere",2026-01-02T03:04:05Z\n'
        "c4,bad date,yesterday\n"
        "c5,too,many,columns\n"
    )
    (tmp_path / "c.csv").write_text(csv_text)
    config = write_config(tmp_path, [{"name": "c", "type": "file", "path": "c.csv"}])
    run_ingest(config, "c", batch_size=1)
    got = {
        r[0].split(":")[0]: r[0]
        for r in rows(tmp_path, "SELECT reason FROM quarantine WHERE source = 'c'")
    }
    assert sorted(got) == ["c.csv line 4", "c.csv line 8", "c.csv line 9"]
    assert "yesterday" in got["c.csv line 8"] and "4 columns" in got["c.csv line 9"]


def test_an_array_wrapped_in_an_object_is_quarantined_with_a_hint(tmp_path: Path) -> None:
    good = '{"id": "%s", "text": "fine", "created_at": "2026-01-02T03:04:05Z"}'
    # An export that wraps its array in an object, pretty-printed: it is neither JSON Lines nor
    # one array. Nothing is stored wrong, and the reasons say what the file is.
    text = '{"reviews": [\n' + good % "a" + ",\n" + good % "b" + "\n]}\n"
    (tmp_path / "export.json").write_text(text)
    config = write_config(tmp_path, [{"name": "e", "type": "file", "path": "export.json"}])
    run_ingest(config, "e")
    got = {
        r[0].split(":")[0]: r[0]
        for r in rows(tmp_path, "SELECT reason FROM quarantine WHERE source = 'e'")
    }
    assert sorted(got) == ["export.json line 1", "export.json line 2", "export.json line 4"]
    assert JSON_ARRAY_HINT in got["export.json line 1"]
    assert JSON_ARRAY_HINT in got["export.json line 4"]
    # A line that is an object with a trailing comma does not open or close an array.
    assert JSON_ARRAY_HINT not in got["export.json line 2"]
    # The last object has no comma after it and is a record of its own.
    assert rows(tmp_path, "SELECT external_id FROM items") == [("b",)]


def test_a_cursor_written_before_lines_were_counted_still_numbers_from_the_start(
    tmp_path: Path,
) -> None:
    good = '{"id": "%s", "text": "fine", "created_at": "2026-01-02T03:04:05Z"}\n'
    head = good % "a" + good % "b"
    (tmp_path / "o.jsonl").write_text(head + "{bad\n")
    ctx = SourceContext(name="o", settings={"path": "o.jsonl"}, base_dir=tmp_path)
    old_cursor = {"files": {"o.jsonl": {"offset": len(head), "size": len(head)}}}
    (batch,) = list(file.fetch(ctx, old_cursor))
    assert [r.reason.split(":")[0] for r in batch.rejected] == ["o.jsonl line 3"]


# ----------------------------------------------------------------------------- the loud line
def test_the_run_rule_for_mostly_quarantined_sources() -> None:
    summary = {
        "sources": {
            "demo": {"fetched": 6, "quarantined": 4},
            "export": {"fetched": 30, "quarantined": 30},
            "fine": {"fetched": 100, "quarantined": 40},
            "empty": {"fetched": 0, "quarantined": 0},
        }
    }
    lines, fail = mostly_quarantined(summary)
    assert fail
    assert [line.split("'")[1] for line in lines] == ["demo", "export"]
    assert "quarantined 30 of the 30 records" in lines[1]
    assert "triage quarantine --source export" in lines[1]
    # Few records: a warning, not a failed run.
    assert mostly_quarantined({"sources": {"demo": summary["sources"]["demo"]}})[1] is False


def test_triage_run_says_loudly_when_most_of_a_source_was_quarantined(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(
        zendesk_export(12).replace("Ticket ID", "id").replace("Description", "text")
    )
    config = write_config(
        tmp_path,
        [
            {
                "name": "export",
                "type": "file",
                "path": "export.csv",
                "fields": {"created_at": "Created at"},
            }
        ],
    )
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--no-deliver"])
    assert result.exit_code == 1, result.output
    assert "WARNING: source 'export' quarantined 12 of the 12 records it read" in result.output
    assert "triage quarantine --source export" in result.output


def test_triage_run_says_which_file_end_waits_for_its_writer(tmp_path: Path) -> None:
    # A file dropped and read at once lost its last row to the next run with nothing said: an
    # operator had no way to tell "waiting for the writer" from "dropped".
    (tmp_path / "export.csv").write_text(f"id,text,created_at\nr1,first,{AT}\nr2,last,{AT}")
    config = write_config(tmp_path, [{"name": "drop", "type": "file", "path": "."}])
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--no-deliver"])
    assert result.exit_code == 0, result.output
    held = len(f"r2,last,{AT}")
    assert f"    note: export.csv: its last {held} bytes are not a finished record yet" in (
        result.output
    )
    assert "unchanged for 60 s (settle_seconds)" in result.output
    settle(tmp_path / "export.csv")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--no-deliver"])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output
    assert item_ids(tmp_path) == ["r1", "r2"]


# ----------------------------------------------------------------------------- the CLI, as run
def test_quarantine_inspect_check_retry_reset_and_clear_through_the_cli(tmp_path: Path) -> None:
    export = {"name": "export", "type": "file", "path": "export.csv"}
    export["fields"] = {"id": "Ticket ID", "text": "Description", "created_at": "Created at"}
    (tmp_path / "export.csv").write_text(zendesk_export(12))
    good = '{"id": "%s", "text": "fine", "created_at": "2026-01-02T03:04:05Z"}'
    (tmp_path / "drop.jsonl").write_text("\n".join([good % "j1", "{oops", good % "j3"]) + "\n")
    drop = {"name": "drop", "type": "file", "path": "drop.jsonl"}
    config = write_config(tmp_path, [export, drop])
    cfg = ["--config", str(config)]

    missing = triage_cli("quarantine", "--db", str(tmp_path / "none.duckdb"), *cfg, cwd=tmp_path)
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert "Traceback" not in missing.stderr

    run_ingest(config, "export")
    run_ingest(config, "drop")

    listed = triage_cli("quarantine", "--json", "--limit", "0", *cfg, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["total"] == 13 and data["by_source"] == {"drop": 1, "export": 12}
    lines = sorted(r["line"] for r in data["records"] if r["source"] == "export")
    assert lines == row_start_lines(zendesk_export(12))
    assert {r["file"] for r in data["records"]} == {"export.csv", "drop.jsonl"}
    assert all(
        "not an ISO-8601 timestamp" in r["reason"]
        for r in data["records"]
        if r["source"] == "export"
    )

    human = triage_cli("quarantine", "--source", "drop", *cfg, cwd=tmp_path)
    assert human.returncode == 0
    assert "[drop] drop.jsonl line 2: invalid JSON" in human.stdout

    check = triage_cli("sources", "check", "export", *cfg, cwd=tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "12 would be quarantined" in check.stdout
    assert "WARNING: most of the sample would be quarantined" in check.stderr

    # The fix: the export's date format. The sample now passes and retry stores the records.
    export["date_format"] = "%m/%d/%Y %I:%M %p"
    config = write_config(tmp_path, [export, drop])
    check = triage_cli("sources", "check", "export", *cfg, cwd=tmp_path)
    assert check.returncode == 0 and "12 would be stored, 0 would be quarantined" in check.stdout
    retry = triage_cli("quarantine", "retry", *cfg, cwd=tmp_path)
    assert retry.returncode == 0, retry.stderr
    assert "export: 12 of 12 record(s) valid now (12 new item(s) stored)" in retry.stdout
    assert "drop: 0 of 1 record(s) valid now" in retry.stdout
    assert rows(tmp_path, "SELECT count(*) FROM items WHERE source = 'export'") == [(12,)]

    # A file fixed in place: reset the cursor, read it again, clear what was stale.
    (tmp_path / "drop.jsonl").write_text("\n".join([good % "j1", good % "j2", good % "j3"]) + "\n")
    reset = triage_cli("sources", "reset", "drop", *cfg, cwd=tmp_path)
    assert reset.returncode == 0 and "reads it from the start" in reset.stdout
    assert run_ingest(config, "drop")["stored"] == 1  # j2; j1 and j3 are not stored twice
    cleared = triage_cli("quarantine", "clear", "--source", "drop", *cfg, cwd=tmp_path)
    assert cleared.returncode == 0 and "cleared 1 quarantined record(s) of 'drop'" in cleared.stdout
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT id) FROM items") == [(15, 15)]
    empty = triage_cli("quarantine", *cfg, cwd=tmp_path)
    assert "quarantine is empty" in empty.stdout

    unknown = triage_cli("sources", "reset", "nope", *cfg, cwd=tmp_path)
    assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr


def test_blank_lines_before_a_csv_header_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text(
        "\n\nid,text,created_at\nr1,first row,2026-01-02T03:04:05Z\n", encoding="utf-8"
    )
    config = write_config(
        tmp_path, [{"name": "x", "type": "file", "path": ".", "pattern": "*.csv"}]
    )
    run_ingest(config, "x")
    assert rows(tmp_path, "SELECT external_id, text FROM items") == [("r1", "first row")]


def test_a_csv_whose_header_cannot_be_read_is_quarantined_and_later_files_still_read(
    tmp_path: Path,
) -> None:
    # A carriage return inside the header is not CSV: the csv module raised, which stopped the
    # source, and every file after this one, on every run.
    (tmp_path / "a.csv").write_bytes(b"id,text\rx,created_at\nr1,lost row,2026-01-02T03:04:05Z\n")
    (tmp_path / "b.csv").write_text(
        "id,text,created_at\nr2,next file,2026-01-02T03:04:05Z\n", encoding="utf-8"
    )
    config = write_config(
        tmp_path, [{"name": "x", "type": "file", "path": ".", "pattern": "*.csv"}]
    )
    run_ingest(config, "x")
    assert rows(tmp_path, "SELECT external_id FROM items") == [("r2",)]
    (reason,) = [r[0] for r in rows(tmp_path, "SELECT reason FROM quarantine")]
    assert "a.csv line 1" in reason and "cannot be read as CSV" in reason
    # Once said is enough: the next run neither fails nor quarantines it again.
    again = run_ingest(config, "x")
    assert again["quarantined"] == 0
    assert len(rows(tmp_path, "SELECT reason FROM quarantine")) == 1


def test_a_csv_header_over_max_record_bytes_is_quarantined_not_taken_from_the_first_row(
    tmp_path: Path,
) -> None:
    # The oversized header was skipped unread and the first row became the header: every other
    # row was then read under the wrong column names ("id is missing").
    wide = "id,text,created_at," + ",".join(f"extra_{i}" for i in range(400))
    cells = "," * 400
    (tmp_path / "wide.csv").write_text(
        f"{wide}\nr1,first row,2026-01-02T03:04:05Z{cells}\nr2,second,2026-01-02T03:04:05Z{cells}\n",
        encoding="utf-8",
    )
    source = {"name": "x", "type": "file", "path": ".", "pattern": "*.csv"}
    config = write_config(tmp_path, [{**source, "max_record_bytes": 2048}])
    run_ingest(config, "x")
    assert rows(tmp_path, "SELECT count(*) FROM items") == [(0,)]
    (reason,) = [r[0] for r in rows(tmp_path, "SELECT reason FROM quarantine")]
    assert reason.startswith("wide.csv line 1: header line 1 is ")
    assert "over max_record_bytes (2,048)" in reason and "none of this file's rows" in reason
    assert run_ingest(config, "x")["quarantined"] == 0  # said once
    # What the reason says to do reads the file.
    config = write_config(tmp_path, [source])
    reset = triage_cli("sources", "reset", "x", "--config", str(config), cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    run_ingest(config, "x")
    assert rows(tmp_path, "SELECT external_id FROM items ORDER BY 1") == [("r1",), ("r2",)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_whose_lines_end_in_a_bare_cr_is_read_line_by_line(
    tmp_path: Path, suffix: str
) -> None:
    # Old Mac line endings ("CSV (Macintosh)"): with no LF anywhere, the whole file looked like
    # one unfinished last line, and nothing was read or said, run after run.
    at = "2026-01-02T03:04:05Z"
    if suffix == ".csv":
        lines = ["id,text,created_at", f'r1,"two\rlines",{at}', f"r2,plain,{at}"]
        more = f"r3,appended,{at}"
    else:
        lines = [json.dumps({"id": f"r{i}", "text": f"line {i}", "created_at": at}) for i in (1, 2)]
        more = json.dumps({"id": "r3", "text": "appended", "created_at": at})
    path = tmp_path / f"export{suffix}"
    path.write_bytes(("\r".join(lines) + "\r").encode())
    config = write_config(
        tmp_path, [{"name": "x", "type": "file", "path": ".", "pattern": f"*{suffix}"}]
    )
    run_ingest(config, "x")
    assert rows(tmp_path, "SELECT external_id FROM items ORDER BY 1") == [("r1",), ("r2",)]
    if suffix == ".csv":
        texts = rows(tmp_path, "SELECT text FROM items WHERE external_id = 'r1'")
        assert texts == [("two\rlines",)]
    with path.open("ab") as fh:
        fh.write(more.encode() + b"\r")
    run_ingest(config, "x")
    assert [r[0] for r in rows(tmp_path, "SELECT external_id FROM items ORDER BY 1")] == [
        "r1",
        "r2",
        "r3",
    ]
    assert rows(tmp_path, "SELECT count(*) FROM quarantine") == [(0,)]


# ----------------------------------------------------------------------------- the end of a file
AT = "2026-01-02T03:04:05Z"


def settle(path: Path) -> None:
    """Make ``path`` look untouched for two minutes: past the default ``settle_seconds`` (60)."""
    then = time.time() - 120
    os.utime(path, (then, then))


def item_ids(tmp_path: Path) -> list[str]:
    return [r[0] for r in rows(tmp_path, "SELECT external_id FROM items ORDER BY 1")]


def reasons(tmp_path: Path) -> list[str]:
    return [r[0] for r in rows(tmp_path, "SELECT reason FROM quarantine ORDER BY reason")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_last_line_without_its_line_end_is_read_once_the_file_has_settled(
    tmp_path: Path, suffix: str
) -> None:
    # Many exports (spreadsheet downloads, "\n".join writers) end their last row without a line
    # end. It waited as a partial line for ever: the last record of every such file was lost.
    if suffix == ".csv":
        lines = ["id,text,created_at", f"r1,first,{AT}", f"r2,last row,{AT}"]
        more = [f"r3,appended,{AT}", "r4,not enough columns"]
    else:
        lines = [json.dumps({"id": f"r{i}", "text": f"row {i}", "created_at": AT}) for i in (1, 2)]
        more = [json.dumps({"id": "r3", "text": "appended", "created_at": AT}), "{not json"]
    path = tmp_path / f"export{suffix}"
    path.write_text("\n".join(lines), encoding="utf-8")
    config = write_config(
        tmp_path, [{"name": "x", "type": "file", "path": ".", "pattern": f"*{suffix}"}]
    )
    # Just written: its writer may be part way through that line, so it waits, and says so.
    (note,) = run_ingest(config, "x")["notes"]
    assert item_ids(tmp_path) == ["r1"]
    waits = f"export{suffix}: its last {len(lines[-1])} bytes are not a finished record yet"
    assert note.startswith(waits)
    assert note.endswith("read as finished once unchanged for 60 s (settle_seconds)")
    # Nothing more to read on the next run: it is still waiting, and says so again, without
    # writing anything (the cursor's row keeps its time).
    stamp = rows(tmp_path, "SELECT updated_at FROM connector_state")
    (again,) = run_ingest(config, "x")["notes"]
    assert again.startswith(waits)
    assert rows(tmp_path, "SELECT updated_at FROM connector_state") == stamp
    settle(path)
    settled = run_ingest(config, "x")
    assert (settled["stored"], settled["notes"]) == (1, [])
    assert item_ids(tmp_path) == ["r1", "r2"]
    unchanged = run_ingest(config, "x")
    assert (unchanged["fetched"], unchanged["notes"]) == (0, [])
    # A writer that goes on starts with the line end the last line lacked: that is not a line of
    # its own, so the lines after it keep their numbers from the start of the file.
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n" + "\n".join(more) + "\n")
    run_ingest(config, "x")
    assert item_ids(tmp_path) == ["r1", "r2", "r3"]
    (reason,) = reasons(tmp_path)
    assert reason.startswith(f"export{suffix} line {len(lines) + 2}: ")


def test_a_csv_read_while_a_quoted_field_is_being_written_loses_no_record(
    tmp_path: Path,
) -> None:
    # Read between two writes, cut inside a multi-line quoted field: the record was quarantined
    # as "never closed", and its second half then as a row of its own. r1 was lost.
    text = f'id,text,created_at\nr0,before,{AT}\nr1,"first line\nsecond line",{AT}\nr2,after,{AT}\n'
    path = tmp_path / "live.csv"
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "."}])
    for cut in (text.index("first line\n") + 11, text.index("second") + 3):
        path.write_text(text[:cut], encoding="utf-8")
        (note,) = run_ingest(config, "x")["notes"]
        assert item_ids(tmp_path) == ["r0"]
        held = cut - text.index("r1,")
        assert note.startswith(f"live.csv: its last {held} bytes are not a finished record yet")
    path.write_text(text, encoding="utf-8")
    run_ingest(config, "x")
    assert item_ids(tmp_path) == ["r0", "r1", "r2"]
    assert rows(tmp_path, "SELECT text FROM items WHERE external_id = 'r1'") == [
        ("first line\nsecond line",)
    ]
    assert reasons(tmp_path) == []
    # A finished file that really ends inside a quote is reported, once.
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f'r3,"never closed,{AT}\nmore text\n')
    run_ingest(config, "x")
    assert reasons(tmp_path) == []
    settle(path)
    run_ingest(config, "x")
    # Its opening line is quarantined and reading goes on after it, as with any unclosed quote.
    assert reasons(tmp_path) == [
        "live.csv line 6: a quoted field that opens on this line is never closed",
        "live.csv line 7: 1 columns, header has 3",
    ]
    assert run_ingest(config, "x")["fetched"] == 0


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        ("", "the file ends before the array's closing ']'"),
        (',\n  {"id": "r3", "text": "cut o', "invalid JSON: Unterminated string"),
    ],
)
def test_an_array_cut_off_before_its_end_is_reported_once_the_file_has_settled(
    tmp_path: Path, tail: str, said: str
) -> None:
    # An export that died part way: the array never closes. It waited silently for ever.
    elements = [json.dumps({"id": f"r{i}", "text": f"row {i}", "created_at": AT}) for i in (1, 2)]
    path = tmp_path / "export.json"
    path.write_text("[\n  " + ",\n  ".join(elements) + tail, encoding="utf-8")
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "."}])
    waits = "export.json: its JSON array is not finished yet (no closing ']'); it changed "
    (note,) = run_ingest(config, "x")["notes"]
    assert note.startswith(waits)
    assert item_ids(tmp_path) == ["r1", "r2"]
    assert reasons(tmp_path) == []
    # Read up to its last element and unchanged: still waiting, still said.
    (again,) = run_ingest(config, "x")["notes"]
    assert again.startswith(waits)
    settle(path)
    assert run_ingest(config, "x")["notes"] == []
    (reason,) = reasons(tmp_path)
    assert reason.startswith(f"export.json line {4 if tail else 3}: {said}")
    assert "cut off?" in reason
    unchanged = run_ingest(config, "x")
    assert (unchanged["fetched"], unchanged["notes"]) == (0, [])
    # Exported again, whole: read again from the start, and nothing is stored twice.
    whole = elements + [json.dumps({"id": "r3", "text": "row 3", "created_at": AT})]
    path.write_text("[\n  " + ",\n  ".join(whole) + "\n]\n", encoding="utf-8")
    run_ingest(config, "x")
    assert item_ids(tmp_path) == ["r1", "r2", "r3"]
    assert len(reasons(tmp_path)) == 1


def test_settle_seconds_zero_reads_the_end_of_a_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"id": "r1", "text": "no line end", "created_at": AT}), encoding="utf-8"
    )
    config = write_config(
        tmp_path, [{"name": "x", "type": "file", "path": ".", "settle_seconds": 0}]
    )
    run_ingest(config, "x")
    assert item_ids(tmp_path) == ["r1"]


def test_sources_check_reads_a_file_whole_even_while_a_run_would_wait(tmp_path: Path) -> None:
    # `triage sources check` judges the file being checked as it is: its last row is counted and
    # a quote still open at the end is reported, though a run would wait for the file to settle.
    (tmp_path / "export.csv").write_text(
        f'id,text,created_at\nr1,first,{AT}\nr2,last row,{AT}\nr3,"open quote,{AT}', encoding="utf-8"
    )
    ctx = SourceContext(name="x", settings={"path": "."}, base_dir=tmp_path)
    checked = file.sample(ctx)
    assert checked.items is not None
    assert checked.items.column("external_id").to_pylist() == ["r1", "r2"]
    assert [r.reason for r in checked.rejected] == [
        "export.csv line 4: a quoted field that opens on this line is never closed"
    ]
    batch, waiting = list(file.fetch(ctx, None))
    assert batch.items is not None and batch.items.column("external_id").to_pylist() == [
        "r1",
        "r2",
    ]
    assert batch.rejected == []
    # The run says why it stopped there; the records wait, and so does the cursor.
    assert (waiting.size, waiting.cursor) == (0, batch.cursor)
    (note,) = waiting.notes
    held = len(f'r3,"open quote,{AT}')
    assert note.startswith(f"export.csv: its last {held} bytes are not a finished record yet")
