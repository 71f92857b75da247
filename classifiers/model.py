"""Load a trained triage model and classify texts in batches with calibrated scores."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from string import Formatter
from typing import Any

import numpy as np
import spacy
from spacy.language import Language
from threadpoolctl import threadpool_limits

from classifiers.adapt import Adaptation, K, StreamMix, adapt_streams
from classifiers.tokenizer import FastTokenizer
from triage.models import LABELS, PRIORITY

# Registers triage_fast_tokenizer.v1, which also normalises the text (see classifiers.tokenizer).
from triage.normalize import normalize

DEFAULT_MODEL_DIR = Path(__file__).parent / "model"
META_FILE = "triage_meta.json"
COMPONENT = "textcat_multilabel"
# Longer texts are classified on their first part: intent shows early, and spaCy caps doc length.
MAX_CLASSIFY_CHARS = 20_000
# Texts per nlp.pipe batch. The phrase filters' temporaries grow with the batch: on 40,000 starter
# texts, 2,000 a batch peaked 66 MB higher than 500, at the same speed (README, "Performance").
# Scores do not depend on the batch (tests/test_classifier.py).
PIPE_BATCH = 500


def one_blas_thread() -> AbstractContextManager[Any]:
    """Limit every loaded BLAS library (numpy's, scipy's) to one thread while the block runs.

    The classifier's and the neighbour search's matrices are small: on 50,000 texts a second
    BLAS thread bought no speed (13,484-14,348 texts/s with two, 14,788-14,824 with one), but
    OpenBLAS keeps a buffer for every thread it has used, 59 MB more at the peak. The limit is
    process-wide (BLAS has no per-thread setting) and is undone when the block ends. The loaded
    libraries are looked up on each call (about 1.5 ms), because scipy brings a second OpenBLAS
    when something imports it later.
    """
    return threadpool_limits(limits=1, user_api="blas")


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
    service_watch: float | None = None
    """Flag an item that goes to another owner while its service-issue score is at least this
    (None: no such flag; models trained before the flag existed)."""
    adaptation: Adaptation | None = None
    """How scores adapt to each stream's label mix (:mod:`classifiers.adapt`; None: they do not;
    models trained before it existed)."""

    def to_json(self) -> dict[str, Any]:
        """Serialise for the model's metadata file."""
        out: dict[str, Any] = {
            "calibration": {k: list(v) for k, v in self.calibration.items()},
            "thresholds": self.thresholds,
            "review_thresholds": self.review_thresholds,
            "margin": self.margin,
            "primary_rule": self.primary_rule,
        }
        # Written only when set, so that a policy without it serialises (and is versioned) as
        # before.
        if self.service_watch is not None:
            out["service_watch"] = self.service_watch
        if self.adaptation is not None:
            out["adaptation"] = self.adaptation.to_json()
        return out

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
            service_watch=(
                float(data["service_watch"]) if data.get("service_watch") is not None else None
            ),
            adaptation=(
                Adaptation.from_json(data["adaptation"]) if data.get("adaptation") else None
            ),
        )


def calibrate(raw: np.ndarray, calibration: dict[str, tuple[float, float]]) -> np.ndarray:
    """Apply per-label Platt scaling to a (n, labels) matrix of raw sigmoid scores."""
    out = raw.astype(np.float64, copy=True)
    eps = 1e-6
    for j, label in enumerate(LABELS):
        if label in calibration:
            a, b = calibration[label]
            p = np.clip(out[:, j], eps, 1 - eps)
            # A steep scaling sends exp() past the float range for confident scores: inf gives
            # 1 / (1 + inf) = 0.0, the right limit, so the overflow is not worth a warning.
            with np.errstate(over="ignore"):
                out[:, j] = 1.0 / (1.0 + np.exp(-(a * np.log(p / (1 - p)) + b)))
    return out


@dataclass(slots=True)
class Decisions:
    """The decisions of a batch as columns: what :func:`decide` returns, without a tuple per row.

    Rows share a handful of distinct label lists and review reasons, so each is stored once and
    rows point at it; callers build Arrow columns with ``take`` instead of a Python loop.
    """

    primary: np.ndarray
    """(n,) index into ``LABELS`` of each row's primary label."""
    label_sets: list[list[str]]
    """The distinct ``labels`` lists (primary first, then the others by priority)."""
    label_set: np.ndarray
    """(n,) index into ``label_sets``."""
    reasons: list[str | None]
    """The distinct review reasons; ``reasons[0]`` is None (no review needed)."""
    reason: np.ndarray
    """(n,) index into ``reasons``; non-zero means the row needs review."""

    @property
    def needs_review(self) -> np.ndarray:
        """(n,) bool: the rows that need a human's review."""
        return self.reason != 0


