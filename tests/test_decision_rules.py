"""The decision rules against hand-written expectations (DESIGN.md "Labels", README "Data and the
classifier"), not against the code's own output.

Each row is a vector of already-calibrated scores, an explicit policy (thresholds, review
thresholds, margin, primary rule: nothing comes from the shipped model) and the decision the
documents prescribe: primary label, secondary labels in DESIGN.md's priority order, and the review
reason (None: no review). The rules, and the choices where the documents are silent, are spelt out
in ``tests/decision_oracle.py``. Scores and thresholds are multiples of 1/1024, exact in binary, so
"at the threshold" and "exactly the margin apart" mean exactly that.

Both the column-wise ``decide_columns`` (one batch per policy) and the per-record ``decide`` are
checked against the table; the plain-Python reference is checked against the table too, and then
against the code on many random vectors on a coarse grid (ties and exact boundaries are common).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pytest

from classifiers.model import Decisions, Policy, decide, decide_columns
from tests.decision_oracle import (
    BELOW_REVIEW,
    MARGIN,
    NO_LABEL,
    PRIORITY_ORDER,
    WATCH,
    Expected,
    reason_matches,
    reference_decision,
)
from triage.models import LABELS

K, S, F, SI, O = "kudos", "sales_lead", "feature_request", "service_issue", "other"
E = 1 / 1024  # "just below / just above"
LOW = 0.0625  # the score of every label a row does not name

THRESHOLDS = {K: 0.5, S: 0.625, F: 0.375, SI: 0.4375, O: 0.75}
REVIEW = {K: 0.875, S: 0.6875, F: 0.5, SI: 0.5625, O: 0.8125}
MARGIN_WIDTH = 0.125


def policy(rule: str, review: dict[str, float] | None = None) -> Policy:
    """The table's policy under one primary rule (thresholds differ per label on purpose)."""
    return Policy(
        thresholds=dict(THRESHOLDS),
        review_thresholds=dict(review or REVIEW),
        margin=MARGIN_WIDTH,
        primary_rule=rule,
    )


def below(label: str) -> str:
    return BELOW_REVIEW.format(label=label)


@dataclass(frozen=True)
class Row:
    """One hand-written case; ``argmax`` is None when both rules give the same decision."""

    name: str
    scores: dict[str, float]
    priority: Expected
    argmax: Expected | None = None
    # False: review thresholds equal the thresholds (isolates the "applies" boundary).
    review: bool = True
    full: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", {lab: self.scores.get(lab, LOW) for lab in LABELS})

    def expected(self, rule: str) -> Expected:
        return self.priority if rule == "priority" or self.argmax is None else self.argmax

    def policy(self, rule: str) -> Policy:
        return policy(rule, None if self.review else THRESHOLDS)


def X(primary: str, secondary: tuple[str, ...] = (), reason: str | None = None) -> Expected:
    return Expected(primary, secondary, reason)


# Each label's own threshold: just below (nothing applies), at it and just above (it applies).
THRESHOLD_ROWS = [
    row
    for lab, t in THRESHOLDS.items()
    for row in (
        Row(
            f"{lab} just below its threshold {t}", {lab: t - E}, X(lab, (), NO_LABEL), review=False
        ),
        Row(f"{lab} at its threshold {t}", {lab: t}, X(lab), review=False),
        Row(f"{lab} just above its threshold {t}", {lab: t + E}, X(lab), review=False),
    )
]

# Each label's own review threshold, for the primary label: strictly below it flags the item.
REVIEW_ROWS = [
    row
    for lab, r in REVIEW.items()
    for row in (
        Row(f"{lab} just below its review threshold {r}", {lab: r - E}, X(lab, (), below(lab))),
        Row(f"{lab} at its review threshold {r}", {lab: r}, X(lab)),
        Row(f"{lab} just above its review threshold {r}", {lab: r + E}, X(lab)),
    )
]

