"""Drift watch: daily aggregates per source and the days that leave their usual band."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from classifiers.drift import (
    MEAN_TOP_SCORE,
    REVIEW_RATE,
    DailyStats,
    DriftSettings,
    daily_stats,
    detect_drift,
)
from flows.drift import drift_message

DAY0 = date(2026, 4, 1)


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def _predictions(
    days: int,
    per_day: int = 80,
    seed: int = 0,
    shift: dict[int, dict[str, float]] | None = None,
) -> pa.Table:
    """Per-item predictions of two sources over ``days`` days, steady unless ``shift`` says.

    ``shift[day] = {"review": p, "service_issue": p}`` changes one day of the ``appstore``
    source: its review probability, or the probability of a service issue.
    """
    rng = random.Random(seed)
    rows = []
    for d in range(days):
        for source in ("appstore", "reddit"):
            change = (shift or {}).get(d, {}) if source == "appstore" else {}
            for i in range(per_day):
                service = rng.random() < change.get("service_issue", 0.25)
                label = "service_issue" if service else rng.choice(["kudos", "other", "sales_lead"])
                review = rng.random() < change.get("review", 0.3)
                rows.append(
                    {
                        "item_id": f"{source}-{d}-{i}",
                        "source": source,
                        "classified_at": datetime(2026, 4, 1, 12, tzinfo=UTC) + timedelta(days=d),
                        "label": label,
                        "score": rng.uniform(0.5, 0.7) if review else rng.uniform(0.8, 1.0),
                        "needs_review": review,
                    }
                )
    return pa.Table.from_pylist(rows)


def test_daily_stats_per_source_and_day() -> None:
    columns = ("item_id", "source", "label", "score", "needs_review")
    rows = [
        ("a", "s", "kudos", 0.9, False),
        ("b", "s", "other", 0.5, True),
        ("c", "s", "kudos", 0.7, False),
        ("d", "t", "kudos", 0.6, True),
    ]
    table = pa.Table.from_pylist(
        [{**dict(zip(columns, row, strict=True)), "day": DAY0} for row in rows]
    )
    stats = daily_stats(table)
    assert [(s.source, s.day, s.items) for s in stats] == [("s", DAY0, 3), ("t", DAY0, 1)]
    s = stats[0]
    assert s.review_rate == pytest.approx(1 / 3, abs=1e-4)
    assert s.mean_top_score == pytest.approx(0.7)
    assert s.label_share["kudos"] == pytest.approx(2 / 3, abs=1e-4)
    assert s.label_share["service_issue"] == 0.0
    assert s.examples["needs_review"] == ["b"]
    assert s.examples["low_score"][0] == "b"
    assert s.examples["label:kudos"] == ["a", "c"]
    assert daily_stats(table.slice(0, 0)) == []


def test_a_steady_stream_raises_no_alert() -> None:
    history = daily_stats(_predictions(40))
    assert len(history) == 80
    assert detect_drift(history) == []


def test_a_jump_in_review_rate_is_flagged_with_source_day_and_examples() -> None:
    history = daily_stats(_predictions(30, shift={29: {"review": 0.8}}))
    alerts = detect_drift(history)
    assert alerts, "the jump was not flagged"
    day = DAY0 + timedelta(days=29)
    assert {(a.source, a.day) for a in alerts} == {("appstore", day)}
    metrics = {a.metric for a in alerts}
    assert REVIEW_RATE in metrics and MEAN_TOP_SCORE in metrics
    review = next(a for a in alerts if a.metric == REVIEW_RATE)
    assert review.direction == "up" and review.value > review.high
    assert review.baseline_days == 28
    assert len(review.example_ids) == 5
    assert all(i.startswith("appstore-29-") for i in review.example_ids)
    assert "appstore on 2026-04-30: review rate up to" in review.summary()
    assert review.to_json()["metric"] == REVIEW_RATE


def test_a_change_in_label_mix_names_the_label() -> None:
    history = daily_stats(_predictions(20, shift={19: {"service_issue": 0.75}}))
    alerts = [a for a in detect_drift(history) if a.metric.startswith("label_share:")]
    assert "label_share:service_issue" in {a.metric for a in alerts}
    alert = next(a for a in alerts if a.metric == "label_share:service_issue")
    assert alert.direction == "up"
    assert "share of service_issue up" in alert.summary()
    assert all(i.startswith("appstore-19-") for i in alert.example_ids)


def test_no_judgement_without_enough_history_or_items() -> None:
    # Six days of history are not enough to learn a band (the default needs seven).
    history = daily_stats(_predictions(7, shift={6: {"review": 0.9}}))
    assert detect_drift(history) == []
    assert detect_drift(history, DriftSettings(min_history=6))
    # A quiet day (few items) is neither judged nor part of a baseline.
    quiet = daily_stats(_predictions(20, per_day=10, shift={19: {"review": 0.9}}))
    assert detect_drift(quiet) == []


def test_the_band_allows_for_a_steady_history_and_a_small_day() -> None:
    base = [
        DailyStats("s", DAY0 + timedelta(days=d), 1000, 0.30, 0.85, {"kudos": 1.0})
        for d in range(10)
    ]
    day10 = DAY0 + timedelta(days=10)
    tiny = DailyStats("s", day10, 1000, 0.33, 0.84, {"kudos": 0.97, "other": 0.03})
    assert detect_drift([*base, tiny]) == []  # MAD is 0: the floor keeps the band open
    big = DailyStats("s", day10, 1000, 0.45, 0.85, {"kudos": 1.0})
    assert [a.metric for a in detect_drift([*base, big])] == [REVIEW_RATE]
    # The same move measured on 100 items is within that day's sampling noise.
    assert detect_drift([*base, DailyStats("s", day10, 100, 0.45, 0.85, {"kudos": 1.0})]) == []
    # `since` judges only recent days.
    assert detect_drift([*base, big], since=DAY0 + timedelta(days=11)) == []


def test_drift_examples_show_where_a_public_link_leads() -> None:
    # The examples link to each item's own URL, which its poster chose; labelled with our item id
    # alone, a link to anywhere read as one of ours.
    rows = [{"summary": "source web-form: review rate 0.9", "example_ids": '["a1", "b2", "c3"]'}]
    links = {
        "a1": "https://evil.example/slack-login?next=1",
        "b2": "https://bad.example/a b",  # not a URL Slack reads: shown as text
        "c3": "http://[",
    }
    text = drift_message(rows, links)["text"]
    assert "<https://evil.example/slack-login?next=1|a1> (evil.example)" in text
    assert "`b2`" in text and "`c3`" in text