# Label columns in the order of the labels' priority (most urgent owner first; README, "Data and
# the classifier").
_PRIORITY_ORDER = np.array([LABELS.index(lab) for lab in PRIORITY])


# The review reasons of :func:`decide_columns` by kind, in the order of their precedence. Written
# once here: :func:`review_reason_kind` reads them back through patterns made from the same texts.
_REASON_TEXTS = {
    "no_label": "no label clears its threshold",
    "below_review_threshold": "{label} score below its review threshold {value:.2f}",
    "service_watch": "service_issue scores {value:.2f} or more: support may need to act",
    "margin": "top two scores within {value:.2f}",
}
REVIEW_REASON_KINDS = tuple(_REASON_TEXTS)
# Each text with its fields as wildcards (labels and numbers vary by row and policy).
_REASON_PATTERNS = {
    kind: re.compile(
        "".join(
            re.escape(literal) + (".+?" if field else "")
            for literal, field, _, _ in Formatter().parse(text)
        )
    )
    for kind, text in _REASON_TEXTS.items()
}


def primary_indices(scores: np.ndarray, thresholds: np.ndarray, rule: str) -> np.ndarray:
    """Each row's primary label (index into ``LABELS``) under a rule and per-label thresholds.

    Under ``priority`` it is the most urgent label that clears its threshold, under ``argmax``
    the top score; with no label over its threshold, the top score. Equal top scores go to the
    most urgent owner, as the README's label contract says (not to the first column of ``LABELS``). Vectorised: it runs
    on every batch, and threshold tuning calls it thousands of times.
    """
    top = _PRIORITY_ORDER[scores[:, _PRIORITY_ORDER].argmax(axis=1)]
    if rule != "priority":
        return top
    above = scores >= thresholds
    first = _PRIORITY_ORDER[above[:, _PRIORITY_ORDER].argmax(axis=1)]
    return np.where(above.any(axis=1), first, top)


_SERVICE = LABELS.index("service_issue")


def service_watched(scores: np.ndarray, chosen: np.ndarray, watch: float | None) -> np.ndarray:
    """Rows whose primary is another label while the service issue scores at least ``watch``.

    DESIGN.md puts the service issue first because support must act first. A problem report
    that opens with praise can score just under the service issue's threshold and go to
    marketing with a confident kudos; a person checks these before another owner gets them.
    On the recipe's cross-source folds the items it flags are right about half the time against
    three in four for the rest, so the cutoffs can drop and, at 0.3, it costs no coverage there
    on average (README, "Decision rule").

    Args:
        scores: Calibrated (n, labels) scores.
        chosen: The primary label index per row.
        watch: The service-issue score from which the flag applies; None turns it off.

    Returns:
        A boolean mask over the rows.
    """
    if watch is None:
        return np.zeros(scores.shape[0], dtype=bool)
    return np.asarray((chosen != _SERVICE) & (scores[:, _SERVICE] >= watch), dtype=bool)


