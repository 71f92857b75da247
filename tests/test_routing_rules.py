"""Routing against a hand-written table, from the README's contract (not from the code).

README, "How it works", "Configuration" and "Department handoffs": the first matching rule wins; a
rule's conditions are ``label``, ``source``, ``min_score`` (at least this score) and ``keywords``
(any of them, case-insensitive); a rule whose department is null keeps the item for nobody, and an
item no rule matches is kept and audited too. Marketing reviews every routed item; an item flagged
for review always waits; otherwise ``routing.auto_handoff.<label>`` decides (true, false or a
minimum score) and a label without an entry follows its department's ``auto_handoff`` (default:
support only). A handoff goes to the department's destination and every ``also`` one, one delivery
per item, destination and kind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pytest
import yaml

from flows.settings import load_config
from triage.config import Config
from triage.routing import (
    auto_handoff,
    delivery_key,
    department_for,
    release_handoffs,
    route_batch,
)

CONFIG = {
    "sources": [],
    "routing": {
        "rules": [
            {"name": "security", "keywords": ["hacked", "phishing"], "department": "support"},
            {
                "name": "vip",
                "source": "forms",
                "label": "sales_lead",
                "min_score": 0.8,
                "department": "sales",
            },
            {"name": "partners", "source": "partners", "department": "sales"},
            {"name": "si", "label": "service_issue", "department": "support"},
            {"name": "sl", "label": "sales_lead", "department": "sales"},
            {"name": "fr", "label": "feature_request", "department": "product"},
            {"name": "kd", "label": "kudos", "min_score": 0.3, "department": "marketing"},
            {"name": "spam", "label": "other", "department": None},
        ],
        "auto_handoff": {"sales_lead": 0.9, "kudos": True, "feature_request": False},
    },
    "destinations": {
        d: {"type": "slack", "channel": f"#{d}"}
        for d in ("review", "support-desk", "product-desk", "sales-desk", "kudos-desk")
    },
    "review": {"destination": "review"},
    "departments": {
        "support": {"destination": "support-desk", "also": ["product-desk"]},
        "sales": {"destination": "sales-desk"},
        "product": {"destination": "product-desk"},
        "marketing": {"destination": "kudos-desk"},
    },
}

REVIEW = "awaiting_review"
AUTO = "auto_handoff"
KEPT = "archived"


class Row(NamedTuple):
    item: str
    source: str
    text: str
    label: str
    score: float
    flagged: bool
    department: str | None
    rule: str
    state: str
    handoffs: tuple[str, ...]


# fmt: off
TABLE = [
    # Keywords, any case, and the first matching rule wins over a later label rule.
    Row("a", "social", "My account was HACKED", "kudos", 0.9, False, "support", "security", AUTO,
        ("support-desk", "product-desk")),
    Row("b", "social", "Phishing link in a DM", "other", 0.99, False, "support", "security", AUTO,
        ("support-desk", "product-desk")),
    # Every condition of a rule must hold: source, label and min_score (inclusive).
    Row("c", "forms", "need a quote", "sales_lead", 0.85, False, "sales", "vip", REVIEW, ()),
    Row("d", "forms", "need a quote", "sales_lead", 0.8, False, "sales", "vip", REVIEW, ()),
    Row("e", "forms", "need a quote", "sales_lead", 0.79, False, "sales", "sl", REVIEW, ()),
    Row("f", "social", "need a quote", "sales_lead", 0.95, False, "sales", "sl", AUTO,
        ("sales-desk",)),
    # A per-label minimum score is inclusive.
    Row("g", "forms", "need a quote", "sales_lead", 0.9, False, "sales", "vip", AUTO,
        ("sales-desk",)),
    Row("h", "forms", "need a quote", "sales_lead", 0.89, False, "sales", "vip", REVIEW, ()),
    # No per-label entry: the department decides (support hands off by default).
    Row("i", "social", "app crashes", "service_issue", 0.6, False, "support", "si", AUTO,
        ("support-desk", "product-desk")),
    # Flagged for review always waits, whatever the settings say.
    Row("j", "social", "app crashes", "service_issue", 0.99, True, "support", "si", REVIEW, ()),
    Row("k", "forms", "need a quote", "sales_lead", 0.99, True, "sales", "vip", REVIEW, ()),
    Row("l", "social", "love it", "kudos", 0.95, True, "marketing", "kd", REVIEW, ()),
    # Per-label false wins over nothing; per-label true wins over marketing's default (false).
    Row("m", "social", "dark mode please", "feature_request", 0.99, False, "product", "fr", REVIEW,
        ()),
    Row("n", "social", "love it", "kudos", 0.3, False, "marketing", "kd", AUTO, ("kudos-desk",)),
    # Nothing matches (kudos under its min_score) or a rule for nobody: kept, handed to nobody.
    Row("o", "social", "love it", "kudos", 0.29, False, None, "unmatched", KEPT, ()),
    Row("p", "social", "buy followers", "other", 0.99, False, None, "spam", KEPT, ()),
    # A source-only rule takes every label of its source, and only of its source; a rule's source
    # alone does not make it match (vip also wants a sales lead).
    Row("q", "partners", "app crashes", "service_issue", 0.9, False, "sales", "partners", REVIEW,
        ()),
    Row("r", "forms", "app crashes", "service_issue", 0.9, False, "support", "si", AUTO,
        ("support-desk", "product-desk")),
    # An earlier rule keeps what it matched, even when a later rule would match too.
    Row("s", "partners", "we were hacked", "sales_lead", 0.95, False, "support", "security", AUTO,
        ("support-desk", "product-desk")),
]
# fmt: on


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("routing") / "triage.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return load_config(path)


def batch(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "item_id": [r.item for r in rows],
            "source": [r.source for r in rows],
            "text": [r.text for r in rows],
            "label": [r.label for r in rows],
            "score": [r.score for r in rows],
            "needs_review": [r.flagged for r in rows],
        }
    )


def expected_deliveries(rows: list[Row]) -> set[tuple[str, str, str]]:
    out = set()
    for r in rows:
        if r.department is not None:
            out.add((r.item, "review", "review"))
        out |= {(r.item, dest, "handoff") for dest in r.handoffs}
    return out


def test_the_table_routes_as_documented(config: Config) -> None:
    before = datetime.now(UTC)
    routes, outbox = route_batch(config, batch(TABLE))
    after = datetime.now(UTC)
    got = routes.select(["item_id", "department", "rule", "state"]).to_pylist()
    assert [tuple(g.values()) for g in got] == [
        (r.item, r.department, r.rule, r.state) for r in TABLE
    ]
    deliveries = outbox.select(["item_id", "destination", "kind"]).to_pylist()
    assert len(deliveries) == len(expected_deliveries(TABLE))
    assert {tuple(d.values()) for d in deliveries} == expected_deliveries(TABLE)
    keys = outbox.column("key").to_pylist()
    assert keys == [delivery_key(d["item_id"], d["destination"], d["kind"]) for d in deliveries]
    assert len(set(keys)) == len(keys)
    for stamps in (routes.column("routed_at"), outbox.column("created_at")):
        assert all(before <= t <= after for t in stamps.to_pylist())


@pytest.mark.parametrize("row", TABLE, ids=[r.item for r in TABLE])
def test_each_row_alone_routes_the_same(config: Config, row: Row) -> None:
    # One row per batch: no other row can hide a rule that only works by accident of the batch.
    routes, outbox = route_batch(config, batch([row]))
    assert routes.select(["department", "rule", "state"]).to_pylist() == [
        {"department": row.department, "rule": row.rule, "state": row.state}
    ]
    deliveries = outbox.select(["item_id", "destination", "kind"]).to_pylist()
    assert {tuple(d.values()) for d in deliveries} == expected_deliveries([row])
    assert department_for(config, row.source, row.text, row.label, row.score) == row.department
    if row.department is not None:
        auto = auto_handoff(config, row.department, row.label, row.score, row.flagged)
        assert auto is (row.state == AUTO)


def test_a_record_batch_routes_like_a_table(config: Config) -> None:
    # The flow routes the store's Arrow record batches, not tables.
    (record_batch,) = batch(TABLE).to_batches()
    routes, outbox = route_batch(config, record_batch)
    got = routes.select(["item_id", "department", "rule", "state"]).to_pylist()
    assert [tuple(g.values()) for g in got] == [
        (r.item, r.department, r.rule, r.state) for r in TABLE
    ]
    deliveries = outbox.select(["item_id", "destination", "kind"]).to_pylist()
    assert {tuple(d.values()) for d in deliveries} == expected_deliveries(TABLE)


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set far from UTC (and back afterwards)."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14 all year
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_routes_and_deliveries_are_stamped_in_utc_whatever_the_local_zone(config: Config) -> None:
    before = datetime.now(UTC)
    routes, outbox = route_batch(config, batch(TABLE[:3]))
    released = release_handoffs(config, [("x", "support")])
    after = datetime.now(UTC)
    for stamps in (
        routes.column("routed_at"),
        outbox.column("created_at"),
        released.column("created_at"),
    ):
        assert all(before <= t <= after for t in stamps.to_pylist())


def test_an_empty_batch_routes_nothing(config: Config) -> None:
    routes, outbox = route_batch(config, batch([]))
    assert routes.num_rows == 0 and outbox.num_rows == 0


def test_without_a_review_destination_only_handoffs_are_queued(tmp_path: Path) -> None:
    raw = {k: v for k, v in CONFIG.items() if k != "review"}
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(path)
    _, outbox = route_batch(cfg, batch(TABLE))
    got = {tuple(d.values()) for d in outbox.select(["item_id", "destination", "kind"]).to_pylist()}
    assert got == {d for d in expected_deliveries(TABLE) if d[2] == "handoff"}


def test_released_items_go_to_every_destination_of_their_department(config: Config) -> None:
    before = datetime.now(UTC)
    rows = release_handoffs(config, [("x", "support"), ("y", "sales"), ("x", "support")])
    assert rows.select(["item_id", "destination", "kind"]).to_pylist() == [
        {"item_id": "x", "destination": "support-desk", "kind": "handoff"},
        {"item_id": "x", "destination": "product-desk", "kind": "handoff"},
        {"item_id": "y", "destination": "sales-desk", "kind": "handoff"},
        {"item_id": "x", "destination": "support-desk", "kind": "handoff"},
        {"item_id": "x", "destination": "product-desk", "kind": "handoff"},
    ]
    keys = rows.column("key").to_pylist()
    # Released twice, keyed once: the outbox stores one delivery per key.
    assert keys[0] == keys[3] and keys[1] == keys[4] and len(set(keys)) == 3
    assert keys[0] == delivery_key("x", "support-desk", "handoff")
    assert all(before <= t <= datetime.now(UTC) for t in rows.column("created_at").to_pylist())


def test_delivery_keys_differ_by_item_destination_and_kind() -> None:
    base = delivery_key("x", "support-desk", "handoff")
    assert base == delivery_key("x", "support-desk", "handoff")
    others = [("y", "support-desk", "handoff"), ("x", "sales-desk", "handoff")]
    others.append(("x", "support-desk", "review"))
    assert len({base, *(delivery_key(*o) for o in others)}) == 4
