"""The store's guarantees, checked on both backends: the DuckDB file and a real PostgreSQL server.

Every test here takes the ``database`` fixture, once as a DuckDB file and once as a fresh database
on the throwaway server the project starts itself (``tests/pg_fixture.py``). What one backend
stores, the other must store and return the same way.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from triage.models import LABELS, Author, Mention, Rejected
from triage.routing import OUTBOX_SCHEMA, ROUTE_SCHEMA, delivery_key
from triage.store import Store, StoreTooNew, open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store location: a DuckDB file path or a PostgreSQL database URL."""
    if request.param == "duckdb":
        return str(tmp_path / "triage.duckdb")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with open_store(database) as s:
        yield s


def mention(n: int, text: str | None = None, **kw: Any) -> Mention:
    return Mention(
        source="social",
        external_id=f"post-{n}",
        text=text if text is not None else f"post number {n}",
        created_at=T0 + timedelta(minutes=n),
        fetched_at=T0 + timedelta(hours=1),
        **kw,
    )


def predictions(ids: list[str], label: str = "service_issue", review: bool = False) -> pa.Table:
    n = len(ids)
    columns: dict[str, Any] = {
        "item_id": pa.array(ids, pa.string()),
        "label": pa.array([label] * n, pa.string()),
        "labels": pa.array([[label, "kudos"]] * n, pa.list_(pa.string())),
        "score": pa.array([0.8125] * n, pa.float64()),
        "needs_review": pa.array([review] * n, pa.bool_()),
        "review_reason": pa.array([None] * n, pa.string()),
        "model_version": pa.array(["m1"] * n, pa.string()),
        "classified_at": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
    }
    for j, lab in enumerate(LABELS):
        columns[f"score_{lab}"] = pa.array([0.1 * j + 1 / 3] * n, pa.float64())
    return pa.table(columns)


def routes_and_outbox(ids: list[str], department: str = "support") -> tuple[pa.Table, pa.Table]:
    routes = pa.table(
        {
            "item_id": ids,
            "department": [department] * len(ids),
            "rule": ["r1"] * len(ids),
            "state": ["handed_off"] * len(ids),
            "routed_at": [T0] * len(ids),
        },
        schema=ROUTE_SCHEMA,
    )
    outbox = pa.table(
        {
            "key": [delivery_key(i, department, "handoff") for i in ids],
            "item_id": ids,
            "destination": [department] * len(ids),
            "kind": ["handoff"] * len(ids),
            "created_at": [T0] * len(ids),
        },
        schema=OUTBOX_SCHEMA,
    )
    return routes, outbox


def test_items_keep_their_stable_ids_and_text_exactly(store: Store) -> None:
    odd = 'quotes "x", commas, a\nnewline, tab\t, emoji 🙂, backslash \\ and é'
    batch = [
        mention(1, odd, url="https://x.example/1", author=Author("@a", "", None, 12)),
        mention(2),
    ]
    assert store.ingest("social", batch, [], {"page": 2}) == (2, 0)
    # The same batch again (a re-fetch after a crash): the stable ids absorb it.
    assert store.ingest("social", batch, [], {"page": 2}) == (0, 0)
    row = store._one("SELECT * FROM items WHERE id = ?", [batch[0].id])
    assert row is not None
    assert row["text"] == odd
    # An empty string and a missing value stay apart.
    assert row["author_name"] == ""
    assert row["author_url"] is None
    assert row["author_followers"] == 12
    assert row["created_at"] == T0 + timedelta(minutes=1)
    assert store.get_cursor("social") == {"page": 2}
    assert store.count("items") == 2


def test_text_with_a_nul_character_is_stored_without_it(store: Store) -> None:
    assert store.ingest("social", [mention(1, "before\x00after")], [], None) == (1, 0)
    assert store._scalar("SELECT text FROM items") in {"beforeafter", "before\x00after"}


def test_a_failed_batch_stores_neither_items_nor_the_cursor(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.ingest("social", [mention(1)], [], {"page": 1})

    def broken(self: Store, rejected: list[Rejected]) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(store), "quarantine", broken)
    with pytest.raises(RuntimeError):
        store.ingest("social", [mention(2), mention(3)], [], {"page": 2})
    assert store.count("items") == 1
    assert store.get_cursor("social") == {"page": 1}


