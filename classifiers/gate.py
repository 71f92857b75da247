"""The promotion gate: score champion and challenger on the same slices and decide.

A challenger is promoted only when it is better overall, which the gate reads as: better where the
corrections are, and not worse anywhere else. Four checks, every one reported:

1. **better on the correction slice** — per held-out correction, which model gives the
   reviewers' label the higher (calibrated) score; the challenger must win so many of these
   paired comparisons that a fair coin would do as well at most ``max_p`` of the time (exact
   one-sided sign test). Scores, not just right/wrong, because on a slice of a few dozen rows
   the two models' hard answers differ on a handful of rows at most: a real gain would be lost
   in their noise (measured: README, "Learning from corrections"). A poisoned import (labels
   shuffled) teaches nothing a held-out row can confirm and fails here;
2. **no label drops on the correction slice** — no label's F1 there falls by more than
   ``label_tolerance``, nor by more than one row's worth (1 / the label's rows in the slice:
   on a small slice one changed answer moves a label's F1 by more than any sensible tolerance);
   labels with fewer than ``min_label_support`` rows are reported, not judged;
3. **no drop on** each other compared slice — its macro-F1 falls by at most
   ``slice_tolerance`` (the general held-out sets: learning a customer's domain must not unlearn
   everyone else's);
4. **macro-F1 overall** — the mean macro-F1 over the compared slices (each slice counts once)
   does not fall by more than ``overall_tolerance``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifiers.data import Example
from classifiers.metrics import evaluate_labels
from classifiers.model import Classifier, decide
from triage.models import LABELS

CORRECTIONS_SLICE = "corrections"


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """The gate's settings (``models.gate`` in the configuration)."""

    max_p: float = 0.05
    """The largest one-sided sign-test p-value of the gain on the correction slice."""
    label_tolerance: float = 0.05
    """The largest drop of one label's F1 on the correction slice that is allowed."""
    slice_tolerance: float = 0.05
    """The largest drop of macro-F1 on any other compared slice that is allowed."""
    overall_tolerance: float = 0.02
    """The largest drop of the mean macro-F1 over the compared slices that is allowed."""
    min_label_support: int = 5
    """Labels with fewer rows in the correction slice are reported but not held to the tolerance."""

    def to_json(self) -> dict[str, Any]:
        """The settings, recorded with every decision."""
        return {
            "max_p": self.max_p,
            "label_tolerance": self.label_tolerance,
            "slice_tolerance": self.slice_tolerance,
            "overall_tolerance": self.overall_tolerance,
            "min_label_support": self.min_label_support,
        }


@dataclass(frozen=True, slots=True)
class SliceScore:
    """A model's scores on one slice, and the score it gave each row's gold label."""

    metrics: dict[str, Any]
    gold_score: np.ndarray
    """(n,) the calibrated score of each row's gold label (for the paired comparison)."""


def score_slice(
    clf: Classifier, examples: Sequence[Example], by: Sequence[str] | None = None
) -> SliceScore:
    """A model's scores on one slice: macro-F1, accuracy, review rate and each label's F1.

    Args:
        clf: The model.
        examples: The slice's rows (gold labels).
        by: A group name per row (e.g. the correction's source): adds ``by_group`` scores.
    """
    texts = [ex.text for ex in examples]
    gold = [ex.label for ex in examples]
    scores = clf.scores(texts) if texts else np.zeros((0, len(LABELS)))
    decisions = decide(scores, clf.policy) if texts else []
    pred = [d[0] for d in decisions]
    flagged = np.array([d[2] for d in decisions], dtype=bool)
    m = evaluate_labels(gold, pred)
    out: dict[str, Any] = {
        "n": m["n"],
        "macro_f1": m["macro_f1"],
        "accuracy": m["accuracy"],
        "needs_review_rate": round(float(flagged.mean()), 4) if len(flagged) else 0.0,
        "per_label": {
            lab: {"f1": v["f1"], "support": v["support"]}
            for lab, v in m["per_label"].items()
            if v["support"]
        },
    }
    if by is not None:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(by):
            groups[g].append(i)
        out["by_group"] = {
            g: {
                k: v
                for k, v in evaluate_labels([gold[i] for i in idx], [pred[i] for i in idx]).items()
                if k in ("n", "macro_f1", "accuracy")
            }
            for g, idx in sorted(groups.items())
        }
    gold_idx = np.array([LABELS.index(g) for g in gold], dtype=np.int64)
    return SliceScore(out, scores[np.arange(len(gold)), gold_idx])


