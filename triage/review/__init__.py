"""Marketing's review, along the life of a click (README, "Marketing review in Slack").

1. :mod:`~triage.review.clicks`: a ``block_actions`` payload (its shape already checked by
   :mod:`triage.slack.payloads`) becomes :class:`Decision` records.
2. :mod:`~triage.review.spool`: they are appended to the decision spool and fsynced *before*
   Slack gets its acknowledgement, so a decision survives a busy store and a crash.
3. :mod:`~triage.review.apply`: the worker (and every flow run) applies spooled decisions to the
   store, a batch per transaction; the first decision per item wins. No Slack in it.
4. :mod:`~triage.review.upkeep`: decided messages are updated in place, losing reviewers told who
   won, overdue items reminded, with the review destination's own client.

The settings are the configuration's ``review:`` section (:class:`triage.config.ReviewConfig`),
validated with the rest of the file at load.
"""

from __future__ import annotations

from triage.review.apply import (
    APPLY_BATCH,
    STORE_LOCK,
    ApplyReport,
    DirectApply,
    apply_spool,
    review_store,
)
from triage.review.clicks import ACTIONS, Decision, InvalidAction, parse_actions
from triage.review.spool import DecisionSpool
from triage.review.upkeep import announce, process_pending, resurface, review_client

__all__ = [
    "ACTIONS",
    "APPLY_BATCH",
    "STORE_LOCK",
    "ApplyReport",
    "Decision",
    "DecisionSpool",
    "DirectApply",
    "InvalidAction",
    "announce",
    "apply_spool",
    "parse_actions",
    "process_pending",
    "resurface",
    "review_client",
    "review_store",
]