def test_quarantine_keeps_a_record_once_and_clears_by_key(store: Store) -> None:
    bad = [Rejected("forms", "missing text", '{"id": 1}'), Rejected("forms", "bad date", "{}")]
    assert store.ingest("forms", [], bad, None) == (0, 2)
    assert store.ingest("forms", [], bad, None) == (0, 0)
    assert store.quarantine_counts() == {"forms": 2}
    key = store.quarantined(limit=None, source="forms")[0]["key"]
    assert store.clear_quarantine(keys=[key]) == 1
    assert store.clear_quarantine(source="forms") == 1


def test_recent_texts_are_a_sources_latest_classified_items(store: Store) -> None:
    social = [mention(n, f"social post {n}") for n in range(1, 8)]
    forum = [replace(mention(n, f"forum post {n}"), source="forum") for n in range(1, 4)]
    store.ingest("social", social, [], None)
    store.ingest("forum", forum, [], None)
    # Only classified items are history: a run reads it before classifying its own batch.
    assert store.recent_texts("social", 5) == []
    store.insert_predictions(predictions([m.id for m in social[:6]] + [forum[0].id]))
    assert store.recent_texts("social", 4) == [f"social post {n}" for n in (6, 5, 4, 3)]
    assert store.recent_texts("social", 100) == [f"social post {n}" for n in range(6, 0, -1)]
    assert store.recent_texts("forum", 100) == ["forum post 1"]
    assert store.recent_texts("nowhere", 100) == []
    assert store.recent_texts("social", 0) == []
    batch = next(iter(store.unclassified(10)))
    pairs = zip(batch.column("source").to_pylist(), batch.column("text").to_pylist(), strict=True)
    assert sorted(pairs) == [
        ("forum", "forum post 2"),
        ("forum", "forum post 3"),
        ("social", "social post 7"),
    ]


def _age(store: Store, ids: list[str], hours: int = 2) -> None:
    """Make items look stored ``hours`` ago (the floors never cover items stored just now)."""
    for item_id in ids:
        store._execute(
            f"UPDATE items SET stored_at = now() - INTERVAL '{hours} hours' WHERE id = ?",
            [item_id],
        )


def _pending(batches: Any, column: str = "id") -> list[str]:
    return sorted(i for b in batches for i in b.column(column).to_pylist())


def test_pending_work_is_found_above_each_stages_floor(store: Store) -> None:
    batch = [mention(n) for n in range(1, 6)]
    store.ingest("social", batch, [], None)
    ids = [m.id for m in batch]
    seq = {r["id"]: int(r["seq"]) for r in store._rows("SELECT id, seq FROM items")}
    assert store.pending_floor("classify") == -1
    _age(store, ids)
    # Item 3 still lacks a prediction: the floor stops under it, whatever is done above.
    store.insert_predictions(predictions([ids[0], ids[1], ids[3], ids[4]]))
    assert store.advance_floor("classify") == seq[ids[1]]
    assert _pending(store.unclassified(10)) == [ids[2]]
    # Nothing is routed, so routing's floor stays under the first item.
    assert store.advance_floor("route") == seq[ids[0]] - 1
    store.insert_predictions(predictions([ids[2]]))
    assert store.advance_floor("classify") == seq[ids[4]]
    assert _pending(store.unclassified(10)) == []
    # Items under the floor still count as history for the source's label mix.
    assert store.recent_texts("social", 3) == [f"post number {n}" for n in (5, 4, 3)]
    routes, outbox = routes_and_outbox(ids[:2])
    store.insert_routes(routes, outbox)
    assert store.advance_floor("route") == seq[ids[1]]
    assert _pending(store.unrouted(10), "item_id") == sorted(ids[2:])
    # The floor never moves down, and a new item lands above it and is found.
    assert store.advance_floor("classify") == seq[ids[4]]
    store.ingest("social", [mention(6)], [], None)
    assert _pending(store.unclassified(10)) == [mention(6).id]