@dataclass(frozen=True, slots=True)
class Check:
    """One of the gate's checks and its outcome."""

    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        """``{"name", "passed", "detail"}``."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def overall(scores: Mapping[str, SliceScore], slices: Sequence[str]) -> float:
    """The mean macro-F1 over ``slices`` (each slice counts once, whatever its size)."""
    if not slices:
        return 0.0
    return round(float(np.mean([scores[s].metrics["macro_f1"] for s in slices])), 4)


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least ``wins`` of ``wins + losses`` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def judge(
    champion: Mapping[str, SliceScore],
    challenger: Mapping[str, SliceScore],
    compared: Sequence[str],
    policy: GatePolicy,
) -> tuple[bool, str, list[Check]]:
    """Decide between two models scored on the same slices (:func:`score_slice` results).

    Args:
        champion: Slice name → the active model's scores (:func:`score_slice`).
        challenger: Slice name → the new model's scores (same slices, same rows, same order).
        compared: The slices both models may fairly be judged on (neither trained on them);
            :data:`CORRECTIONS_SLICE` must be one of them.
        policy: Tolerances.

    Returns:
        ``(promote, reason, checks)``; the reason names every failed check, or the gain.
    """
    checks: list[Check] = []
    diff = challenger[CORRECTIONS_SLICE].gold_score - champion[CORRECTIONS_SLICE].gold_score
    # Differences below 0.001 are ties (the same answer with the same confidence).
    wins, losses = int((diff > 1e-3).sum()), int((diff < -1e-3).sum())
    p = sign_test(wins, losses)
    checks.append(
        Check(
            "better on the correction slice",
            p <= policy.max_p,
            f"the challenger gives the reviewers' label the higher score on {wins} of "
            f"{len(diff)} held-out corrections, the champion on {losses} (sign test "
            f"p={p:.4f}; needs <= {policy.max_p})",
        )
    )
    champ_labels = champion[CORRECTIONS_SLICE].metrics["per_label"]
    chall_labels = challenger[CORRECTIONS_SLICE].metrics["per_label"]
    drops = []
    skipped = []
    for label, c in champ_labels.items():
        new = chall_labels.get(label, {"f1": 0.0})["f1"]
        if c["support"] < policy.min_label_support:
            skipped.append(f"{label} (n={c['support']})")
            continue
        allowed = max(policy.label_tolerance, 1 / c["support"])
        if c["f1"] - new > allowed:
            drops.append(f"{label} {c['f1']:.3f} -> {new:.3f} (n={c['support']})")
    checks.append(
        Check(
            "no label drops on the correction slice",
            not drops,
            (
                f"F1 on the correction slice dropped more than {policy.label_tolerance:.2f}: "
                + ", ".join(drops)
                if drops
                else f"no label's F1 dropped more than {policy.label_tolerance:.2f}"
            )
            + (f"; too few rows to hold to it: {', '.join(skipped)}" if skipped else ""),
        )
    )
    for name in compared:
        if name == CORRECTIONS_SLICE:
            continue
        b, a = champion[name].metrics["macro_f1"], challenger[name].metrics["macro_f1"]
        checks.append(
            Check(
                f"no drop on {name}",
                b - a <= policy.slice_tolerance,
                f"macro-F1 {b:.3f} -> {a:.3f} ({a - b:+.3f}; tolerance {policy.slice_tolerance:.2f})",
            )
        )
    before, after = overall(champion, compared), overall(challenger, compared)
    checks.append(
        Check(
            "macro-F1 overall",
            before - after <= policy.overall_tolerance,
            f"mean macro-F1 over {', '.join(compared)}: {before:.3f} -> {after:.3f} "
            f"({after - before:+.3f}; tolerance {policy.overall_tolerance:.2f})",
        )
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        return False, "kept the champion: " + "; ".join(c.detail for c in failed), checks
    corr_b = champion[CORRECTIONS_SLICE].metrics["macro_f1"]
    corr_a = challenger[CORRECTIONS_SLICE].metrics["macro_f1"]
    return (
        True,
        (
            f"promoted: better on {wins} of {len(diff)} held-out corrections, worse on {losses} "
            f"(p={p:.4f}); macro-F1 on the correction slice {corr_b:.3f} -> {corr_a:.3f}, "
            f"overall {before:.3f} -> {after:.3f}; every check passed"
        ),
        checks,
    )