def decide_columns(scores: np.ndarray, policy: Policy) -> Decisions:
    """Turn calibrated scores into columnar decisions (see :func:`decide` for the rule).

    Args:
        scores: The (n, labels) calibrated score matrix, columns in ``LABELS`` order.
        policy: Thresholds, review thresholds, margin and the primary-label rule.

    Returns:
        The batch's decisions as arrays.
    """
    n_labels = len(LABELS)
    thresholds = np.array([policy.thresholds.get(lab, 0.5) for lab in LABELS])
    review = np.array([policy.review_thresholds.get(lab, 0.5) for lab in LABELS])
    order = _PRIORITY_ORDER
    n = scores.shape[0]
    above = scores >= thresholds
    any_above = above.any(axis=1)
    chosen = primary_indices(scores, thresholds, policy.primary_rule)
    rows = np.arange(n)
    sorted_scores = np.sort(scores, axis=1)
    margins = sorted_scores[:, -1] - sorted_scores[:, -2]
    below_review = scores[rows, chosen] < review[chosen]
    # The top two scores, whichever labels they belong to (the label contract): also when the priority rule
    # picked a lower-scoring label, and for a tie between the primary and a higher-listed column.
    close = margins < policy.margin
    watched = service_watched(scores, chosen, policy.service_watch)
    # Reason codes in order of precedence: 1 nothing clears, 2 + j label j below its review
    # threshold, 3 + len(LABELS) a possible service issue goes elsewhere, 2 + len(LABELS) top
    # two too close; 0 none.
    reasons: list[str | None] = [None, _REASON_TEXTS["no_label"]]
    reasons += [
        _REASON_TEXTS["below_review_threshold"].format(label=lab, value=review[j])
        for j, lab in enumerate(LABELS)
    ]
    reasons.append(_REASON_TEXTS["margin"].format(value=policy.margin))
    reasons.append(_REASON_TEXTS["service_watch"].format(value=policy.service_watch or 0))
    reason = np.where(
        ~any_above,
        1,
        np.where(
            below_review,
            2 + chosen,
            np.where(watched, 3 + n_labels, np.where(close, 2 + n_labels, 0)),
        ),
    )
    masks = (above * (1 << np.arange(n_labels))).sum(axis=1)
    keys, label_set = np.unique(chosen * (1 << n_labels) + masks, return_inverse=True)
    label_sets = []
    for key in keys.tolist():
        j, mask = divmod(key, 1 << n_labels)
        label_sets.append(
            [LABELS[j]]
            + [
                LABELS[k]
                for k in order.tolist()
                if mask >> k & 1 and k != j and LABELS[k] != "other"
            ]
        )
    return Decisions(
        primary=np.asarray(chosen, dtype=np.int64),
        label_sets=label_sets,
        label_set=np.asarray(label_set, dtype=np.int64).reshape(-1),
        reasons=reasons,
        reason=np.asarray(reason, dtype=np.int64),
    )


def review_reason_kind(reason: str | None) -> str | None:
    """The kind of a review reason that :func:`decide` gives (one of ``REVIEW_REASON_KINDS``).

    Reports count flags by kind ("how many did the service watch add?"), and the reasons carry
    numbers, so they are matched here, beside the code that writes them, not by each caller.

    Args:
        reason: A prediction's ``review_reason``; None when it needs no review.

    Returns:
        The kind, or None for None.

    Raises:
        ValueError: For a string that :func:`decide_columns` does not write.
    """
    if reason is None:
        return None
    for kind, pattern in _REASON_PATTERNS.items():
        if pattern.fullmatch(reason):
            return kind
    raise ValueError(f"not a review reason of this model: {reason!r}")


