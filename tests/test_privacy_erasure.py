"""Retention and erasure (issue 18), on a real pipeline run against the strict local fakes.

Retention runs with an injected clock; erasure (``triage forget``) is checked by searching the
bytes of the DuckDB file after a CHECKPOINT and every outbox preview file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flows import triage as flow_mod
from flows.settings import load_config
from tests.test_handoffs import FEED, World, world  # noqa: F401 - the shared fixture
from triage.cli import app
from triage.models import item_id
from triage.privacy.registry import ERASED, PERSONAL_TABLES
from triage.privacy.retention import expire_personal_data

HANDLE = "@jane.doe"
EMAIL = "jane.doe@example.org"
# Distinctive words of her texts: none may survive an erasure.
HER_WORDS = ["zebra-striped", "ultramarine", "kumquat"]
HER_FEED: list[tuple[str, str, str]] = [
    ("j1", HANDLE, f"The app crashes on login every time, zebra-striped screen, mail {EMAIL}"),
    ("j2", HANDLE, "Love Nimbus Notes, best note app ever, ultramarine theme, thank you team!"),
    ("j3", HANDLE, "Please add a kumquat colour theme option to the app, would love it"),
    ("o1", "@sam", f"I agree with {HANDLE}: the app crashes on login for me too"),
    ("s9", EMAIL, "How much is the business plan for 40 seats? need a quote"),
]


def _settings(w: World, tmp_path: Path, **privacy: object) -> None:
    data = w.settings()
    data["outbox_dir"] = str(tmp_path / "outbox")
    data["destinations"]["copy"] = {"type": "preview", "channel": "#copy"}
    for dept in ("support", "marketing", "product"):
        data["departments"][dept]["also"] = ["copy"]
    if privacy:
        data["privacy"] = privacy
    w.write(data)


def _db_bytes(db: Path) -> bytes:
    with duckdb.connect(str(db)) as con:
        con.execute("CHECKPOINT")
    data = db.read_bytes()
    wal = Path(str(db) + ".wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def _found(blob: bytes) -> list[str]:
    low = blob.lower()
    needles = ["jane.doe", EMAIL, *HER_WORDS]
    return [n for n in needles if n.encode() in low]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------ retention
def test_retention_blanks_text_and_authors_after_the_period_and_keeps_aggregates(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    _settings(
        world,
        tmp_path,
        retention={"items": "30d", "testimonials": "30d", "training_examples": "10d"},
    )
    world.add(FEED)
    world.run()
    cfg = load_config(world.config, database=str(world.db))
    status_before = _status(world)
    now = datetime.now(UTC)

    assert expire_personal_data(cfg, now=now + timedelta(days=29)) == {
        "items": 0,
        "testimonials": 0,
        "training_examples": 0,
    }
    done = expire_personal_data(cfg, now=now + timedelta(days=31))
    assert done["items"] == len(FEED) and done["testimonials"] == 1
    with duckdb.connect(str(world.db), read_only=True) as con:
        left = con.execute(
            "SELECT count(*) FROM items WHERE text <> ? OR author_handle IS NOT NULL "
            "OR author_name IS NOT NULL OR raw IS NOT NULL",
            [ERASED],
        ).fetchone()
        testimonial = con.execute("SELECT text, author_handle FROM testimonials").fetchone()
        runs = con.execute("SELECT count(*) FROM retention_runs").fetchone()
    assert left == (0,)
    assert testimonial == (ERASED, None)
    assert runs is not None and runs[0] >= 6
    # Counts by label, department, source and delivery are what reports read: unchanged.
    after = _status(world)
    for key in ("items_total", "by_label", "by_department", "by_source", "deliveries"):
        assert after[key] == status_before[key], key
    # A second pass finds nothing left to blank.
    assert expire_personal_data(cfg, now=now + timedelta(days=32))["items"] == 0


def test_the_scheduled_flow_runs_retention(world: World, tmp_path: Path) -> None:  # noqa: F811
    _settings(world, tmp_path, retention={"items": "365d"})
    world.add(FEED[:3])
    first = flow_mod.triage(config_path=str(world.config), database=str(world.db))
    assert first["retention"] == {"items": 0}
    with duckdb.connect(str(world.db)) as con:
        con.execute(
            "UPDATE items SET stored_at = stored_at - INTERVAL 400 DAY WHERE external_id = 'c1'"
        )
    second = flow_mod.triage(config_path=str(world.config), database=str(world.db))
    assert second["retention"] == {"items": 1}
    with duckdb.connect(str(world.db), read_only=True) as con:
        row = con.execute("SELECT text FROM items WHERE external_id = 'c1'").fetchone()
    assert row == (ERASED,)


def _status(w: World) -> dict[str, object]:
    out = _invoke("status", "--json", "--config", str(w.config), "--db", str(w.db))
    result: dict[str, object] = json.loads(out)
    return result


# ------------------------------------------------------------------------ erasure
def test_forget_leaves_no_trace_in_the_database_file_or_the_outbox(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    _settings(world, tmp_path)
    world.add(FEED + HER_FEED)
    # A malformed record of hers (no text) is quarantined with its raw payload.
    with world.feed.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "bad", "author": HANDLE, "note": "ultramarine"}) + "\n")
    world.run()
    j1 = item_id("social", "j1")
    with duckdb.connect(str(world.db)) as con:
        # A reviewer's decision and the training example it kept, as the review server writes.
        con.execute(
            "INSERT INTO review_decisions (item_id, decision_id, action, user_id, decided_at, "
            "after_state) VALUES (?, 'd1', 'confirm', 'U1', now(), 'released')",
            [j1],
        )
        con.execute(
            "INSERT INTO training_examples (item_id, text, label, decided_by, decided_at) "
            "SELECT id, text, 'service_issue', 'U1', now() FROM items WHERE id = ?",
            [j1],
        )
        # Issue 15's corrections and issue 16's profiles, merges and read-back, as they write them.
        con.execute(
            "INSERT INTO corrections (id, text_key, text, label, source, provenance_kind, "
            "provenance, item_id, created_at) SELECT 'c-j1', 'k', text, 'service_issue', "
            "'social', 'file', 'fixes.csv', id, now() FROM items WHERE id = ?",
            [j1],
        )
        con.execute(
            "INSERT INTO customer_profiles (id, display_name, stage, identities, mentions, "
            "first_seen, last_seen) VALUES ('p1', 'Jane.Doe', 'customer', "
            '\'["handle:social:jane.doe", "email:jane.doe@example.org"]\', 4, now(), now()), '
            "('p2', 'Sam', 'customer', '[\"handle:social:sam\"]', 1, now(), now())"
        )
        con.execute(
            "INSERT INTO customer_merges (a_key, b_key) VALUES "
            "('handle:social:jane.doe', 'email:jane.doe@example.org')"
        )
        con.execute(
            "INSERT INTO handoff_outcomes (key, item_id, department, system, state, handed_at) "
            "VALUES ('h-j1', ?, 'support', 'zendesk', 'open', now())",
            [j1],
        )
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    assert quarantined == (1,)
    # Before: she is everywhere, and the byte search can see her (it is not compressed away).
    assert set(_found(_db_bytes(world.db))) == {"jane.doe", EMAIL, *HER_WORDS}
    previews = tmp_path / "outbox"
    assert _found("".join(p.read_text() for p in previews.rglob("*.json")).encode())
    others = _item_count(world) - 4

    args = ["--config", str(world.config), "--db", str(world.db)]
    dry = json.loads(_invoke("forget", "--author", HANDLE, "--dry-run", "--json", *args))
    assert dry["items"] == 3 and dry["removed"]["items"] == 3 and dry["erasure_id"] is None
    assert set(_found(_db_bytes(world.db))) == {"jane.doe", EMAIL, *HER_WORDS}  # untouched

    out = _invoke("forget", "--author", HANDLE, *args)
    assert "removed 3 items (social 3)" in out
    assert "deliveries were already made" in out and "zendesk" in out
    # Her e-mail is also the handle of a sales lead: erased by address.
    out = _invoke("forget", "--author", EMAIL, *args)
    assert "removed 1 items" in out

    assert _found(_db_bytes(world.db)) == []
    assert _found("".join(p.read_text() for p in previews.rglob("*.json")).encode()) == []
    assert _item_count(world) == others
    with duckdb.connect(str(world.db), read_only=True) as con:
        audits = con.execute("SELECT items, removed, deliveries FROM erasures").fetchall()
        sam = con.execute("SELECT text FROM items WHERE external_id = 'o1'").fetchone()
        gone = {
            t.table: con.execute(
                f"SELECT count(*) FROM {t.table} WHERE {t.item_column} = ?", [j1]
            ).fetchone()
            for t in PERSONAL_TABLES
            if t.item_column
        }
    assert sorted(a[0] for a in audits) == [1, 3]
    assert _found(json.dumps([list(map(str, a)) for a in audits]).encode()) == []
    assert all(n == (0,) for n in gone.values()), gone
    assert sam is not None and "[erased]" in sam[0] and "crashes on login" in sam[0]
    with duckdb.connect(str(world.db), read_only=True) as con:
        profiles = con.execute("SELECT id FROM customer_profiles").fetchall()
        left = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()
            for t in ("corrections", "customer_merges", "handoff_outcomes")
        ]
    assert profiles == [("p2",)] and left == [(0,), (0,), (0,)]
    # The rewritten file is a working store: the next run adds to it.
    world.add([("n1", "@new", "The app crashes on login, please fix it")], day=22)
    world.run()
    assert _item_count(world) == others + 1


def _item_count(w: World) -> int:
    with duckdb.connect(str(w.db), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else 0


def test_forget_refuses_what_cannot_identify_anyone(world: World) -> None:  # noqa: F811
    result = CliRunner().invoke(app, ["forget", "--author", "@", "--config", str(world.config)])
    assert result.exit_code == 2 and "too short" in result.output


@pytest.mark.parametrize("author", ["@jane.doe", "JANE.DOE", "jane.doe"])
def test_handle_spellings_find_the_same_person(author: str) -> None:
    from triage.privacy.erasure import identifiers

    handles, _, needles = identifiers(author)
    assert set(handles) == {"jane.doe", "@jane.doe"} and "@jane.doe" in needles


def test_forget_finds_a_fediverse_handle_as_the_source_stored_it(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    # "@user@instance" was read as an e-mail address once its '@' was stripped: the handle as
    # stored (with its '@') matched nothing, nothing was erased, and the erasure was recorded.
    fedi = "@yusuf_writes@writing.example"
    world.add(
        FEED[:2]
        + [
            ("y1", fedi, "The app crashes on login every time, kumquat screen"),
            ("y2", fedi, "Love Nimbus Notes, ultramarine theme, thank you team!"),
        ]
    )
    world.run()
    before = _item_count(world)
    result = CliRunner().invoke(
        app,
        ["forget", "--author", fedi, "--config", str(world.config), "--db", str(world.db)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("removed 2 items (social 2)")
    assert _item_count(world) == before - 2
    left = _db_bytes(world.db).lower()
    assert [n for n in ("yusuf_writes", "kumquat", "ultramarine") if n.encode() in left] == []
    # A spelling nobody used removes nothing, and says so rather than pass for an erasure.
    nobody = ["forget", "--author", "@nobody@writing.example", "--config", str(world.config)]
    result = CliRunner().invoke(app, [*nobody, "--db", str(world.db)])
    assert result.exit_code == 0 and "warning: no stored item is by" in result.output