HAND_ROWS = [
    # ------------------------------------------------------------ review threshold, per label
    Row(
        "the review threshold judges the primary, not a secondary under its own",
        {SI: 0.75, K: 0.5},
        X(SI, (K,)),
    ),
    Row("0.625 passes feature_request's review threshold", {F: 0.625}, X(F)),
    Row("0.65625 applies as sales_lead but is under its review", {S: 0.65625}, X(S, (), below(S))),
    # ------------------------------------------------------------ no label clears its threshold
    Row(
        "every score under its own threshold: the top score is primary",
        {K: 0.4375, S: 0.5, F: 0.25, SI: 0.375, O: 0.625},
        X(O, (), NO_LABEL),
    ),
    Row(
        "a high score under its high threshold, a lower one over its low threshold",
        {O: 0.6875, F: 0.40625},
        X(F, (), below(F)),
        X(O, (F,), below(O)),
    ),
    Row(
        "all scores zero: a tie, broken by priority",
        dict.fromkeys(LABELS, 0.0),
        X(SI, (), NO_LABEL),
    ),
    Row(
        "no label applies and the top two are close: the no-label reason comes first",
        {K: 0.4375, S: 0.40625},
        X(K, (), NO_LABEL),
    ),
    # ------------------------------------------------------------ the top two scores too close
    Row("top two closer than the margin", {SI: 0.875, K: 0.75 + E}, X(SI, (K,), MARGIN)),
    Row("top two exactly the margin apart", {SI: 0.875, K: 0.75}, X(SI, (K,))),
    Row("top two just wider than the margin", {SI: 0.875, K: 0.75 - E}, X(SI, (K,))),
    Row(
        "close top two where priority picks the lower one",
        {K: 0.875, SI: 0.8125},
        X(SI, (K,), MARGIN),
        X(K, (SI,), MARGIN),
    ),
    Row(
        "close top two that do not include the priority pick",
        {K: 0.96875, S: 0.90625, SI: 0.625},
        X(SI, (S, K), MARGIN),
        X(K, (SI, S), MARGIN),
    ),
    Row(
        "other is one of the close top two",
        {O: 0.9375, K: 0.90625},
        X(K, (), MARGIN),
        X(O, (K,), MARGIN),
    ),
    Row(
        "a wide gap at the top and close scores below it",
        {SI: 0.9375, S: 0.75, F: 0.71875},
        X(SI, (S, F)),
    ),
    Row(
        "under the review threshold and close: the review-threshold reason comes first",
        {SI: 0.5, K: 0.46875},
        X(SI, (), below(SI)),
    ),
    # ------------------------------------------------------------ ties
    Row("service_issue and kudos tie", {K: 0.75, SI: 0.75}, X(SI, (K,), MARGIN)),
    Row("sales_lead and feature_request tie", {F: 0.75, S: 0.75}, X(S, (F,), MARGIN)),
    Row("kudos and other tie", {O: 0.875, K: 0.875}, X(K, (), MARGIN)),
    Row("a tie at the top under every threshold", {K: 0.25, F: 0.25}, X(F, (), NO_LABEL)),
    Row("a tie for second place", {SI: 0.9375, K: 0.625, F: 0.625}, X(SI, (F, K))),
    # ------------------------------------------------------------ priority order
    Row(
        "all four intents and other apply",
        {K: 0.96875, F: 0.8125, O: 0.78125, S: 0.6875, SI: 0.59375},
        X(SI, (S, F, K)),
        X(K, (SI, S, F)),
    ),
    Row(
        "no service issue: the sales lead comes first",
        {K: 0.96875, F: 0.8125, S: 0.6875},
        X(S, (F, K)),
        X(K, (S, F)),
    ),
    Row(
        "feature_request before kudos",
        {K: 0.96875, F: 0.8125},
        X(F, (K,)),
        X(K, (F,)),
    ),
    Row(
        "kudos before other, which is never a secondary label",
        {O: 1.0, K: 0.875},
        X(K),
        X(O, (K,)),
    ),
    Row(
        "service_issue before sales_lead",
        {S: 0.9375, SI: 0.5625},
        X(SI, (S,)),
        X(S, (SI,)),
    ),
    Row(
        "sales_lead before feature_request",
        {F: 0.9375, S: 0.6875},
        X(S, (F,)),
        X(F, (S,)),
    ),
    Row(
        "a service issue at its threshold outranks far stronger kudos",
        {K: 0.96875, SI: 0.4375},
        X(SI, (K,), below(SI)),
        X(K, (SI,)),
    ),
    Row("other alone", {O: 0.875}, X(O)),
]

ROWS = THRESHOLD_ROWS + REVIEW_ROWS + HAND_ROWS
CASES = [(row, rule) for row in ROWS for rule in ("priority", "argmax")]
IDS = [f"{rule}: {row.name}" for row, rule in CASES]


def _matrix(rows: list[Row]) -> np.ndarray:
    return np.array([[row.full[lab] for lab in LABELS] for row in rows], dtype=np.float64)


def _check(got: tuple[str, list[str], bool, str | None], want: Expected) -> None:
    primary, labels, needs_review, reason = got
    assert (primary, tuple(labels[1:])) == (want.primary, want.secondary)
    assert labels[0] == primary
    assert needs_review is want.needs_review, reason
    assert reason_matches(want.reason, reason), (want.reason, reason)


def _unpack(d: Decisions, i: int) -> tuple[str, list[str], bool, str | None]:
    return (
        LABELS[int(d.primary[i])],
        d.label_sets[int(d.label_set[i])],
        bool(d.needs_review[i]),
        d.reasons[int(d.reason[i])],
    )


