"""Closing the loop (issue 16): the read-back flow against the strict fakes of Zendesk, HubSpot
and GitHub, after real handoffs made by the pipeline (tests/test_handoffs.py's world).

The departments act in their own tools (an agent replies and solves, a maintainer comments and
closes, a salesperson wins a deal); the real ``readback`` Prefect flow reads it back through the
destinations' clients, stores the outcomes and refreshes the customers' stages. An API that is
down leaves its handoffs' outcomes as they were (``unknown`` when never read), loses nothing, and
the next run reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.readback import readback
from tests.test_handoffs import FEED, SOURCE, World, key, world  # noqa: F401 - the fixture
from triage.models import item_id
from triage.store import open_store

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def outcomes(w: World) -> dict[str, dict[str, Any]]:
    with open_store(w.db, read_only=True) as store:
        return {r["key"]: r for r in store.handoff_outcomes()}


def ticket_of(w: World, ext: str) -> int:
    wanted = key(ext, "zendesk")
    return next(t for t, row in w.zendesk.tickets.items() if row["external_id"] == wanted)


def issue_numbers(w: World) -> dict[str, int]:
    """Feature-request record -> the number of the issue its group got."""
    with open_store(w.db, read_only=True) as store:
        return {
            ext: int(str((store.handoff_ref(key(ext, "github")) or {})["target_id"]))
            for ext in ("f1", "f2", "f3")
        }


def run_readback(w: World) -> dict[str, Any]:
    summary: dict[str, Any] = readback(config_path=str(w.config), database=str(w.db))
    return summary


def test_readback_reads_ticket_solved_issue_closed_and_deal_won(world: World) -> None:  # noqa: F811
    world.add(FEED)
    assert world.run()["failed"] == 0
    zd, gh, hs = world.zendesk, world.github, world.hubspot
    # Support answers and solves c1's ticket (c2 joined it); c3's ticket is still waiting.
    t1 = ticket_of(world, "c1")
    created = datetime.fromisoformat(zd.tickets[t1]["created_at"])
    zd.agent_reply(t1, created + timedelta(hours=2))
    zd.solve(t1, created + timedelta(hours=20))
    # Product comments on the dark-mode group's issue and ships it; CSV export is not planned.
    numbers = issue_numbers(world)
    assert numbers["f1"] == numbers["f2"] != numbers["f3"]
    gh.maintainer_comment(numbers["f1"], T)
    gh.close(numbers["f1"], T + timedelta(days=3))
    gh.close(numbers["f3"], T + timedelta(days=1), reason="not_planned")
    # Sales wins a deal with the lead's contact.
    (contact_id,) = list(hs.objects["contacts"])
    hs.add_deal(contact_id, "closedwon", "2026-11-21T09:00:00.000Z", "2026-11-25T16:30:00.000Z")

    summary = run_readback(world)

    assert summary["failed"] == {} and summary["skipped"] == []
    assert summary["read"] == {"zendesk": 3, "hubspot": 1, "github": 3}
    got = outcomes(world)
    c1, c2, c3 = (got[key(x, "zendesk")] for x in ("c1", "c2", "c3"))
    assert c1["state"] == c2["state"] == "resolved" and c1["external_state"] == "solved"
    assert c1["first_response_at"] == created + timedelta(hours=2)
    assert c1["resolved_at"] == created + timedelta(hours=20)
    assert c3["state"] == "open" and c3["first_response_at"] is None
    f1, f2, f3 = (got[key(x, "github")] for x in ("f1", "f2", "f3"))
    assert f1["state"] == f2["state"] == "resolved" and f1["resolved_at"] == T + timedelta(days=3)
    assert f1["first_response_at"] == T and f1["comments"] >= 1  # the maintainer, not our join
    assert f3["state"] == "rejected" and f3["external_state"] == "closed:not_planned"
    s1 = got[key("s1", "hubspot")]
    assert s1["state"] == "won" and s1["resolved_at"] == datetime(2026, 11, 25, 16, 30, tzinfo=UTC)
    assert s1["first_response_at"] == datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert {r["department"] for r in got.values()} == {"support", "sales", "product"}
    assert all(r["last_error"] is None for r in got.values())
    # Batched: one show_many for three tickets, one listing for the tracker.
    assert len(zd.requests("GET", "/api/v2/tickets/show_many.json")) == 1
    # The customers' stages were refreshed from the outcomes.
    assert sum(summary["customers"].values()) >= 6
    with open_store(world.db, read_only=True) as store:
        snapshot = store.customer_snapshot()
    assert len(snapshot) == sum(summary["customers"].values())


def test_an_api_that_is_down_leaves_outcomes_unknown_and_loses_nothing(
    world: World,  # noqa: F811
) -> None:
    world.add(FEED)
    assert world.run()["failed"] == 0
    zd = world.zendesk
    world.zendesk.stop()  # the helpdesk is down before anything was read

    first = run_readback(world)

    assert set(first["failed"]) == {"zendesk"} and "zendesk" not in first["read"]
    assert first["read"] == {"hubspot": 1, "github": 3}  # the others were read
    got = outcomes(world)
    tickets = [got[key(x, "zendesk")] for x in ("c1", "c2", "c3")]
    assert all(r["state"] == "unknown" and r["last_error"] for r in tickets)
    assert got[key("s1", "hubspot")]["state"] == "open"

    # Back up: the agent solved c1's ticket meanwhile; the next run reads every ticket.
    zd.start()
    settings = world.settings()
    settings["destinations"]["zendesk"]["base_url"] = zd.url
    world.write(settings)
    t1 = ticket_of(world, "c1")
    created = datetime.fromisoformat(zd.tickets[t1]["created_at"])
    zd.agent_reply(t1, created + timedelta(minutes=30))
    zd.solve(t1, created + timedelta(hours=5))
    second = run_readback(world)
    assert second["failed"] == {}
    got = outcomes(world)
    assert got[key("c1", "zendesk")]["state"] == "resolved"
    assert got[key("c1", "zendesk")]["last_error"] is None
    assert got[key("c3", "zendesk")]["state"] == "open"

    # Down again (answering 503 this time): what was read stays, with the error noted.
    zd.fail_next(503, times=50)
    third = run_readback(world)
    assert set(third["failed"]) == {"zendesk"}
    got = outcomes(world)
    assert got[key("c1", "zendesk")]["state"] == "resolved"
    assert got[key("c1", "zendesk")]["resolved_at"] == created + timedelta(hours=5)
    assert "503" in str(got[key("c1", "zendesk")]["last_error"])
    assert len(got) == 7  # every handoff still has its row


def test_a_ticket_deleted_at_the_helpdesk_reads_as_unknown_with_a_reason(
    world: World,  # noqa: F811
) -> None:
    world.add(FEED)
    assert world.run()["failed"] == 0
    del world.zendesk.tickets[ticket_of(world, "c3")]
    assert run_readback(world)["failed"] == {}
    row = outcomes(world)[key("c3", "zendesk")]
    assert row["state"] == "unknown" and "not found" in row["last_error"]
    assert row["item_id"] == item_id(SOURCE, "c3")


@pytest.mark.parametrize("ids", [0, 101])
def test_the_zendesk_fake_refuses_show_many_outside_1_to_100_ids(
    world: World,  # noqa: F811
    ids: int,
) -> None:
    import httpx

    url = f"{world.zendesk.url}/api/v2/tickets/show_many.json"
    auth = (f"{world.zendesk.email}/token", world.zendesk.token)
    resp = httpx.get(url, params={"ids": ",".join(str(i) for i in range(1, ids + 1))}, auth=auth)
    assert resp.status_code == 400
