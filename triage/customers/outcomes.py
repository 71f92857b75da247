"""Handoff outcomes from a JSON Lines file (the demo's, or an export), keyed by store item id.

One object per line: ``external_id`` (the mention's id in its source), ``department``,
``created_at``, ``first_response_at``, ``resolved_at`` (ISO-8601 UTC or null) and ``state`` (one of
:data:`~triage.customers.models.OUTCOME_STATES`). The demo ships
``triage/demo/handoff_outcomes.jsonl`` in this shape for the mentions of
``triage/demo/drops/customers.jsonl``; the read-back flow's fakes can serve it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from triage.customers.models import HandoffOutcome
from triage.models import item_id, parse_timestamp


def load_outcomes(path: Path, source: str) -> tuple[list[HandoffOutcome], list[str]]:
    """Read outcomes, mapping each ``external_id`` to the store's item id for ``source``.

    Args:
        path: The JSON Lines file.
        source: The configured source name the mentions were fetched by (item ids depend on it).

    Returns:
        The outcomes, and one message per line that could not be used (line number and why):
        a bad line is reported, never silently dropped, and never stops the others.
    """
    outcomes: list[HandoffOutcome] = []
    errors: list[str] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                outcomes.append(
                    HandoffOutcome(
                        item_id=item_id(source, str(raw["external_id"])),
                        department=str(raw["department"]),
                        created_at=parse_timestamp(raw["created_at"]),
                        first_response_at=_optional_time(raw.get("first_response_at")),
                        resolved_at=_optional_time(raw.get("resolved_at")),
                        state=raw.get("state", "open"),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(f"{path.name}:{n}: {type(exc).__name__}: {exc}")
    return outcomes, errors


def _optional_time(value: object) -> datetime | None:
    return None if value in (None, "") else parse_timestamp(value)