@pytest.mark.parametrize(("row", "rule"), CASES, ids=IDS)
def test_decide_one_record(row: Row, rule: str) -> None:
    (got,) = decide(_matrix([row]), row.policy(rule))
    _check(got, row.expected(rule))


@pytest.mark.parametrize("rule", ["priority", "argmax"])
@pytest.mark.parametrize("review", [True, False], ids=["review-thresholds", "flat"])
def test_decide_columns_over_the_whole_table_as_one_batch(rule: str, review: bool) -> None:
    rows = [row for row in ROWS if row.review is review]
    d = decide_columns(_matrix(rows), rows[0].policy(rule))
    assert len(d.primary) == len(rows)
    for i, row in enumerate(rows):
        got = _unpack(d, i)
        want = row.expected(rule)
        try:
            _check(got, want)
        except AssertionError as exc:
            raise AssertionError(f"{rule}: {row.name}: got {got}, want {want}") from exc
    assert d.needs_review.tolist() == [row.expected(rule).needs_review for row in rows]


@pytest.mark.parametrize(("row", "rule"), CASES, ids=IDS)
def test_the_reference_agrees_with_the_table(row: Row, rule: str) -> None:
    """The plain-Python reference used elsewhere is itself held to the hand-written table."""
    assert reference_decision(row.full, row.policy(rule)) == row.expected(rule)


def test_the_table_covers_every_rule() -> None:
    reasons = {row.expected(rule).reason for row, rule in CASES}
    assert {None, NO_LABEL, MARGIN} <= reasons
    assert {below(lab) for lab in LABELS} <= reasons
    # Every label is primary somewhere under each rule, and every pair in the priority order is
    # decided both ways between the two rules.
    for rule in ("priority", "argmax"):
        assert {row.expected(rule).primary for row in ROWS} == set(LABELS)
    for hi, lo in pairwise(PRIORITY_ORDER):
        assert any(
            row.priority.primary == hi and row.full[lo] > row.full[hi] and row.argmax is not None
            for row in HAND_ROWS
        ), (hi, lo)


@pytest.mark.parametrize("rule", ["priority", "argmax"])
def test_columns_equal_the_reference_on_a_coarse_grid(rule: str) -> None:
    """Random vectors, thresholds and margins on a 1/16 grid: ties and exact boundaries abound."""
    rng = np.random.default_rng(19)
    for _ in range(40):
        thresholds = dict(zip(LABELS, rng.integers(4, 13, len(LABELS)) / 16, strict=True))
        review = {lab: min(1.0, t + rng.integers(0, 5) / 16) for lab, t in thresholds.items()}
        watch = int(rng.integers(0, 8))
        pol = Policy(
            thresholds=thresholds,
            review_thresholds=review,
            margin=float(rng.integers(0, 5) / 16),
            primary_rule=rule,
            # Half the policies have no service watch; the others one on the grid.
            service_watch=watch / 8 if watch >= 4 else None,
        )
        scores = rng.integers(0, 17, (200, len(LABELS))) / 16
        d = decide_columns(scores, pol)
        per_record = decide(scores, pol)
        for i, row in enumerate(scores):
            want = reference_decision(dict(zip(LABELS, row.tolist(), strict=True)), pol)
            got = _unpack(d, i)
            try:
                _check(got, want)
                _check(per_record[i], want)
            except AssertionError as exc:
                raise AssertionError(f"{pol}: {row.tolist()}: got {got}, want {want}") from exc


def test_a_policy_without_thresholds_uses_one_half_for_every_label() -> None:
    """A model whose metadata names no thresholds decides as the default policy says: 0.5 each
    (``Policy``'s documented default), for clearing a label and for its review."""
    bare = Policy.from_json({"margin": 0.0})
    rows = {
        "clears at 0.5": {K: 0.5},
        "just under 0.5": {K: 0.5 - E},
        "a second label at 0.5": {SI: 0.75, F: 0.5},
    }
    scores = np.array([[r.get(lab, LOW) for lab in LABELS] for r in rows.values()])
    got = decide(scores, bare)
    assert got[0] == (K, [K], False, None)
    assert got[1][0] == K and got[1][2] and got[1][3] == NO_LABEL
    assert got[2] == (SI, [SI, F], False, None)


