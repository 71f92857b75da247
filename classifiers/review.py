"""Review thresholds: which items a model may hand off without a person looking first.

The thresholds are fitted on out-of-source scores (see :mod:`classifiers.calibration`) so that
the items not flagged stay right often enough on streams the model never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classifiers.model import primary_indices, service_watched
from triage.models import LABELS


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Increasing isotonic fit of 0/1 outcomes ``y`` on scores ``x`` (pool adjacent violators).

    Returns:
        The scores sorted ascending and the fitted rate at each: the share of right answers
        among items scored about that high ("local precision"), never falling as scores rise.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    values: list[float] = []
    weights: list[int] = []
    for v in ys.tolist():
        values.append(v)
        weights.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values.pop()
            weights.pop()
            values[-1], weights[-1] = merged, w
    return xs, np.repeat(np.array(values), np.array(weights, dtype=np.int64))


def wilson_lower(right: int, n: int, z: float) -> float:
    """One-sided lower confidence bound of a success rate (Wilson score interval)."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def fit_review(
    scores: np.ndarray,
    gold_idx: np.ndarray,
    thresholds: np.ndarray,
    rule: str,
    accuracy: float,
    margins: Sequence[float] = (0.1,),
    z: float = 1.645,
    margin_tolerance: float = 0.01,
    service_watch: float | None = None,
) -> tuple[dict[str, float], float, dict[str, float]]:
    """Review thresholds and margin that hand off the most items at ``accuracy`` overall.

    What a user needs is that the items handed off without review are right at least
    ``accuracy`` of the time overall, with as few flagged as possible. A precision floor per
    label (the items given each label at least that often right) is stricter than needed and
    flags more. So: for each label, an isotonic fit of "right or wrong" on the label's score gives
    the local precision at every score; one cutoff ``c`` on that local precision, shared by all
    labels, sets each label's review threshold where its local precision reaches ``c``. Equal
    marginal precision across labels is what maximises the items kept for a given overall
    accuracy, and one number fitted instead of five overfits less. ``c`` (and the margin between
    the top two scores, from ``margins``) is the lowest that still keeps the unflagged items at
    least ``accuracy`` right on these (out-of-source) scores; ties go to the larger margin.

    Args:
        scores: Calibrated (n, labels) out-of-source scores.
        gold_idx: Gold label index per row.
        thresholds: The per-label decision thresholds.
        rule: The primary-label rule.
        accuracy: Overall accuracy of unflagged rows to hold (its lower confidence bound).
        margins: Candidate widths of the "top two too close" flag (each must be > 0: DESIGN.md).
        z: Normal quantile of the lower confidence bound; 0 holds the point estimate.
        margin_tolerance: Coverage (share of rows) given up at most for a wider margin.
        service_watch: The policy's service watch (:func:`classifiers.model.service_watched`):
            rows it flags are never kept, so the cutoffs are fitted on the rest.

    Returns:
        ``(review_thresholds, margin, info)``; info has the local-precision cutoff and the
        share kept and accuracy it gave on these rows. When no cutoff reaches ``accuracy``, every
        review threshold is 1.0 (everything is reviewed).
    """
    n = len(gold_idx)
    preds = primary_indices(scores, thresholds, rule)
    right = preds == gold_idx
    own = scores[np.arange(n), preds]
    any_above = (scores >= thresholds).any(axis=1)
    ranked = np.sort(scores, axis=1)
    gap = ranked[:, -1] - ranked[:, -2] if scores.shape[1] > 1 else np.ones(n)
    watched = service_watched(scores, preds, service_watch)
    found: dict[float, tuple[int, float, np.ndarray, float, float]] = {}
    for margin in sorted(margins):
        eligible = any_above & (gap >= margin) & ~watched
        curves = [
            _isotonic(scores[eligible & (preds == j), j], right[eligible & (preds == j)])
            for j in range(len(LABELS))
        ]
        for c in np.round(np.arange(0.995, 0.499, -0.005), 3).tolist():
            cut = np.ones(len(LABELS))
            for j, (xs, fitted) in enumerate(curves):
                ok = np.flatnonzero(fitted >= c)
                if len(ok):
                    # Stored to 4 decimals, rounded down so the item at the cutoff stays in;
                    # the accuracy is measured with the stored value.
                    cut[j] = max(float(thresholds[j]), np.floor(xs[ok[0]] * 1e4) / 1e4)
            kept = eligible & (own >= cut[preds])
            count = int(kept.sum())
            if wilson_lower(int(right[kept].sum()), count, z) < accuracy:
                continue
            if margin not in found or count >= found[margin][0]:
                found[margin] = (count, margin, cut, c, float(right[kept].mean()))
    # The widest margin that keeps within ``margin_tolerance`` of the most items: a close call
    # between two labels is what transfers worst to a new source, so a wider margin is worth a
    # little coverage on these rows.
    most = max((v[0] for v in found.values()), default=0)
    wide = [v for v in found.values() if v[0] >= most - margin_tolerance * n]
    best = max(wide, key=lambda v: v[1]) if found else None
    if best is None:
        return (
            dict.fromkeys(LABELS, 1.0),
            float(max(margins)),
            {"local_precision": 1.0, "kept": 0.0, "accuracy_kept": 0.0},
        )
    count, margin, cut, c, acc = best
    review = {lab: float(v) for lab, v in zip(LABELS, cut, strict=True)}
    info = {
        "local_precision": c,
        "kept": round(count / n, 4),
        "accuracy_kept": round(acc, 4),
        "target": float(accuracy),
    }
    return review, float(margin), info


def review_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """How a config asks for review thresholds (recorded in the metadata and the model card)."""
    if settings.get("review_accuracy") is not None:
        starter = settings.get("review_accuracy_starter")
        return {
            "rule": "overall accuracy",
            "accuracy": float(settings["review_accuracy"]),
            **({"starter_accuracy": float(starter)} if starter is not None else {}),
            "confidence_z": float(settings.get("review_confidence_z", 1.645)),
            "margins": [float(m) for m in settings.get("review_margins", [0.1])],
            "service_watch": _watch(settings),
        }
    return {
        "rule": "per-label precision",
        "precision": float(settings.get("review_precision", 0.95)),
        "service_watch": _watch(settings),
    }


def _watch(settings: dict[str, Any]) -> float | None:
    value = settings.get("review_service_watch")
    return float(value) if value is not None else None
