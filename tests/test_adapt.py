"""Adapting scores to a stream's label mix (classifiers/adapt.py): the engine on known mixes.

The scores here are exact posteriors of a generative model whose label shares are set by the
test, so what EM should recover and what the adapted scores should be are known in closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.adapt import (
    Adaptation,
    StreamMix,
    adapt_streams,
    applied_mix,
    describe_streams,
    estimate_mix,
    stream_name,
)
from classifiers.model import Policy
from triage.models import LABELS

PRIOR = np.array([0.25, 0.19, 0.19, 0.31, 0.16])  # about the starter corpus's shares


def posteriors(prior: np.ndarray, shares: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Scores of ``n`` items of a stream whose labels occur at ``shares``, calibrated to ``prior``.

    Each label is present or not on its own (the labels are not exclusive); its evidence is
    normal with mean +1 when present and -1 when not, and the score is the posterior under
    ``prior``: what a perfectly calibrated model trained on that mix would say.
    """
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(prior))) < shares
    x = rng.normal(np.where(present, 1.0, -1.0), 1.0)
    # Likelihood ratio of N(1, 1) to N(-1, 1) at x is exp(2x).
    odds = prior / (1 - prior) * np.exp(2 * x)
    return np.asarray(odds / (1 + odds))


def settings(**kw: object) -> Adaptation:
    base: dict[str, object] = {"prior": dict(zip(LABELS, PRIOR, strict=True))}
    base.update(kw)
    return Adaptation(**base)  # type: ignore[arg-type]


def test_em_recovers_a_streams_label_mix() -> None:
    shares = np.array([0.70, 0.02, 0.10, 0.15, 0.05])  # an app store's praise-heavy stream
    scores = posteriors(PRIOR, shares, 20_000)
    mix = estimate_mix(scores, PRIOR)
    assert np.abs(mix - shares).max() < 0.02
    # And a stream with the training mix is left where it is.
    assert (
        np.abs(estimate_mix(posteriors(PRIOR, PRIOR, 20_000, seed=1), PRIOR) - PRIOR).max() < 0.02
    )


def test_full_adaptation_gives_the_posterior_under_the_streams_mix() -> None:
    shares = np.array([0.70, 0.02, 0.10, 0.15, 0.05])
    rng_scores = posteriors(PRIOR, shares, 5_000, seed=2)
    truth = posteriors(shares, shares, 5_000, seed=2)  # same evidence, the stream's own prior
    adapted, report = adapt_streams(
        rng_scores, ["app-store"] * 5_000, settings(damping=1.0, protect=())
    )
    assert report["app-store"].reason == "adapted"
    # Up to the error of the estimated mix (5,000 items).
    assert np.abs(adapted - truth).mean() < 0.01
    assert np.abs(adapted - truth).max() < 0.1
    # The adapted scores are better calibrated to the stream than the plain ones.
    rng = np.random.default_rng(2)
    present = rng.random((5_000, 5)) < shares
    brier = lambda s: float(((s - present) ** 2).mean())
    assert brier(adapted) < brier(rng_scores)


def test_damping_moves_half_way_in_log_odds() -> None:
    estimated = np.array([0.70, 0.02, 0.10, 0.15, 0.05])
    half = applied_mix(estimated, settings(damping=0.5, protect=()))
    logit = lambda p: np.log(p / (1 - p))
    assert np.allclose(logit(half), (logit(PRIOR) + logit(estimated)) / 2)
    assert np.allclose(applied_mix(estimated, settings(damping=1.0, protect=())), estimated)
    assert np.allclose(applied_mix(estimated, settings(damping=0.0, protect=())), PRIOR)


def test_protected_labels_are_never_lowered() -> None:
    # A stream of praise with hardly any problem reports or purchases in it.
    shares = np.array([0.85, 0.01, 0.05, 0.03, 0.06])
    scores = posteriors(PRIOR, shares, 3_000, seed=3)
    adapted, report = adapt_streams(scores, ["reviews"] * 3_000, settings())
    si, lead = LABELS.index("service_issue"), LABELS.index("sales_lead")
    assert np.allclose(adapted[:, si], scores[:, si])
    assert np.allclose(adapted[:, lead], scores[:, lead])
    mix = report["reviews"].mix
    assert mix is not None and mix["service_issue"] == pytest.approx(PRIOR[si], abs=1e-4)
    # Unprotected, the same stream would have lowered them.
    plain, _ = adapt_streams(scores, ["reviews"] * 3_000, settings(protect=()))
    assert (plain[:, si] < scores[:, si] - 1e-9).mean() > 0.99
    # A stream rich in them still raises them.
    support = posteriors(PRIOR, np.array([0.05, 0.02, 0.05, 0.85, 0.03]), 3_000, seed=4)
    raised, _ = adapt_streams(support, ["inbox"] * 3_000, settings())
    assert (raised[:, si] > support[:, si] + 1e-9).mean() > 0.99


