"""Adapting calibrated scores to the label mix of each stream (source).

A model's calibrated scores carry the label mix of the rows they were calibrated on: about a third
service issues for the starter corpus. A customer's source has a mix of its own (a support inbox is
mostly service issues, a YouTube channel's comments mostly spam and praise), and on such a source
the same text is more or less likely to be each label than the calibration says. When a source's
label mix differs from the training mix but texts of a label read alike in both (label shift),
the source's mix can be estimated from its unlabelled scores and the scores corrected with it
(expectation-maximisation over the priors; Saerens, Latinne and Decaestecker, 2002).

Three guards, all measured on new sources (README, "Adapting to each source's label mix"):

* **damping**: only part of the estimated shift is applied (the log-odds of the prior move
  ``damping`` of the way), because a stream's mix estimated from a model's own scores is itself
  uncertain;
* **protected labels** (``service_issue``, ``sales_lead`` by default): their scores are never
  lowered, so a rare problem report or purchase in a stream of praise keeps the score the model
  gave it (DESIGN.md: support acts first, and a missed lead is lost revenue);
* **learned streams**: a stream the model trained on (a training file's name, a correction's
  source) is left alone, because the model has already learned its mix; adapting again would
  count it twice.

And a stream needs ``min_items`` items (with its history) before its mix is estimated at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TypeVar

import numpy as np

from classifiers.neighbours import NEIGHBOURS, nearest, reference_rows, text_features
from triage.models import LABELS

_EPS = 1e-4
K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Adaptation:
    """How a model adapts its scores to a stream's label mix (part of its decision policy)."""

    prior: dict[str, float]
    """Each label's share of the rows the calibration was fitted on (the mix the scores assume)."""
    damping: float = 0.3
    """The share of the estimated shift in log-odds that is applied (0: none, 1: all)."""
    min_items: int = 50
    """A stream with fewer items (its history included) is left as it is."""
    protect: tuple[str, ...] = ("service_issue", "sales_lead")
    """Labels whose scores are never lowered."""
    learned: tuple[str, ...] = field(default_factory=tuple)
    """Streams the model trained on (:func:`stream_name` of each): left as they are."""

    def to_json(self) -> dict[str, Any]:
        """Serialise for the model's metadata file."""
        return {
            "prior": {lab: round(float(v), 6) for lab, v in self.prior.items()},
            "damping": self.damping,
            "min_items": self.min_items,
            "protect": list(self.protect),
            "learned": sorted(self.learned),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Adaptation:
        """Read it back from metadata (a key it lacks takes the field's default)."""
        given: dict[str, Any] = {}
        if "damping" in data:
            given["damping"] = float(data["damping"])
        if "min_items" in data:
            given["min_items"] = int(data["min_items"])
        for key in ("protect", "learned"):
            if key in data:
                given[key] = tuple(str(x) for x in data[key])
        return cls(prior={str(k): float(v) for k, v in data["prior"].items()}, **given)

    def prior_vector(self) -> np.ndarray:
        """The prior in :data:`LABELS` order, kept away from 0 and 1."""
        return np.clip(np.array([self.prior.get(lab, 0.0) for lab in LABELS]), _EPS, 1 - _EPS)

    def learns(self, stream: Hashable) -> bool:
        """Whether the model trained on this stream (by :func:`stream_name`): left as it is."""
        return stream_name(str(stream)) in self.learned


def stream_name(name: str) -> str:
    """The name a stream is known by: a source's name, or a file's name without its folder and
    extension (``../shared/datasets/train/airline_tweets.csv`` → ``airline_tweets``).

    A correction's origin (``corrections/<source>``) is its source's name.
    """
    if name.startswith("corrections/"):
        return name.removeprefix("corrections/")
    path = PurePath(name)
    # Only a file is shortened: a source's name may contain dots or slashes of its own.
    return path.stem if path.suffix.lower() in {".csv", ".jsonl", ".ndjson", ".json"} else name


def _shift(scores: np.ndarray, prior: np.ndarray, mix: np.ndarray) -> np.ndarray:
    # Bayes' rule for a change of prior, label by label (each label's score is its own
    # probability; the labels are not exclusive): odds times the ratio of the priors' odds.
    up = mix / prior
    down = (1 - mix) / (1 - prior)
    p = np.clip(scores, 0.0, 1.0)
    return np.asarray(p * up / (p * up + (1 - p) * down))


def estimate_mix(
    scores: np.ndarray, prior: np.ndarray, max_iter: int = 200, tol: float = 1e-6
) -> np.ndarray:
    """Estimate a stream's label shares from its calibrated scores (EM over the priors).

    Args:
        scores: Calibrated (n, labels) scores of the stream's items.
        prior: The label shares the calibration assumed (:meth:`Adaptation.prior_vector`).
        max_iter: The most EM steps.
        tol: Stop when no share moves by more than this.

    Returns:
        The estimated share of each label, in :data:`LABELS` order.
    """
    return estimate_mixes(scores[None], prior, max_iter, tol)[0]


def estimate_mixes(
    groups: np.ndarray, prior: np.ndarray, max_iter: int = 200, tol: float = 1e-6
) -> np.ndarray:
    """:func:`estimate_mix` for many groups of equal size at once.

    Args:
        groups: Calibrated (groups, n, labels) scores, e.g. each row's neighbourhood.
        prior: The label shares the calibration assumed.
        max_iter: The most EM steps.
        tol: A group stops when none of its shares moves by more than this.

    Returns:
        A (groups, labels) array of estimated shares.
    """
    mix = np.tile(prior, (len(groups), 1))
    active = np.arange(len(groups))
    for _ in range(max_iter):
        if not len(active):
            break
        sub = mix[active]
        new = np.clip(_shift(groups[active], prior, sub[:, None, :]).mean(axis=1), _EPS, 1 - _EPS)
        # A group that has converged keeps its last step, and the rest go on without it.
        mix[active] = new
        active = active[np.abs(new - sub).max(axis=1) >= tol]
    return mix


def applied_mix(estimated: np.ndarray, settings: Adaptation) -> np.ndarray:
    """The mix actually applied: damped toward the prior, never below it for protected labels.

    ``estimated`` is one mix (labels,) or one per row (rows, labels).
    """
    prior = settings.prior_vector()
    logit = np.log(prior / (1 - prior))
    est = np.clip(estimated, _EPS, 1 - _EPS)
    moved = logit + settings.damping * (np.log(est / (1 - est)) - logit)
    mix = 1 / (1 + np.exp(-moved))
    for label in settings.protect:
        if label in LABELS:
            j = LABELS.index(label)
            mix[..., j] = np.maximum(mix[..., j], prior[j])
    return np.asarray(mix)


ADAPTED = "adapted"
"""How a stream adapted to its one mix was adapted (:class:`StreamMix`'s ``reason``)."""

LEARNED = "the model trained on this source"
"""Why a stream the model learned (its name among ``Adaptation.learned``) is left as it is."""


@dataclass(slots=True)
class StreamMix:
    """What adaptation did for one stream (reported by ``triage evaluate`` and the flow)."""

    items: int
    """Items the mix was estimated on (the stream's own plus its history)."""
    mix: dict[str, float] | None
    """The applied label shares; None when the stream was left as it is."""
    reason: str
    """``adapted``, :data:`BY_CONTENT` (``mix`` is then the mean over the rows),
    ``fewer than N items`` or :data:`LEARNED`."""


def adapt_streams(
    scores: np.ndarray,
    streams: Sequence[K],
    settings: Adaptation | None,
    history: Mapping[K, np.ndarray] | None = None,
    texts: Sequence[str] | None = None,
    by_content: bool = False,
    history_texts: Mapping[K, Sequence[str]] | None = None,
) -> tuple[np.ndarray, dict[K, StreamMix]]:
    """Adapt each stream's scores to its own label mix.

    Args:
        scores: Calibrated (n, labels) scores.
        streams: Each row's stream (a source's name; for files, :func:`stream_name`).
        settings: The model's adaptation; None returns the scores unchanged.
        history: Calibrated scores of earlier items of a stream (not adapted, not returned),
            estimated on together with the stream's rows: a scheduled run brings a few new items,
            and the mix is a property of the source, not of one run.
        texts: Each row's text; needed only for ``by_content``.
        by_content: Each row adapts to the mix of the rows of its stream that read most like it
            (:func:`content_mixes`) instead of the stream's one mix: a stream has parts with
            mixes of their own, and a file without a source column may hold several sources.
            A stream's history is among the neighbours only when its texts are given too.
        history_texts: With ``by_content``: the texts of each stream's ``history`` rows, in the
            same order, so that a run's few new items find their neighbours among the source's
            earlier ones.

    Returns:
        The adapted scores (a new array) and, per stream, what was done.

    Raises:
        ValueError: When ``by_content`` is set and ``texts`` is not given, or a stream's history
            texts do not match its history scores.
    """
    if by_content and texts is None:
        raise ValueError("adapting by content needs the texts")
    out = np.array(scores, dtype=np.float64, copy=True)
    report: dict[K, StreamMix] = {}
    if settings is None or len(out) == 0:
        return out, report
    rows: dict[K, list[int]] = defaultdict(list)
    for i, key in enumerate(streams):
        rows[key].append(i)
    prior = settings.prior_vector()
    for key, idx in rows.items():
        past = (history or {}).get(key)
        before: list[str] = []
        if by_content:
            before = list((history_texts or {}).get(key, ()))
            if before and (past is None or len(past) != len(before)):
                raise ValueError(f"stream {key!r}: history texts do not match its scores")
            if not before:
                past = None  # neighbours are found by text: history without texts is not used
        sample = out[idx] if past is None or not len(past) else np.vstack([out[idx], past])
        if settings.learns(key):
            report[key] = StreamMix(len(sample), None, LEARNED)
            continue
        if len(sample) < settings.min_items:
            report[key] = StreamMix(len(sample), None, f"fewer than {settings.min_items} items")
            continue
        if by_content:
            assert texts is not None  # checked above; narrows the type
            # The history is compared and estimated on; only the stream's own rows change.
            mixes = content_mixes(sample, [texts[i] for i in idx] + before, settings, len(idx))
            out[idx] = _shift(out[idx], prior, mixes)
            mix, reason = mixes.mean(axis=0), BY_CONTENT.format(n=NEIGHBOURS)
        else:
            mix = applied_mix(estimate_mix(sample, prior), settings)
            out[idx] = _shift(out[idx], prior, mix)
            reason = ADAPTED
        report[key] = StreamMix(
            len(sample),
            {lab: round(float(v), 4) for lab, v in zip(LABELS, mix, strict=True)},
            reason,
        )
    return out, report


ADAPT_TO = ("neighbours", "source")
"""What ``triage classify``, ``triage evaluate`` and a run (``classification.adapt_to``) adapt each
row's scores to: the mix of the rows of its stream most like it
(``adapt_streams(by_content=True)``), or its stream's one mix."""


def adapts_by_content(adapt_to: str) -> bool:
    """Whether ``adapt_to`` (one of :data:`ADAPT_TO`) asks for each row's neighbours' mix.

    Raises:
        ValueError: When ``adapt_to`` is not one of :data:`ADAPT_TO`.
    """
    if adapt_to not in ADAPT_TO:
        raise ValueError(f"adapt_to must be one of {', '.join(ADAPT_TO)}, not {adapt_to!r}")
    return adapt_to == "neighbours"


BY_CONTENT = "each item to the mix of the {n} items most like it"
"""How a stream adapted by content was adapted (``{n}``: the neighbourhood size)."""


def content_mixes(
    scores: np.ndarray, texts: Sequence[str], settings: Adaptation, wanted: int | None = None
) -> np.ndarray:
    """The mix applied to each row of a stream that may mix sources: its neighbourhood's.

    Each row's mix is estimated (EM, as :func:`estimate_mix`) on the
    :data:`~classifiers.neighbours.NEIGHBOURS` rows that read most like it, itself included
    (:mod:`classifiers.neighbours`), so a file of airline tweets and app reviews adapts each part
    to its own mix. The guards are the same as for a whole stream (:func:`applied_mix`). Rows
    that share no term with the rest (no word, word piece or style mark), and every row when no
    term is shared at all, get the mix of the whole stream.

    Args:
        scores: Calibrated (n, labels) scores of the stream's rows (n >= 1).
        texts: The rows' texts.
        settings: The model's adaptation.
        wanted: Only the first this many rows need a mix (a run's new items, ahead of the
            source's history); the rest are compared and estimated on, not given a mix.

    Returns:
        An (n, labels) array, or (wanted, labels): each row's applied mix.
    """
    n = len(texts) if wanted is None else min(wanted, len(texts))
    prior = settings.prior_vector()
    ref = reference_rows(len(texts))
    features = text_features(texts, ref)
    whole = applied_mix(estimate_mix(scores[ref], prior), settings)
    mixes = np.tile(whole, (n, 1))
    if features.shape[1] == 0:
        return mixes
    local = features[ref]
    # A row outside the sample takes the mix of the sampled row it reads most like.
    owner = np.arange(n)
    if len(ref) < len(texts):
        owner = nearest(features[:n], local, 1)[:, 0]
        inside = ref < n
        owner[ref[inside]] = np.flatnonzero(inside)
    use = features[:n].any(axis=1) & local.any(axis=1)[owner]
    # EM only for the sampled rows whose mix is handed on: each neighbourhood is estimated on
    # its own, so leaving out the history's (most of a run's rows) changes no mix.
    needed, position = np.unique(owner[use], return_inverse=True)
    around = nearest(local[needed], local, NEIGHBOURS)
    estimated = applied_mix(estimate_mixes(scores[ref][around], prior), settings)
    mixes[use] = estimated[position]
    return mixes


def describe_streams(streams: Mapping[Hashable, StreamMix], limit: int = 20) -> list[str]:
    """One line per stream, for progress output: the mix applied, or why none was."""
    lines = []
    for key, done in sorted(streams.items(), key=lambda kv: str(kv[0]))[:limit]:
        if done.mix is None:
            lines.append(f"source {key}: {done.items:,} items, not adapted ({done.reason})")
        else:
            shares = ", ".join(f"{lab} {v:.2f}" for lab, v in done.mix.items())
            if done.reason == ADAPTED:
                lines.append(
                    f"source {key}: {done.items:,} items, scores adapted to its mix ({shares})"
                )
            else:
                lines.append(
                    f"source {key}: {done.items:,} items, scores adapted {done.reason} "
                    f"(on average {shares})"
                )
    if len(streams) > limit:
        lines.append(f"... and {len(streams) - limit} more sources")
    return lines
