"""Retention: raw text and author details are removed after each table's configured period.

Run by the scheduled flow after delivery (``retention`` in the run summary). With no
``privacy.retention`` set, nothing is ever expired. Labels, scores, routes and delivery records stay, so counts and reports
over old periods still add up; only what identifies a person or repeats their words goes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from triage.config import Config
from triage.privacy.registry import personal_table
from triage.store import Store, open_store


def expire(store: Store, config: Config, now: datetime) -> dict[str, int]:
    """Expire every table with a retention period, in one transaction.

    Args:
        store: The open store.
        config: The configuration (``privacy.retention``: table -> period).
        now: The current time (injected by tests).

    Returns:
        Rows blanked or deleted per table.
    """
    done: dict[str, int] = {}
    with store.transaction():
        for table, period in sorted(config.privacy.retention.items()):
            done[table] = store.expire(personal_table(table), now - period, now)
    return done


def expire_personal_data(config: Config, now: datetime | None = None) -> dict[str, int]:
    """The flow's retention stage: open the store and :func:`expire` what is past its period."""
    if not config.privacy.retention:
        return {}
    with open_store(config.database) as store:
        return expire(store, config, now or datetime.now(UTC))