def test_small_learned_and_separate_streams() -> None:
    shares = np.array([0.70, 0.02, 0.10, 0.15, 0.05])
    scores = posteriors(PRIOR, shares, 400, seed=5)
    streams = ["small"] * 30 + ["airline_tweets"] * 170 + ["big"] * 200
    adapted, report = adapt_streams(scores, streams, settings(learned=("airline_tweets",)))
    assert report["small"].reason == "fewer than 50 items" and report["small"].mix is None
    assert report["airline_tweets"].reason == "the model trained on this source"
    assert np.array_equal(adapted[:200], scores[:200])
    assert report["big"].reason == "adapted"
    assert not np.allclose(adapted[200:], scores[200:])
    # Each stream on its own: the big stream comes out the same without the others.
    alone, _ = adapt_streams(scores[200:], ["big"] * 200, settings(learned=("airline_tweets",)))
    assert np.array_equal(alone, adapted[200:])
    # History counts toward the minimum, and is not returned.
    history = {"small": posteriors(PRIOR, shares, 100, seed=6)}
    with_history, report = adapt_streams(scores[:30], ["small"] * 30, settings(), history)
    assert report["small"].items == 130 and report["small"].mix is not None
    assert with_history.shape == (30, 5) and not np.allclose(with_history, scores[:30])
    # No adaptation in the policy: scores come back unchanged.
    same, report = adapt_streams(scores, streams, None)
    assert np.array_equal(same, scores) and report == {}
    lines = describe_streams(adapt_streams(scores, streams, settings())[1])
    assert lines[0].startswith("source airline_tweets: 170 items, scores adapted to its mix (kudos")
    assert lines[2] == "source small: 30 items, not adapted (fewer than 50 items)"
    # Large counts are grouped, as the rest of the progress output writes them.
    (line,) = describe_streams({"export": StreamMix(1_234_567, None, "the model trained on this")})
    assert line == "source export: 1,234,567 items, not adapted (the model trained on this)"


def test_stream_names() -> None:
    assert stream_name("../shared/datasets/train/airline_tweets.csv") == "airline_tweets"
    assert stream_name("starter/kudos.jsonl") == "kudos"
    assert stream_name("corrections/acme-forum") == "acme-forum"
    # A source's own name is kept whole, dots and slashes included.
    assert stream_name("acme.app-store") == "acme.app-store"
    assert stream_name("reddit/r/keyboards") == "reddit/r/keyboards"


def test_policy_round_trip_and_older_policies() -> None:
    policy = Policy(adaptation=settings(learned=("kudos", "airline_tweets")))
    data = policy.to_json()
    assert data["adaptation"]["learned"] == ["airline_tweets", "kudos"]
    back = Policy.from_json(data)
    assert back.adaptation is not None
    assert back.adaptation.learned == ("airline_tweets", "kudos")
    assert back.adaptation.protect == ("service_issue", "sales_lead")
    assert back.to_json() == data
    # A policy without it serialises as before (so its model's version does not change).
    assert "adaptation" not in Policy().to_json()
    assert Policy.from_json(Policy().to_json()).adaptation is None


def test_a_config_that_leaves_a_setting_out_gets_the_dataclass_default() -> None:
    from classifiers.calibration import adaptation_for
    from classifiers.data import Example

    rows = [Example(text=f"t{i}", label=LABELS[i % 5], origin="a/kudos.jsonl") for i in range(10)]
    targets = np.eye(len(LABELS))[[i % 5 for i in range(10)]]
    plain = Adaptation(prior={})
    got = adaptation_for({"adapt_damping": 0.3}, rows, targets)
    assert got is not None
    assert (got.protect, got.min_items) == (plain.protect, plain.min_items)
    assert got.learned == ("kudos",) and got.prior == dict.fromkeys(LABELS, 0.2)
    given = adaptation_for(
        {"adapt_damping": 0.5, "adapt_min_items": 20, "adapt_protect": []}, rows, targets
    )
    assert given is not None and (given.damping, given.min_items, given.protect) == (0.5, 20, ())
    assert adaptation_for({"adapt_damping": 0}, rows, targets) is None
