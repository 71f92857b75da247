"""Adapting a file without a source column row by row (classifiers/neighbours.py, content_mixes).

A file handed to ``triage classify`` may hold several sources. These tests build such a file from
two made-up sources with their own vocabulary and their own label mix (scores from the same
generative model as tests/test_adapt.py), and check that each row adapts to its own source's mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from classifiers import adapt, neighbours
from classifiers.adapt import (
    BY_CONTENT,
    adapt_streams,
    applied_mix,
    content_mixes,
    estimate_mix,
    estimate_mixes,
)
from classifiers.neighbours import nearest, reference_rows, text_features
from tests.test_adapt import PRIOR, posteriors, settings
from triage.models import LABELS

FLIGHTS = ["gate", "boarding", "layover", "luggage", "crew", "runway", "seat", "connection"]
GAMES = ["level", "boss", "quest", "loot", "respawn", "controller", "patch", "multiplayer"]


def source_texts(words: list[str], opener: str, n: int, seed: int) -> list[str]:
    """``n`` short posts of one source: its own opener and three of its own words."""
    rng = np.random.default_rng(seed)
    return [
        f"{opener} the {' and the '.join(rng.choice(words, size=3, replace=False))} #{i % 7}"
        for i in range(n)
    ]


def two_sources(n: int = 300) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A file of two interleaved sources: texts, scores, and which rows are the second source."""
    praise = np.array([0.70, 0.02, 0.10, 0.13, 0.05])  # a game's reviews: mostly kudos
    problems = np.array([0.05, 0.03, 0.02, 0.85, 0.05])  # an airline's mentions: mostly problems
    flights = source_texts(FLIGHTS, "@airline about", n, seed=1)
    games = source_texts(GAMES, "this game has", n, seed=2)
    a, b = posteriors(PRIOR, problems, n, seed=3), posteriors(PRIOR, praise, n, seed=4)
    texts = [t for pair in zip(flights, games, strict=True) for t in pair]
    scores = np.empty((2 * n, len(LABELS)))
    scores[0::2], scores[1::2] = a, b
    second = np.zeros(2 * n, dtype=bool)
    second[1::2] = True
    return texts, scores, second


def test_rows_of_one_source_are_each_others_neighbours() -> None:
    texts, _, second = two_sources(200)
    features = text_features(texts)
    assert features.shape[0] == len(texts) and 1 <= features.shape[1] <= neighbours.COMPONENTS
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0)
    around = nearest(features, features, 50)
    same = (second[around] == second[:, None]).mean()
    assert same > 0.95


def test_each_row_adapts_to_its_own_sources_mix() -> None:
    texts, scores, second = two_sources()
    kudos, service = LABELS.index("kudos"), LABELS.index("service_issue")
    mixes = content_mixes(scores, texts, settings())
    # The game's rows are given far more praise than the airline's, and fewer problems.
    assert mixes[second, kudos].min() > mixes[~second, kudos].max()
    assert np.median(mixes[~second, service]) > np.median(mixes[second, service])
    # Adapted as one stream, every row gets one mix between the two.
    whole, report = adapt_streams(scores, ["export"] * len(texts), settings())
    by_rows, by_report = adapt_streams(
        scores, ["export"] * len(texts), settings(), texts=texts, by_content=True
    )
    assert report["export"].reason == "adapted"
    assert by_report["export"].reason == BY_CONTENT.format(n=neighbours.NEIGHBOURS)
    assert by_report["export"].mix is not None and by_report["export"].items == len(texts)
    # The game's kudos scores rise above what one mix for the whole file gives them.
    assert (by_rows[second, kudos] > whole[second, kudos]).mean() > 0.95


def test_content_adaptation_keeps_the_guards() -> None:
    texts, scores, _ = two_sources()
    adapted, _ = adapt_streams(
        scores, ["export"] * len(texts), settings(), texts=texts, by_content=True
    )
    for label in ("service_issue", "sales_lead"):
        j = LABELS.index(label)
        assert (adapted[:, j] >= scores[:, j] - 1e-12).all()
    few, report = adapt_streams(
        scores[:20], ["small"] * 20, settings(), texts=texts[:20], by_content=True
    )
    assert np.array_equal(few, scores[:20]) and report["small"].mix is None
    learned, report = adapt_streams(
        scores,
        ["airline_tweets"] * len(texts),
        settings(learned=("airline_tweets",)),
        texts=texts,
        by_content=True,
    )
    assert np.array_equal(learned, scores) and report["airline_tweets"].mix is None
    with pytest.raises(ValueError, match="texts"):
        adapt_streams(scores, ["export"] * len(scores), settings(), by_content=True)