def decide(scores: np.ndarray, policy: Policy) -> list[tuple[str, list[str], bool, str | None]]:
    """Turn calibrated scores into (primary, labels, needs_review, reason) per row.

    The primary label is, under the ``priority`` rule, the label with the most urgent owner among
    those that clear their threshold (the label contract); under ``argmax`` simply the top score. With no label
    over its threshold, the top score is primary and the item needs review. It also needs review
    when the primary score is under its review threshold, when another label than the service
    issue is primary while the service issue scores at least the policy's ``service_watch``, or
    when the top two scores are closer than the margin; the reason names the first that applies.
    """
    d = decide_columns(scores, policy)
    # Each row gets its own list: callers may extend a prediction's labels.
    return [
        (LABELS[j], list(d.label_sets[s]), r != 0, d.reasons[r])
        for j, s, r in zip(d.primary.tolist(), d.label_set.tolist(), d.reason.tolist(), strict=True)
    ]


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
        # A model trained on fewer labels scores the missing ones 0.0 (the slower lookup path).
        textcat: Any = nlp.get_pipe(COMPONENT) if COMPONENT in nlp.pipe_names else None
        self._has_all_labels = set(getattr(textcat, "labels", ())) >= set(LABELS)

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

    def with_overrides(
        self,
        thresholds: dict[str, float],
        margin: float | None,
        service_watch: float | None = None,
        adapt: bool | None = None,
    ) -> Classifier:
        """Return a classifier whose review thresholds, margin, service watch or adaptation are
        overridden.

        Args:
            thresholds: Review thresholds per label (``default`` for every label not named).
            margin: The "top two too close" width, or None to keep the model's.
            service_watch: The service-issue score that flags an item going to another owner,
                or None to keep the model's (1.0 all but turns the flag off).
            adapt: False turns off adapting to each stream's label mix; None or True keeps the
                model's (a model without it cannot be made to adapt).
        """
        clone = Classifier(self.nlp, self.meta, self.path)
        default = thresholds.get("default")
        for label in LABELS:
            value = thresholds.get(label, default)
            if value is not None:
                clone.policy.review_thresholds[label] = value
        if margin is not None:
            clone.policy.margin = margin
        if service_watch is not None:
            clone.policy.service_watch = service_watch
        if adapt is False:
            clone.policy.adaptation = None
        return clone

    def raw_scores(self, texts: Iterable[str], batch_size: int = PIPE_BATCH) -> np.ndarray:
        """Return the uncalibrated (n, labels) score matrix for the texts, via ``nlp.pipe``."""
        rows: list[Any]
        cut = (t[:MAX_CLASSIFY_CHARS] for t in texts)
        # Pipelines built on spaCy's own tokenizer (cnn/ensemble configs) normalise here instead.
        stream = (
            cut if isinstance(self.nlp.tokenizer, FastTokenizer) else (normalize(t) for t in cut)
        )
        docs = self.nlp.pipe(stream, batch_size=batch_size)
        # The pipe runs lazily inside this block (the docs are made as the rows are read).
        with one_blas_thread():
            if self._has_all_labels:
                # One C-level lookup per document instead of a Python loop over the labels.
                get = itemgetter(*LABELS)
                rows = [get(doc.cats) for doc in docs]
            else:
                rows = [[doc.cats.get(lab, 0.0) for lab in LABELS] for doc in docs]
        return np.array(rows, dtype=np.float64).reshape(-1, len(LABELS))

    def scores(self, texts: Iterable[str], batch_size: int = PIPE_BATCH) -> np.ndarray:
        """Return calibrated (n, labels) scores."""
        return calibrate(self.raw_scores(texts, batch_size), self.policy.calibration)

    def stream_scores(
        self,
        texts: Sequence[str],
        streams: Sequence[K],
        history: Mapping[K, Sequence[str]] | None = None,
        batch_size: int = PIPE_BATCH,
        by_content: bool = False,
    ) -> tuple[np.ndarray, dict[K, StreamMix]]:
        """Calibrated scores, each stream's adapted to its label mix (:mod:`classifiers.adapt`).

        Args:
            texts: The texts to score.
            streams: Each text's stream (its source's name, or its file's).
            history: Earlier texts of a stream, scored only to estimate its mix.
            batch_size: Texts per ``nlp.pipe`` batch.
            by_content: Each row adapts to the mix of the rows of its stream most like it
                (:func:`classifiers.adapt.content_mixes`), not to its stream's one mix.

        Returns:
            The (n, labels) scores and, per stream, the mix applied (or why none was).
        """
        scores = self.scores(texts, batch_size)
        past = self.history_scores(history or {}, batch_size)
        return adapt_streams(
            scores, streams, self.policy.adaptation, past, texts=texts, by_content=by_content
        )

    def history_scores(
        self, history: Mapping[K, Sequence[str]], batch_size: int = PIPE_BATCH
    ) -> dict[K, np.ndarray]:
        """Calibrated scores of each stream's earlier texts (empty when the model does not adapt).

        One ``nlp.pipe`` pass over every stream's texts, then split by stream.
        """
        if self.policy.adaptation is None:
            return {}
        keys = [k for k, v in history.items() if v]
        flat = self.scores([t for k in keys for t in history[k]], batch_size)
        past: dict[K, np.ndarray] = {}
        start = 0
        for k in keys:
            past[k] = flat[start : start + len(history[k])]
            start += len(history[k])
        return past

    def predict(
        self,
        texts: Sequence[str],
        batch_size: int = PIPE_BATCH,
        streams: Sequence[K] | None = None,
    ) -> list[Prediction]:
        """Classify texts, keeping their order.

        Args:
            texts: The texts.
            batch_size: Texts per ``nlp.pipe`` batch.
            streams: Each text's stream, to adapt scores to each stream's label mix; None scores
                every text on its own (as the model was calibrated).
        """
        if streams is None:
            scores = self.scores(texts, batch_size)
        else:
            scores = self.stream_scores(texts, streams, batch_size=batch_size)[0]
        return self.predictions(scores)

    def predictions(self, scores: np.ndarray) -> list[Prediction]:
        """Decide each row of calibrated scores (:meth:`scores`, :meth:`stream_scores`)."""
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