def test_a_floor_stops_under_items_stored_within_the_guard(store: Store) -> None:
    # An item stored just now may sit among another ingest's rows that are not committed yet,
    # with lower seqs: a floor above it could leave those under it, never looked at.
    batch = [mention(n) for n in range(1, 5)]
    store.ingest("social", batch, [], None)
    ids = [m.id for m in batch]
    seq = {r["id"]: int(r["seq"]) for r in store._rows("SELECT id, seq FROM items")}
    _age(store, [ids[0], ids[1], ids[3]])
    store.insert_predictions(predictions(ids))
    assert store.advance_floor("classify") == seq[ids[1]]
    assert store.recent_texts("social", 4) == [f"post number {n}" for n in (4, 3, 2, 1)]
    _age(store, [ids[2]])
    assert store.advance_floor("classify") == seq[ids[3]]


def test_a_floor_far_behind_catches_up_a_few_windows_a_call(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triage.store import floors

    monkeypatch.setattr(floors, "FLOOR_WINDOW", 2)
    monkeypatch.setattr(floors, "FLOOR_WINDOWS", 2)
    batch = [mention(n) for n in range(1, 8)]
    store.ingest("social", batch, [], None)
    ids = [m.id for m in batch]
    seqs = sorted(int(r["seq"]) for r in store._rows("SELECT seq FROM items"))
    _age(store, ids)
    store.insert_predictions(predictions(ids))
    # Two windows of two seqs a call, from the bottom: -1 to 3, then to the top.
    assert seqs == list(range(seqs[0], seqs[0] + 7))
    assert store.advance_floor("classify") == min(3, seqs[-1])
    assert store.advance_floor("classify") == min(7, seqs[-1])
    assert store.advance_floor("classify") == seqs[-1]
    assert _pending(store.unclassified(10)) == []


def test_predictions_routes_and_outbox(store: Store) -> None:
    batch = [mention(n) for n in range(1, 6)]
    store.ingest("social", batch, [], None)
    ids = [m.id for m in batch]
    pending = [b for b in store.unclassified(3)]
    assert sorted(i for b in pending for i in b.column("id").to_pylist()) == sorted(ids)
    assert store.insert_predictions(predictions(ids)) == 5
    assert store.insert_predictions(predictions(ids)) == 0
    row = store._one("SELECT labels, scores FROM predictions WHERE item_id = ?", [ids[0]])
    assert row is not None
    assert list(row["labels"]) == ["service_issue", "kudos"]
    scores = json.loads(row["scores"])
    assert list(scores) == list(LABELS)
    assert row["scores"].startswith('{"kudos": 0.33333, ')
    assert [b.num_rows for b in store.unclassified(10)] == []
    unrouted = [b for b in store.unrouted(10)]
    assert sum(b.num_rows for b in unrouted) == 5
    assert set(unrouted[0].column_names) >= {"item_id", "source", "text", "label", "score"}
    routes, outbox = routes_and_outbox(ids)
    assert store.insert_routes(routes, outbox) == (5, 5)
    assert store.insert_routes(routes, outbox) == (0, 0)
    assert [b.num_rows for b in store.unrouted(10)] == []
    status = store.status()
    assert status["items_total"] == 5
    assert status["by_label"] == {"service_issue": 5}
    assert status["by_department"] == {"support": 5}
    assert status["deliveries"]["pending"] == 5
    context = store.delivery_context(ids)
    assert context[ids[0]].text == "post number 1"


def test_the_outbox_state_machine(store: Store) -> None:
    batch = [mention(n) for n in range(1, 4)]
    store.ingest("social", batch, [], None)
    ids = [m.id for m in batch]
    store.insert_predictions(predictions(ids))
    store.insert_routes(*routes_and_outbox(ids))
    due = store.due_deliveries(10, ["support"])
    assert len(due) == 3
    first, second, third = (r["key"] for r in due)
    store.mark_sending(first)
    store.mark_sent(first, "T1")
    assert store.mark_failed(second, "HTTP 503", 0, 5) == "failed"
    store.mark_sending(third)
    assert store.mark_lookup_failed(third, "lookup: timeout", 0, 1) == "dead"
    assert store.due_deliveries(10, ["nowhere"]) == []
    left = store.due_deliveries(10)
    assert [r["key"] for r in left] == [second]
    assert store.unannounced_dead()[0]["key"] == third
    assert store.retry_dead("support") == 1
    assert {r["key"] for r in store.due_deliveries(10)} == {second, third}
    assert store.status()["deliveries"]["sent"] == 1


def test_a_review_decision_is_applied_once(store: Store) -> None:
    store.ingest("social", [mention(1)], [], None)
    item = mention(1).id
    store.insert_predictions(predictions([item], review=True))
    store.insert_routes(*routes_and_outbox([item]))
    decision = {
        "item_id": item,
        "action": "relabel",
        "value": "kudos",
        "user_id": "U1",
        "decided_at": T0,
        "after_state": "released",
    }
    assert store.insert_review_decisions([{**decision, "decision_id": "d1"}]) == 1
    # A second click on the same item loses to the first.
    assert store.insert_review_decisions([{**decision, "decision_id": "d2", "user_id": "U2"}]) == 0
    audit = {k: decision[k] for k in ("item_id", "action", "value", "user_id", "decided_at")}
    assert store.insert_review_audit([{**audit, "decision_id": "d1", "outcome": "applied"}]) == 1
    assert store.insert_review_audit([{**audit, "decision_id": "d1", "outcome": "applied"}]) == 0
    assert store.audited_decisions(["d1", "d9"]) == {"d1"}
    assert store.decided_items([item, "other"]) == {item}
    store.relabel_predictions(
        pa.table({"item_id": [item], "label": ["kudos"], "labels": [["kudos"]]})
    )
    store.set_routes(
        pa.table(
            {"item_id": [item], "department": ["marketing"], "state": ["released"], "rule": ["x"]}
        )
    )
    store.add_training_examples(
        pa.table(
            {
                "item_id": [item],
                "label": ["kudos"],
                "previous_label": ["service_issue"],
                "decided_by": ["U1"],
                "decided_at": pa.array([T0], pa.timestamp("us", tz="UTC")),
            }
        )
    )
    assert store.training_examples() == [{"text": "post number 1", "label": "kudos"}]
    assert store.status()["by_department"] == {"marketing": 1}
    store.mark_message_updated([item])
    assert store.unannounced_decisions() == []


def test_a_feature_mention_is_counted_once(store: Store) -> None:
    store.ingest("social", [mention(1)], [], None)
    group = {"id": "g1", "destination": "product", "title": "Dark mode", "signature": "dark"}
    store.add_feature_mention("k1", mention(1).id, 0.9, "g1", new_group=group, signature="dark")
    store.add_feature_mention("k1", mention(1).id, 0.9, "g1", new_group=group, signature="dark")
    assert (store.feature_group("g1") or {})["mentions"] == 1
    store.begin_handoff("h1", mention(1).id, "support", "zendesk", "create")
    store.finish_handoff("h1", "42", "https://helpdesk.example/42", note=True)
    assert [r["key"] for r in store.pending_notes()] == ["h1"]


def test_status_is_the_same_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    results = []
    for database in (str(tmp_path / "a.duckdb"), pg_url):
        with open_store(database) as s:
            batch = [mention(n) for n in range(1, 8)]
            s.ingest("social", batch, [Rejected("social", "no text", "{}")], {"c": 1})
            s.insert_predictions(predictions([m.id for m in batch[:5]]))
            s.insert_routes(*routes_and_outbox([m.id for m in batch[:4]]))
            results.append(s.status())
    assert results[0] == results[1]


def test_a_newer_schema_on_the_server_is_refused(pg_url: str) -> None:
    with open_store(pg_url) as s:
        s._execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(StoreTooNew, match="schema version 999"), open_store(pg_url):
        pass


def test_server_connections_give_up_on_a_silent_peer_within_a_minute(pg_url: str) -> None:
    # A write in flight to a server whose link dropped is not covered by keepalives (they only
    # probe idle connections): without a TCP user timeout the kernel retries for ~15 minutes.
    from triage.store.postgres import connect

    con = connect(pg_url)
    try:
        params = con.info.get_parameters()
        assert params["tcp_user_timeout"] == "60000"
        assert (int(params["keepalives_idle"]), int(params["keepalives_count"])) == (30, 3)
        # libpq set it on the socket itself (TCP_USER_TIMEOUT, in milliseconds).
        sock = socket.socket(fileno=os.dup(con.fileno()))
        try:
            assert sock.family in (socket.AF_INET, socket.AF_INET6)  # the test server is TCP
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 60_000
        finally:
            sock.close()
    finally:
        con.close()
