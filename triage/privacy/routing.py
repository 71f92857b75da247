"""Languages the classifier was not trained on: flagged for review with the reason, or sent on.

The shipped model reads English. An item in another language (or one whose language could not be
told) is not silently classified as if it were English:

* :func:`flag_languages` (classify stage) marks its prediction ``needs_review`` with the reason,
  e.g. ``language 'fr': the model was not trained on it``, which the review message shows;
* :func:`route_languages` (route stage) sends it to the destination that
  ``privacy.language_destinations`` names for its language (a French-speaking team's channel or
  helpdesk), and otherwise to marketing's review even when the rules would have archived it or
  handed it off automatically.

Items stored before languages were detected (``language`` NULL) are left as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from triage.config import Config
from triage.config.types import PrivacyConfig
from triage.privacy.language import UNKNOWN
from triage.routing import AUTO_HANDOFF, AWAITING_REVIEW, outbox_table


def language_reason(language: str | None, privacy: PrivacyConfig) -> str | None:
    """Why an item of ``language`` needs a human, or None when the model reads it."""
    if language is None or language in privacy.languages:
        return None
    if language == UNKNOWN:
        return "language unknown (too short or unclear): check the label"
    return f"language '{language}': the model was not trained on it"


def flag_languages(
    predictions: pa.Table, languages: Sequence[str | None], privacy: PrivacyConfig
) -> pa.Table:
    """``predictions`` with items of unsupported languages flagged for review, with the reason.

    Args:
        predictions: One classify batch (``needs_review`` and ``review_reason`` columns).
        languages: The items' stored languages, in the same order.
        privacy: The ``privacy:`` configuration (``languages``).
    """
    reasons = [language_reason(lang, privacy) for lang in languages]
    if not any(reasons):
        return predictions
    flagged = pa.array([r is not None for r in reasons], pa.bool_())
    needs = pc.or_(predictions.column("needs_review"), flagged)
    old = predictions.column("review_reason").to_pylist()
    why = pa.array([r or o for r, o in zip(reasons, old, strict=True)], pa.string())
    predictions = predictions.set_column(
        predictions.column_names.index("needs_review"), "needs_review", needs
    )
    return predictions.set_column(
        predictions.column_names.index("review_reason"), "review_reason", why
    )


def route_languages(
    config: Config, batch: pa.RecordBatch | pa.Table, routes: pa.Table, outbox: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """Re-route a batch's items of unsupported languages (after :func:`route_batch`).

    Args:
        config: The configuration (``privacy``, review destination).
        batch: The route batch, with ``item_id`` and ``language`` columns.
        routes: The batch's routes from :func:`triage.routing.route_batch`.
        outbox: Its outbox rows.

    Returns:
        ``(routes, outbox)``: items with a per-language destination are handed to it alone;
        other unsupported ones await review (never archived or handed off unseen).
    """
    privacy = config.privacy
    ids = batch.column("item_id").to_pylist()
    languages = batch.column("language").to_pylist()
    changed: dict[str, tuple[str, str, str | None]] = {}  # item -> (state, rule, destination)
    for item, lang in zip(ids, languages, strict=True):
        if language_reason(lang, privacy) is None:
            continue
        dest = privacy.language_destinations.get(str(lang))
        if dest is not None:
            changed[item] = (AUTO_HANDOFF, f"language:{lang}", dest)
        else:
            changed[item] = (AWAITING_REVIEW, f"language:{lang}", None)
    if not changed:
        return routes, outbox
    rows = routes.to_pylist()
    for row in rows:
        if row["item_id"] in changed:
            row["state"], row["rule"], _ = changed[row["item_id"]]
    kept = [r for r in outbox.to_pylist() if r["item_id"] not in changed]
    now = rows[0]["routed_at"]
    extra_ids: list[str] = []
    extra_dests: list[str] = []
    extra_kinds: list[str] = []
    for item, (_, _, dest) in changed.items():
        target = dest or config.review_destination
        if target:
            extra_ids.append(item)
            extra_dests.append(target)
            extra_kinds.append("handoff" if dest else "review")
    added = outbox_table(extra_ids, extra_dests, extra_kinds, now)
    new_routes = pa.Table.from_pylist(rows, schema=routes.schema)
    new_outbox = pa.concat_tables([pa.Table.from_pylist(kept, schema=outbox.schema), added])
    return new_routes, new_outbox