# The service watch (README "Decision rule"): the table's policy with a watch at 0.25.
WATCH_AT = 0.25
WATCH_ROWS = [
    Row(
        "confident kudos while service_issue reaches the watch",
        {K: 0.9375, SI: WATCH_AT},
        X(K, (), WATCH),
    ),
    Row("service_issue just under the watch", {K: 0.9375, SI: WATCH_AT - E}, X(K)),
    Row(
        "service_issue primary: the watch is about other owners",
        {SI: 0.6875, K: 0.25},
        X(SI),
    ),
    Row(
        "service_issue applies; argmax gives kudos, so the watch flags it",
        {K: 0.9375, SI: 0.625},
        X(SI, (K,)),
        X(K, (SI,), WATCH),
    ),
    Row(
        "the watch comes before the margin",
        {K: 0.9375, SI: 0.875},
        X(SI, (K,), MARGIN),
        X(K, (SI,), WATCH),
    ),
    Row(
        "a primary under its review threshold comes before the watch",
        {K: 0.75, SI: 0.3125},
        X(K, (), below(K)),
    ),
]


def _watching(rule: str) -> Policy:
    pol = policy(rule)
    pol.service_watch = WATCH_AT
    return pol


@pytest.mark.parametrize("rule", ["priority", "argmax"])
def test_the_service_watch_flags_a_possible_service_issue_sent_elsewhere(rule: str) -> None:
    d = decide_columns(_matrix(WATCH_ROWS), _watching(rule))
    for i, row in enumerate(WATCH_ROWS):
        want = row.expected(rule)
        assert reference_decision(row.full, _watching(rule)) == want, row.name
        _check(_unpack(d, i), want)
        _check(decide(_matrix([row]), _watching(rule))[0], want)
    # Without a watch the same rows are not flagged for it.
    plain = decide(_matrix(WATCH_ROWS), policy(rule))
    assert not any(r[3] and r[3].startswith(WATCH) for r in plain)


def test_the_service_watch_is_stored_only_when_set() -> None:
    """Models trained before the watch keep their policy (and version hash) as they were."""
    pol = _watching("priority")
    assert Policy.from_json(pol.to_json()).service_watch == WATCH_AT
    bare = policy("priority")
    assert "service_watch" not in bare.to_json()
    assert Policy.from_json(bare.to_json()).service_watch is None


def test_steep_calibration_saturates_without_warnings() -> None:
    """A steep scaling of a confident score gives exactly 0 or 1, monotone, and no overflow warning.

    Trained on a few large files, a model can get a scaling slope of 20 or more; exp() of the
    scaled log-odds then passes the float range, and the warning reached `triage evaluate` output.
    """
    import warnings

    from classifiers.model import calibrate

    raw = np.tile(np.array([[1e-9], [0.001], [0.3], [0.5], [0.9], [1 - 1e-9]]), (1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = calibrate(raw, {"kudos": (60.0, -1.0), "other": (-60.0, 0.0)})
    assert out[0, 0] == 0.0 and out[-1, 0] == 1.0
    assert np.all(np.diff(out[:, 0]) >= 0)  # a positive slope keeps the order
    assert np.all(np.diff(out[:, 4]) <= 0)  # a negative one reverses it
    assert out[0, 4] == 1.0 and out[-1, 4] == 0.0
    # Labels without a scaling are left as they were.
    assert np.array_equal(out[:, 1], raw[:, 1])


def _platt_loss(raw: np.ndarray, y: np.ndarray, a: float, b: float, l2: float = 1e-3) -> float:
    # The penalised log loss fit_platt minimises, written out again here.
    p = np.clip(raw, 1e-6, 1 - 1e-6)
    z = a * np.log(p / (1 - p)) + b
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * ((a - 1) ** 2 + b**2))


def test_platt_scaling_of_an_overconfident_model_converges() -> None:
    """Scores far surer than they are right (a model on a source it never saw) get a gentle slope.

    Plain Newton from a slope of 1 overshot on such scores and diverged to a slope of about 1e8
    (every calibrated score 0 or 1): a model trained on the shared files without the starter
    corpus shipped that. The fit must land at the loss minimum instead.
    """
    from classifiers.calibration import fit_platt

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.2).astype(float)
    logits = np.where(y == 1, rng.normal(-1, 5, 3000), rng.normal(-6, 4, 3000))
    raw = 1 / (1 + np.exp(-logits))
    a, b = fit_platt(raw, y)
    assert 0.1 < a < 0.6  # far less sure than the raw scores, never a step function
    best = _platt_loss(raw, y, a, b)
    # A minimum: no nearby slope or intercept does better, and far better than no scaling.
    for da, db in ((0.01, 0), (-0.01, 0), (0, 0.05), (0, -0.05)):
        assert best <= _platt_loss(raw, y, a + da, b + db)
    assert best < _platt_loss(raw, y, 1.0, 0.0) * 0.9


def test_platt_scaling_of_a_well_calibrated_model_stays_near_identity() -> None:
    from classifiers.calibration import fit_platt

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-logits))).astype(float)
    a, b = fit_platt(1 / (1 + np.exp(-logits)), y)
    assert abs(a - 1) < 0.1 and abs(b) < 0.1
