"""Corrections in: parsing with per-row errors, provenance, resolution to the latest, the slice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from classifiers.correction_files import CorrectionsFileError, import_file, read_corrections
from classifiers.corrections import (
    CORRECTIONS_SCHEMA,
    Correction,
    from_arrow,
    from_reviews,
    in_eval_slice,
    resolve_latest,
    split_corrections,
    text_key,
    to_arrow,
)
from tests.learning_domain import as_corrections, domain_rows

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_with_errors_are_reported_by_line_and_the_rest_imported(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "export.csv",
        "Text,Label,Source,extra\n"
        "app crashes on login,service_issue,appstore,x\n"
        '"two\nline post asking for dark mode",Feature Request,,y\n'
        "   ,kudos,appstore,z\n"
        "love it,praise,appstore,w\n"
        "where can I buy this,,x,v\n"
        "thanks so much!,kudos,,\n",
    )
    parsed = read_corrections(path, default_source="zendesk", now=T0)
    assert parsed.read == 6
    assert [(c.line, c.label, c.source) for c in parsed.corrections] == [
        (2, "service_issue", "appstore"),
        (3, "feature_request", "zendesk"),  # a quoted cell spanning two lines starts on line 3
        (8, "kudos", "zendesk"),
    ]
    expected = "(expected one of kudos, sales_lead, feature_request, service_issue, other)"
    assert [str(e) for e in parsed.errors] == [
        "line 5: empty text",
        f"line 6: unknown label 'praise' {expected}",
        f"line 7: missing label {expected}",
    ]
    first = parsed.corrections[0]
    assert first.provenance_kind == "file"
    assert first.provenance == str(path.resolve())
    assert first.created_at == T0


def test_a_semicolon_export_is_read_like_a_comma_one(tmp_path: Path) -> None:
    # A spreadsheet saved in a locale that writes ';': commas inside the text stay text.
    path = _write(
        tmp_path / "export.csv",
        "Text;Label;Source\n"
        "app crashes on login, every time;service_issue;appstore\n"
        "love it;kudos;;extra\n"
        "wish it had dark mode, pls;Feature Request;\n",
    )
    parsed = read_corrections(path, now=T0)
    assert [(c.text, c.label, c.source) for c in parsed.corrections] == [
        ("app crashes on login, every time", "service_issue", "appstore"),
        ("wish it had dark mode, pls", "feature_request", "import"),
    ]
    assert [str(e) for e in parsed.errors] == ["line 3: 4 cells for 3 columns (unquoted ';'?)"]


def test_jsonl_bad_lines_are_reported_not_fatal(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.jsonl",
        json.dumps({"text": "charged twice", "label": "service_issue"})
        + "\n\n"
        + "{not json\n"
        + json.dumps(["a list"])
        + "\n"
        + json.dumps({"text": 42, "label": "kudos"})
        + "\n"
        + json.dumps({"text": "pricing for 50 seats?", "label": "SALES-LEAD", "source": "web"})
        + "\n",
    )
    parsed = read_corrections(path, now=T0)
    assert parsed.read == 5
    assert [(c.text, c.label, c.source) for c in parsed.corrections] == [
        ("charged twice", "service_issue", "import"),
        ("pricing for 50 seats?", "sales_lead", "web"),
    ]
    reasons = {e.line: e.reason for e in parsed.errors}
    assert set(reasons) == {3, 4, 5}
    assert reasons[3].startswith("invalid JSON")
    assert reasons[4] == "expected a JSON object, got list"
    assert reasons[5] == "text is not a string (int)"


def test_a_file_without_the_columns_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(CorrectionsFileError, match="no 'label' column"):
        read_corrections(_write(tmp_path / "a.csv", "text,category\nhello,kudos\n"))
    with pytest.raises(CorrectionsFileError, match="no such file"):
        read_corrections(tmp_path / "missing.csv")
    with pytest.raises(CorrectionsFileError, match=r"\.csv or \.jsonl"):
        read_corrections(_write(tmp_path / "a.txt", "text,label\n"))


def test_conflicting_corrections_resolve_to_the_latest(tmp_path: Path) -> None:
    # In one file the later row wins; "the same text" ignores case and spacing.
    first = _write(
        tmp_path / "first.csv",
        "text,label\nWhen is the GB   shipping?,sales_lead\nwhen is the gb shipping?,service_issue\n"
        "love the new board,kudos\n",
    )
    report = import_file(first, [], now=T0)
    assert report.to_json() == {
        "read": 3,
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "repeated": 1,
        "errors": [],
    }
    stored = list(report.to_store)
    assert {c.text.lower(): c.label for c in stored} == {
        "when is the gb shipping?": "service_issue",
        "love the new board": "kudos",
    }
    # A later import: one text relabelled, one confirmed, one new, one bad row.
    second = _write(
        tmp_path / "second.csv",
        "text,label\nwhen is the GB shipping?,other\nlove the new board,kudos\n"
        "add a split layout,feature_request\n,kudos\n",
    )
    report2 = import_file(second, stored, now=T0 + timedelta(hours=1))
    assert (report2.added, report2.updated, report2.unchanged, report2.rejected) == (1, 1, 1, 1)
    assert report2.read == 4
    stored += report2.to_store
    # A reviewer's Slack click after both imports wins over them.
    slack = from_reviews(
        [
            {
                "item_id": "i-1",
                "text": "When is the GB shipping?",
                "label": "sales_lead",
                "previous_label": "other",
                "decided_by": "U024BE7LH",
                "decided_at": T0 + timedelta(hours=2),
                "source": "reddit",
            }
        ]
    )
    current = {c.key: c for c in resolve_latest(stored + slack)}
    winner = current[text_key("when is the gb shipping?")]
    assert (winner.label, winner.provenance_kind, winner.provenance, winner.source) == (
        "sales_lead",
        "slack",
        "U024BE7LH",
        "reddit",
    )
    # Re-importing the second file changes nothing.
    again = import_file(second, stored + slack, now=T0 + timedelta(hours=3))
    assert (again.added, again.updated) == (0, 1)  # only the text the reviewer relabelled since
    assert again.unchanged == 2


def test_storage_rows_round_trip_and_resolve_the_same_in_sql(tmp_path: Path) -> None:
    rows = domain_rows(40, seed=3)
    older = as_corrections(rows, T0, provenance="a.csv")
    relabels = [{**r, "text": r["text"].upper(), "label": "other"} for r in rows[:10]]
    newer = as_corrections(relabels, T0 + timedelta(days=1), kind="slack", provenance="U1")
    table = to_arrow(older + newer)
    assert table.schema == CORRECTIONS_SCHEMA
    back = from_arrow(table)
    assert back == older + newer
    assert len({c.id for c in back}) == 50
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    con.execute(
        "CREATE TABLE corrections (id VARCHAR PRIMARY KEY, text_key VARCHAR NOT NULL, "
        "text VARCHAR NOT NULL, label VARCHAR NOT NULL, source VARCHAR NOT NULL, "
        "provenance_kind VARCHAR NOT NULL, provenance VARCHAR NOT NULL, line BIGINT, "
        "item_id VARCHAR, previous_label VARCHAR, created_at TIMESTAMPTZ NOT NULL)"
    )
    con.register("incoming", table)
    con.execute("INSERT INTO corrections SELECT * FROM incoming")
    # Inserting the same rows again is a no-op: ids are deterministic.
    con.execute("INSERT INTO corrections SELECT * FROM incoming ON CONFLICT DO NOTHING")
    current = con.execute(
        "SELECT text_key, label FROM corrections QUALIFY row_number() OVER "
        "(PARTITION BY text_key ORDER BY created_at DESC) = 1"
    ).fetchall()
    assert dict(current) == {c.key: c.label for c in resolve_latest(back)}
    assert sum(label == "other" for _, label in current) >= 10


def test_frozen_slice_is_stable_as_corrections_grow() -> None:
    rows = domain_rows(2000, seed=5)
    for i, r in enumerate(rows):
        r["source"] = ["reddit", "appstore", "email"][i % 3]

    def corrections(n: int) -> list[Correction]:
        return as_corrections(rows[:n], T0, step=timedelta(minutes=1))

    small, large = split_corrections(corrections(300)), split_corrections(corrections(2000))
    small_eval = {c.key for c in small.eval}
    large_eval = {c.key for c in large.eval}
    # Every text keeps its side: what was held out stays held out, what was trained on never
    # becomes an evaluation row; and the slice grows with the corrections.
    assert small_eval <= large_eval
    assert not {c.key for c in small.train} & large_eval
    assert len(large.eval) > 3 * len(small.eval)
    # About the share of each source.
    for source, n in large.counts().items():
        share = n["eval"] / (n["eval"] + n["train"])
        assert 0.15 < share < 0.25, (source, share)
    # A relabel (same text, later) does not move the text across.
    relabel = Correction(
        text=next(iter(small.eval)).text,
        label="other",
        source="reddit",
        provenance_kind="slack",
        provenance="U1",
        created_at=T0 + timedelta(days=9),
    )
    again = split_corrections(corrections(300) + [relabel])
    assert {c.key for c in again.eval} == small_eval
    assert in_eval_slice(relabel.key)
    # Another share or salt is another slice.
    assert {c.key for c in split_corrections(corrections(300), salt="other").eval} != small_eval


def test_correction_refuses_labels_outside_the_contract() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        Correction("x", "spam", "s", "file", "f", T0)
    with pytest.raises(ValueError, match="timezone"):
        Correction("x", "other", "s", "file", "f", datetime(2026, 1, 1))
    example = Correction("Hi", "kudos", "reddit", "slack", "U1", T0).to_example()
    assert (example.origin, example.group, example.labels) == (
        "corrections/reddit",
        "corrections:reddit",
        ["kudos"],
    )
