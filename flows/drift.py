"""Drift watch after each triage run: per source and day, is the model behaving unusually?

The engine is :mod:`classifiers.drift` (review rate, label mix and mean top score against each
source's usual band). After a run, the days the run could have touched (yesterday and today,
UTC) are judged against the ``models.drift.window`` days before them. Each signal that left its
band is recorded in ``drift_alerts`` under (source, day, signal), so it is announced once, however
many runs see it; all alerts not yet announced go out together as one Slack message, naming the
source, the signal, its value and band, with links to example items.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from classifiers.drift import DailyStats, DriftAlert, DriftSettings, daily_stats, detect_drift
from flows.learning import announcer, models_config
from triage.config import Config
from triage.destinations.alerts import notify
from triage.keys import stable_key
from triage.models import LABELS
from triage.slack.messages import inert, plain_url
from triage.store import open_store

log = logging.getLogger("triage.drift")

_EXAMPLES = 3
_SLACK_TEXT = 3900


def drift_settings(config: Config) -> DriftSettings:
    """The :class:`DriftSettings` of ``models.drift``."""
    d = models_config(config).drift
    return DriftSettings(
        window=int(d.get("window", 28)),
        min_history=int(d.get("min_history", 7)),
        k=float(d.get("k", 4.0)),
        min_items=int(d.get("min_items", 20)),
        floor={
            "review_rate": float(d.get("review_rate_floor", 0.05)),
            "mean_top_score": float(d.get("mean_top_score_floor", 0.03)),
            "label_share:": float(d.get("label_share_floor", 0.05)),
        },
    )


def _baseline_day(row: dict[str, Any]) -> DailyStats:
    """A baseline day from :meth:`Store.drift_daily` (rounded as :func:`daily_stats` rounds)."""
    return DailyStats(
        source=str(row["source"]),
        day=row["day"],
        items=int(row["items"]),
        review_rate=round(float(row["review_rate"]), 4),
        mean_top_score=round(float(row["mean_top_score"]), 4),
        top_score_sd=round(float(row["top_score_sd"] or 0.0), 4),
        label_share={lab: round(float(row[f"share_{lab}"]), 4) for lab in LABELS},
    )


def alert_row(alert: DriftAlert) -> dict[str, Any]:
    """The ``drift_alerts`` row of an alert (its key: source, day and signal)."""
    return {
        "key": f"{alert.source}|{alert.day.isoformat()}|{alert.metric}",
        "source": alert.source,
        "day": alert.day,
        "metric": alert.metric,
        "value": alert.value,
        "low": alert.low,
        "high": alert.high,
        "median": alert.median,
        "items": alert.items,
        "example_ids": json.dumps(alert.example_ids[:_EXAMPLES]),
        "summary": alert.summary(),
    }


def _link(item_id: str, url: str | None) -> str:
    # Only plain http(s) URLs become links; anything Slack could read as markup is shown as text.
    # The URL is the poster's, so its host is shown beside our id: a link labelled with an item
    # id alone reads as ours, wherever it leads.
    shown = inert(item_id, 80)
    href = plain_url(url)
    try:
        host = urlparse(href).hostname if href else None
    except ValueError:  # "http://[": no host to show, so no link
        host = None
    if href and host and not any(c in href for c in "<>|&"):
        return f"<{href}|{shown}> ({inert(host, 100)})"
    return f"`{shown}`"


def drift_message(rows: Sequence[dict[str, Any]], links: dict[str, str | None]) -> dict[str, Any]:
    """One Slack message for every unannounced alert: which source, signal, value, band, examples."""
    lines = [f":chart_with_upwards_trend: *Drift watch*: {len(rows)} signal(s) outside their band"]
    for row in rows:
        examples = json.loads(row["example_ids"] or "[]")
        shown = ", ".join(_link(i, links.get(i)) for i in examples) or "none"
        lines.append(f"• {inert(str(row['summary']), 400)}; examples: {shown}")
    lines.append("`triage status` shows the store; a retrain may help if the stream changed.")
    text = "\n".join(lines)
    if len(text) > _SLACK_TEXT:
        text = text[: _SLACK_TEXT - 40].rsplit("\n", 1)[0] + "\n… (more in `drift_alerts`)"
    return {"text": text}


def watch_drift(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """Judge the latest days of every source, record new alerts, announce them once.

    Returns:
        ``{"alerts": new alerts recorded, "announced": alerts posted, "ref": where}``.
    """
    settings = drift_settings(config)
    if not models_config(config).drift.get("enabled", True):
        return {"alerts": 0, "announced": 0, "ref": None}
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    since = today - timedelta(days=1)
    start = datetime.combine(since - timedelta(days=settings.window), datetime.min.time(), UTC)
    recent = datetime.combine(since, datetime.min.time(), UTC)
    with open_store(config.database) as store:
        # The baseline days summed in SQL; the days judged item by item (for their examples).
        baseline = [_baseline_day(r) for r in store.drift_daily(start, recent, LABELS)]
        stats = baseline + daily_stats(store.drift_predictions(recent), examples=_EXAMPLES)
        alerts = detect_drift(stats, settings, since=since)
        new = store.record_drift_alerts([alert_row(a) for a in alerts])
        pending = store.unannounced_drift_alerts()
        ids = [i for r in pending for i in json.loads(r["example_ids"] or "[]")]
        links = store.item_links(ids)
    if not pending:
        return {"alerts": new, "announced": 0, "ref": None}
    dest = announcer(config)
    if dest is None:
        log.warning("%d drift alert(s), but no models.destination or review.destination", new)
        return {"alerts": new, "announced": 0, "ref": None}
    # Posted before it is marked: a crash in between repeats the message once, never loses it.
    key = stable_key(*sorted(r["key"] for r in pending))
    ref = notify(dest, "drift", key, drift_message(pending, links), {"alerts": len(pending)})
    with open_store(config.database) as store, store.transaction():
        for row in pending:
            store.mark_drift_announced(row["key"], ref)
    return {"alerts": new, "announced": len(pending), "ref": ref}