def test_a_few_new_rows_find_their_neighbours_in_the_streams_history() -> None:
    """A run brings ten items; the source's earlier items are the rows they are compared with."""
    texts, scores, second = two_sources()
    new, old = slice(0, 10), slice(10, None)

    def run(history_texts: list[str] | None) -> tuple[np.ndarray, Any]:
        return adapt_streams(
            scores[new],
            ["src"] * 10,
            settings(),
            {"src": scores[old]},
            texts=texts[new],
            by_content=True,
            history_texts=None if history_texts is None else {"src": history_texts},
        )

    got, report = run(texts[old])
    # The same as adapting the whole stream row by row, read off for the new rows.
    whole, _ = adapt_streams(scores, ["src"] * len(texts), settings(), texts=texts, by_content=True)
    assert np.allclose(got, whole[new], atol=1e-12)
    assert report["src"].items == len(texts) and report["src"].reason.startswith("each item")
    # Not what one mix for the source gives them: the game's rows get more praise than that.
    one, _ = adapt_streams(scores[new], ["src"] * 10, settings(), {"src": scores[old]})
    kudos = LABELS.index("kudos")
    assert (got[second[new], kudos] > one[second[new], kudos]).all()
    # Ten rows alone are too few: without the history's texts, its scores are not used either.
    alone, said = run(None)
    assert np.array_equal(alone, scores[new]) and said["src"].mix is None
    with pytest.raises(ValueError, match="history texts do not match"):
        run(texts[old][:5])


def test_rows_without_a_shared_term_get_the_whole_streams_mix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts, scores, _ = two_sources(100)
    # No word, word piece, length or style mark of this row occurs in another.
    texts[5] = "ZZQX!"
    mixes = content_mixes(scores, texts, settings())
    assert not text_features(texts)[5].any()
    assert np.allclose(mixes[5], whole_of(scores))
    assert not np.allclose(mixes[4], whole_of(scores))
    # No term kept at all: one mix for everyone, as a plain stream.
    monkeypatch.setattr(neighbours, "MAX_TERMS", 0)
    assert text_features(texts).shape == (len(texts), 0)
    assert np.allclose(content_mixes(scores, texts, settings()), whole_of(scores))


def whole_of(scores: np.ndarray) -> np.ndarray:
    return applied_mix(estimate_mix(scores, PRIOR), settings())


def test_a_long_file_is_compared_against_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    texts, scores, second = two_sources(150)
    monkeypatch.setattr(neighbours, "REFERENCE", 120)
    ref = reference_rows(len(texts))
    assert len(ref) == 120 and (np.diff(ref) > 0).all()
    assert np.array_equal(ref, reference_rows(len(texts)))  # seeded: the same every time
    mixes = content_mixes(scores, texts, settings())
    assert np.array_equal(mixes, content_mixes(scores, texts, settings()))
    kudos = LABELS.index("kudos")
    assert mixes[second, kudos].min() > mixes[~second, kudos].max()
    # A row outside the sample takes the mix of the sampled row it reads most like.
    features = text_features(texts, ref)
    outside = np.setdiff1d(np.arange(len(texts)), ref)
    owner = ref[nearest(features[outside], features[ref], 1)[:, 0]]
    assert np.allclose(mixes[outside], mixes[owner])


@pytest.mark.parametrize("reference", [None, 120])
def test_the_rows_wanted_get_the_mixes_the_whole_file_gives_them(
    monkeypatch: pytest.MonkeyPatch, reference: int | None
) -> None:
    """A run wants mixes for its new rows only; the history is compared, not estimated for."""
    texts, scores, _ = two_sources(150)
    if reference is not None:
        monkeypatch.setattr(neighbours, "REFERENCE", reference)
    everything = content_mixes(scores, texts, settings())
    groups: list[int] = []
    real = adapt.estimate_mixes

    def counted(batch: np.ndarray, *args: Any) -> np.ndarray:
        groups.append(len(batch))
        return real(batch, *args)

    monkeypatch.setattr(adapt, "estimate_mixes", counted)
    for wanted in (1, 10, 37, len(texts)):
        groups.clear()
        got = content_mixes(scores, texts, settings(), wanted)
        assert got.shape == (wanted, len(LABELS))
        assert np.array_equal(got, everything[:wanted])
        # The whole stream's mix, and one neighbourhood per row wanted at most, not one per row
        # of the file.
        assert sum(groups) <= 1 + wanted


def test_many_groups_at_once_match_one_at_a_time() -> None:
    rng = np.random.default_rng(5)
    groups = np.stack(
        [posteriors(PRIOR, rng.dirichlet(np.ones(len(LABELS))), 50, seed=s) for s in range(30)]
    )
    together = estimate_mixes(groups, PRIOR)
    for g in range(len(groups)):
        assert np.array_equal(together[g], estimate_mix(groups[g], PRIOR))
    # And estimate_mix is the EM it always was: stop when no share moves by 1e-6.
    mix = PRIOR.copy()
    for _ in range(200):
        p = np.clip(groups[0], 0, 1)
        up, down = mix / PRIOR, (1 - mix) / (1 - PRIOR)
        new = np.clip((p * up / (p * up + (1 - p) * down)).mean(axis=0), 1e-4, 1 - 1e-4)
        done = np.abs(new - mix).max() < 1e-6
        mix = new
        if done:
            break
    assert np.allclose(together[0], mix, atol=1e-12)


def test_only_the_opening_of_a_long_text_is_read() -> None:
    texts, _, _ = two_sources(60)
    opening = texts[3]
    long = texts.copy()
    # A pasted log after the opening: megabytes that say nothing about the source.
    long[3] = opening + " " + "x" * (neighbours.READ_CHARS - len(opening) - 1) + " log" * 250_000
    cut = texts.copy()
    cut[3] = long[3][: neighbours.READ_CHARS]
    assert np.array_equal(text_features(long), text_features(cut))
