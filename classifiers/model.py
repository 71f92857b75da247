"""Load a trained triage model and classify texts in batches with calibrated scores."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.language import Language

# Registers triage_fast_tokenizer.v1, which also normalises the text (see classifiers.tokenizer).
from classifiers.normalize import normalize
from classifiers.tokenizer import FastTokenizer
from triage.models import LABELS, PRIORITY

DEFAULT_MODEL_DIR = Path(__file__).parent / "model"
META_FILE = "triage_meta.json"
COMPONENT = "textcat_multilabel"
# Longer texts are classified on their first part: intent shows early, and spaCy caps doc length.
MAX_CLASSIFY_CHARS = 20_000


class ModelError(RuntimeError):
    """The model folder is missing or is not a triage model."""


@dataclass(slots=True)
class Prediction:
    """The classifier's verdict on one text."""

    label: str
    labels: list[str]
    scores: dict[str, float]
    needs_review: bool
    review_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON shape of ``triage classify`` output."""
        return {
            "label": self.label,
            "labels": self.labels,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "needs_review": self.needs_review,
            "review_reason": self.review_reason,
        }


@dataclass(slots=True)
class Policy:
    """How scores become a decision: calibration, thresholds, margin and the primary-label rule."""

    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 0.5))
    review_thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 0.5))
    margin: float = 0.1
    primary_rule: str = "priority"

    def to_json(self) -> dict[str, Any]:
        """Serialise for the model's metadata file."""
        return {
            "calibration": {k: list(v) for k, v in self.calibration.items()},
            "thresholds": self.thresholds,
            "review_thresholds": self.review_thresholds,
            "margin": self.margin,
            "primary_rule": self.primary_rule,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        """Read the policy back from metadata."""
        return cls(
            calibration={
                k: (float(v[0]), float(v[1])) for k, v in data.get("calibration", {}).items()
            },
            thresholds={k: float(v) for k, v in data.get("thresholds", {}).items()},
            review_thresholds={k: float(v) for k, v in data.get("review_thresholds", {}).items()},
            margin=float(data.get("margin", 0.1)),
            primary_rule=str(data.get("primary_rule", "priority")),
        )


def calibrate(raw: np.ndarray, calibration: dict[str, tuple[float, float]]) -> np.ndarray:
    """Apply per-label Platt scaling to a (n, labels) matrix of raw sigmoid scores."""
    out = raw.astype(np.float64, copy=True)
    eps = 1e-6
    for j, label in enumerate(LABELS):
        if label in calibration:
            a, b = calibration[label]
            p = np.clip(out[:, j], eps, 1 - eps)
            out[:, j] = 1.0 / (1.0 + np.exp(-(a * np.log(p / (1 - p)) + b)))
    return out


def decide(scores: np.ndarray, policy: Policy) -> list[tuple[str, list[str], bool, str | None]]:
    """Turn calibrated scores into (primary, labels, needs_review, reason) per row.

    The primary label is, under the ``priority`` rule, the label with the most urgent owner among
    those that clear their threshold (DESIGN.md); under ``argmax`` simply the top score. With no label
    over its threshold, the top score is primary and the item needs review.
    """
    thresholds = np.array([policy.thresholds.get(lab, 0.5) for lab in LABELS])
    review = np.array([policy.review_thresholds.get(lab, 0.5) for lab in LABELS])
    rank = {lab: i for i, lab in enumerate(PRIORITY)}
    order = np.array(sorted(range(len(LABELS)), key=lambda j: rank[LABELS[j]]))
    n = scores.shape[0]
    above = scores >= thresholds
    any_above = above.any(axis=1)
    top = scores.argmax(axis=1)
    # Vectorised: this runs on every item of every batch, a Python loop per row would dominate.
    if policy.primary_rule == "priority":
        first = order[above[:, order].argmax(axis=1)]
        chosen = np.where(any_above, first, top)
    else:
        chosen = top
    rows = np.arange(n)
    sorted_scores = np.sort(scores, axis=1)
    margins = sorted_scores[:, -1] - sorted_scores[:, -2]
    below_review = scores[rows, chosen] < review[chosen]
    close = (margins < policy.margin) & (chosen == top)
    masks = (above * (1 << np.arange(len(LABELS)))).sum(axis=1)
    any_list: list[bool] = np.asarray(any_above).tolist()
    below_list: list[bool] = np.asarray(below_review).tolist()
    close_list: list[bool] = np.asarray(close).tolist()
    label_sets: dict[tuple[int, int], list[str]] = {}
    out: list[tuple[str, list[str], bool, str | None]] = []
    for i, (j, mask) in enumerate(zip(chosen.tolist(), masks.tolist(), strict=True)):
        labels = label_sets.get((j, mask))
        if labels is None:
            labels = [LABELS[j]] + [
                LABELS[k]
                for k in order.tolist()
                if mask >> k & 1 and k != j and LABELS[k] != "other"
            ]
            label_sets[(j, mask)] = labels
        reason: str | None = None
        if not any_list[i]:
            reason = "no label clears its threshold"
        elif below_list[i]:
            reason = f"{LABELS[j]} score below its review threshold {review[j]:.2f}"
        elif close_list[i]:
            reason = f"top two scores within {policy.margin:.2f}"
        # Each row gets its own list: callers may extend a prediction's labels.
        out.append((LABELS[j], list(labels), reason is not None, reason))
    return out


class Classifier:
    """A loaded triage model.

    Example:
        >>> clf = Classifier.load()
        >>> clf.predict(["app crashes every time I log in"])[0].label
        'service_issue'
    """

    def __init__(self, nlp: Language, meta: dict[str, Any], path: Path) -> None:
        """Wrap a loaded pipeline and its metadata; use :meth:`load`."""
        self.nlp = nlp
        self.meta = meta
        self.path = path
        self.policy = Policy.from_json(meta.get("policy", {}))
        self.version = str(meta.get("version", "unknown"))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Classifier:
        """Load a model folder written by ``triage train`` (default: the shipped model)."""
        p = Path(path) if path else DEFAULT_MODEL_DIR
        meta_path = p / META_FILE
        if not meta_path.exists():
            raise ModelError(
                f"{p} is not a triage model (no {META_FILE}); train one with "
                "`triage train --starter-only --out DIR`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return cls(spacy.load(p), meta, p)

    def with_overrides(self, thresholds: dict[str, float], margin: float | None) -> Classifier:
        """Return a classifier whose review thresholds/margin are overridden by configuration."""
        clone = Classifier(self.nlp, self.meta, self.path)
        default = thresholds.get("default")
        for label in LABELS:
            value = thresholds.get(label, default)
            if value is not None:
                clone.policy.review_thresholds[label] = value
        if margin is not None:
            clone.policy.margin = margin
        return clone

    def raw_scores(self, texts: Iterable[str], batch_size: int = 2000) -> np.ndarray:
        """Return the uncalibrated (n, labels) score matrix for the texts, via ``nlp.pipe``."""
        rows: list[list[float]] = []
        cut = (t[:MAX_CLASSIFY_CHARS] for t in texts)
        # Pipelines built on spaCy's own tokenizer (cnn/ensemble configs) normalise here instead.
        stream = (
            cut if isinstance(self.nlp.tokenizer, FastTokenizer) else (normalize(t) for t in cut)
        )
        for doc in self.nlp.pipe(stream, batch_size=batch_size):
            cats = doc.cats
            rows.append([cats.get(lab, 0.0) for lab in LABELS])
        return np.array(rows, dtype=np.float64).reshape(-1, len(LABELS))

    def scores(self, texts: Iterable[str], batch_size: int = 2000) -> np.ndarray:
        """Return calibrated (n, labels) scores."""
        return calibrate(self.raw_scores(texts, batch_size), self.policy.calibration)

    def predict(self, texts: Sequence[str], batch_size: int = 2000) -> list[Prediction]:
        """Classify texts, keeping their order."""
        scores = self.scores(texts, batch_size)
        return [
            Prediction(
                label=primary,
                labels=labels,
                scores={lab: float(scores[i, j]) for j, lab in enumerate(LABELS)},
                needs_review=needs,
                review_reason=reason,
            )
            for i, (primary, labels, needs, reason) in enumerate(decide(scores, self.policy))
        ]
