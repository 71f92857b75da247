"""Review upkeep in Slack: decided messages updated in place, losers told, overdue items reminded.

Uses the review destination's own client and token (``review.destination`` in the
configuration), so the messages are updated by the bot that posted them. The store is opened
briefly and never held across a Slack call.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from triage.config import Config
from triage.destinations.slack import slack_token
from triage.privacy.policy import PrivacyPolicy
from triage.review.apply import apply_spool, review_store
from triage.review.spool import DecisionSpool
from triage.slack.client import CREDENTIAL_ERRORS, PERMANENT_ERRORS, make_client, post, thread_root
from triage.slack.messages import decided_message, loser_notice, reminder_message
from triage.store import StoreBusy

log = logging.getLogger("triage.review")


def review_client(config: Config) -> WebClient | None:
    """The review destination's Web API client, or None without a Slack review destination."""
    name = config.review.destination
    dest = config.destinations.get(name) if name else None
    if dest is None or dest.type != "slack":
        return None
    token = slack_token(dest.settings)
    return make_client(token) if token else None


@dataclass(slots=True)
class AnnounceReport:
    """What one announcement pass did."""

    updated: int = 0
    notified: int = 0
    failed: int = 0


def announce(
    config: Config, client: WebClient | None, *, wait_s: float = 2.0, limit: int = 200
) -> AnnounceReport:
    """Update decided messages in place and tell losing reviewers who decided first.

    The store is opened twice, briefly, and never held across a Slack call.
    """
    report = AnnounceReport()
    if client is None:
        return report
    with review_store(config, wait_s=wait_s) as store:
        decisions = store.unannounced_decisions(limit)
        # The updated message shows the item as the review channel may see it.
        policy = PrivacyPolicy(config)
        items = {
            k: policy.item(v, config.review_destination)
            for k, v in store.delivery_context([d["item_id"] for d in decisions]).items()
        }
        losers = store.unnotified_losers(limit)
    updated: list[str] = []
    for d in decisions:
        item = items.get(d["item_id"])
        if item is None:
            continue
        body = decided_message(item, d)
        try:
            client.chat_update(
                channel=d["channel"], ts=d["message_ts"], text=body["text"], blocks=body["blocks"]
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            # Fixed credentials make the update work again; a gone message or channel never will.
            if error not in PERMANENT_ERRORS or error in CREDENTIAL_ERRORS:
                report.failed += 1
                log.warning("chat.update for %s failed: %s", d["item_id"], error)
                continue
            log.warning("message of %s cannot be updated (%s); giving up", d["item_id"], error)
        updated.append(d["item_id"])
    notified: list[str] = []
    for loser in losers:
        try:
            WebhookClient(str(loser["response_url"]), timeout=10).send(
                text=loser_notice(loser), response_type="ephemeral", replace_original=False
            )
        except Exception as exc:  # noqa: BLE001 - a stale response_url must not block the rest
            log.warning("could not notify %s: %s", loser["user_id"], exc)
        notified.append(str(loser["decision_id"]))
    if updated or notified:
        with review_store(config, wait_s=wait_s) as store:
            store.mark_message_updated(updated)
            store.mark_notified(notified)
    report.updated, report.notified = len(updated), len(notified)
    return report


def resurface(
    config: Config,
    client: WebClient | None,
    *,
    now: datetime | None = None,
    wait_s: float = 2.0,
    limit: int = 50,
) -> int:
    """Reply under review messages that waited longer than ``review.resurface_after``.

    Each item is re-surfaced at most once per period of that length; at most ``limit`` replies a
    pass keep us within Slack's per-channel pace. Returns how many reminders were posted.
    """
    settings = config.review
    if client is None or settings.destination is None:
        return 0
    now = now or datetime.now(UTC)
    period = int(now.timestamp() // settings.resurface_after.total_seconds())
    with review_store(config, wait_s=wait_s) as store:
        overdue = store.overdue_reviews(
            settings.destination, now - settings.resurface_after, period, limit
        )
    posted: list[str] = []
    for row in overdue:
        channel, _, ts = str(row["external_ref"]).partition(":")
        waited = now - row["routed_at"]
        body = reminder_message(waited)
        try:
            post(client, channel, body, thread_ts=thread_root(client, channel, ts))
        except SlackApiError as exc:
            log.warning("reminder for %s failed: %s", row["item_id"], exc.response.get("error"))
            continue
        posted.append(str(row["item_id"]))
    if posted:
        with review_store(config, wait_s=wait_s) as store:
            store.record_reminders(posted, period)
    return len(posted)


def process_pending(config: Config, *, wait_s: float = 2.0) -> dict[str, Any]:
    """Apply spooled decisions, announce them and re-surface overdue items; never raises.

    Called at the start of every flow run and by the server's background thread.
    """
    result: dict[str, Any] = {}
    try:
        report = apply_spool(config, DecisionSpool(config.review.spool), wait_s=wait_s)
        result.update(asdict(report))
        if report.busy:
            return result
        client = review_client(config)
        result.update({f"messages_{k}": v for k, v in asdict(announce(config, client)).items()})
        result["reminders"] = resurface(config, client)
    except StoreBusy:
        result["busy"] = True
    except Exception as exc:  # noqa: BLE001 - review upkeep must never stop a triage run
        log.warning("review upkeep failed: %s: %s", type(exc).__name__, exc)
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result
