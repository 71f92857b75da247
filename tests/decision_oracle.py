"""An independent reference for the decision rules, written from DESIGN.md and the README.

Nothing here comes from ``classifiers.model``: plain Python over one row of scores, so a test can
compare the vectorised code with it. Where the documents are silent, the choice is said below.

The rules (DESIGN.md "Labels", README "Data and the classifier"):

- A label applies when its calibrated score clears its threshold (reaches it: ``score >= t``).
- Primary label: under ``priority``, the applying label whose owner must act first
  (``service_issue`` > ``sales_lead`` > ``feature_request`` > ``kudos``; ``other`` has no owner, so
  it is last); under ``argmax``, the top score. When no label applies, the top score.
  Ties of the top score go to the owner who must act first (DESIGN.md's order decides between
  equals; the label tuple's column order must not).
- Secondary labels: the other labels that apply, in that priority order. ``other`` ("none of the
  intents") is never a secondary label next to a real one.
- ``needs_review`` when no label applies, when the primary score is below that label's review
  threshold (strictly below), when the primary is not ``service_issue`` while ``service_issue``
  scores at least the policy's service watch (reaches it, like a threshold; no watch, no such
  flag), or when the top two scores are closer than the margin (strictly; the demo configuration
  documents the margin as "closer than this"). One reason is given, in that order of precedence
  (the order the README lists them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# DESIGN.md's order, written out here on purpose (not imported from the code under test).
PRIORITY_ORDER = ("service_issue", "sales_lead", "feature_request", "kudos", "other")

NO_LABEL = "no label clears its threshold"
BELOW_REVIEW = "{label} score below its review threshold"
MARGIN = "top two scores within"
WATCH = "service_issue scores"


@dataclass(frozen=True)
class Expected:
    """One decision: the primary label, the secondary labels and the review reason (None: none)."""

    primary: str
    secondary: tuple[str, ...]
    reason: str | None

    @property
    def needs_review(self) -> bool:
        """An item needs review exactly when there is a reason."""
        return self.reason is not None


def reason_matches(expected: str | None, got: str | None) -> bool:
    """Whether the code's reason text is the expected kind (the numbers in it are not pinned)."""
    if expected is None or got is None:
        return expected is got
    if expected == NO_LABEL:
        return got == NO_LABEL
    return got.startswith(expected)


def reference_decision(scores: Mapping[str, float], policy: Any) -> Expected:
    """Decide one row of calibrated scores by the documented rules.

    Args:
        scores: Label → calibrated score, for every label.
        policy: Anything with ``thresholds``, ``review_thresholds`` (label → float), ``margin`` and
            ``primary_rule`` ("priority" or "argmax"), and optionally ``service_watch``.

    Returns:
        The decision the documents prescribe.
    """
    applies = [lab for lab in PRIORITY_ORDER if scores[lab] >= policy.thresholds[lab]]
    best = max(scores[lab] for lab in PRIORITY_ORDER)
    top = next(lab for lab in PRIORITY_ORDER if scores[lab] == best)
    primary = applies[0] if policy.primary_rule == "priority" and applies else top
    secondary = tuple(lab for lab in applies if lab not in (primary, "other"))
    first, second = sorted((scores[lab] for lab in PRIORITY_ORDER), reverse=True)[:2]
    reason: str | None = None
    if not applies:
        reason = NO_LABEL
    elif scores[primary] < policy.review_thresholds[primary]:
        reason = BELOW_REVIEW.format(label=primary)
    elif (
        getattr(policy, "service_watch", None) is not None
        and primary != "service_issue"
        and scores["service_issue"] >= policy.service_watch
    ):
        reason = WATCH
    elif first - second < policy.margin:
        reason = MARGIN
    return Expected(primary, secondary, reason)
