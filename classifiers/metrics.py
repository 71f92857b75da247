"""Classification metrics: per-label precision/recall/F1, macro-F1 and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from triage.models import LABELS


def evaluate_labels(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Score predicted primary labels against gold ones.

    Args:
        gold: True labels.
        pred: Predicted labels, same order.

    Returns:
        ``{"per_label": {label: {precision, recall, f1, support}}, "macro_f1", "accuracy",
        "confusion": {"labels": [...], "matrix": [[...]]}, "n"}``. Macro-F1 averages over labels
        present in the gold data, so a dataset without, say, sales leads is not punished for it.
    """
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    index = {lab: i for i, lab in enumerate(LABELS)}
    matrix = [[0] * len(LABELS) for _ in LABELS]
    for g, p in zip(gold, pred, strict=True):
        matrix[index[g]][index[p]] += 1
    per_label: dict[str, dict[str, float]] = {}
    f1s: list[float] = []
    for lab, i in index.items():
        tp = matrix[i][i]
        fp = sum(matrix[r][i] for r in range(len(LABELS))) - tp
        fn = sum(matrix[i]) - tp
        support = sum(matrix[i])
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[lab] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
        if support:
            f1s.append(f1)
    correct = sum(matrix[i][i] for i in range(len(LABELS)))
    return {
        "n": len(gold),
        "accuracy": round(correct / len(gold), 4) if gold else 0.0,
        "macro_f1": round(sum(f1s) / len(f1s), 4) if f1s else 0.0,
        "per_label": per_label,
        "confusion": {"labels": list(LABELS), "matrix": matrix},
    }


def review_figures(
    gold: Sequence[str], pred: Sequence[str], flagged: Sequence[bool]
) -> dict[str, float | None]:
    """The two figures a review policy is judged by, on rows scored against gold labels.

    Args:
        gold: True labels.
        pred: Predicted primary labels, same order.
        flagged: Whether each row was flagged for review, same order.

    Returns:
        ``{"needs_review_rate", "accuracy_when_not_flagged"}``, rounded to 4 places: the share
        flagged (0.0 for no rows) and the accuracy of the rows handed off without review (None
        when every row was flagged, so "nothing handed off" never reads as a score).
    """
    if not len(gold) == len(pred) == len(flagged):
        raise ValueError("gold, pred and flagged differ in length")
    n_flagged = sum(bool(f) for f in flagged)
    right = [g == p for g, p, f in zip(gold, pred, flagged, strict=True) if not f]
    return {
        "needs_review_rate": round(n_flagged / len(gold), 4) if gold else 0.0,
        "accuracy_when_not_flagged": round(sum(right) / len(right), 4) if right else None,
    }


def format_report(result: dict[str, Any], title: str = "") -> str:
    """Render a metrics dict as a fixed-width table with the confusion matrix."""
    lines = [title] if title else []
    lines.append(f"{'label':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for lab, m in result["per_label"].items():
        lines.append(
            f"{lab:<16}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>10}"
        )
    lines.append(
        f"macro-F1 {result['macro_f1']:.4f}   accuracy {result['accuracy']:.4f}   n={result['n']}"
    )
    labels = result["confusion"]["labels"]
    short = [lab[:7] for lab in labels]
    lines.append("confusion (rows gold, columns predicted):")
    lines.append(" " * 16 + "".join(f"{s:>9}" for s in short))
    for lab, row in zip(labels, result["confusion"]["matrix"], strict=True):
        lines.append(f"{lab:<16}" + "".join(f"{v:>9}" for v in row))
    return "\n".join(lines)
