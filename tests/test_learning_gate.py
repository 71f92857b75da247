"""The gate's decision rules on hand-made scores (no training): each check can fail alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from classifiers.gate import CORRECTIONS_SLICE, GatePolicy, SliceScore, judge, sign_test


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


def _slice(macro: float, per_label: dict[str, tuple[float, int]], gold: list[float]) -> SliceScore:
    metrics: dict[str, Any] = {
        "n": len(gold),
        "macro_f1": macro,
        "accuracy": macro,
        "per_label": {lab: {"f1": f1, "support": n} for lab, (f1, n) in per_label.items()},
    }
    return SliceScore(metrics, np.array(gold))


def _general(macro: float) -> SliceScore:
    return _slice(macro, {}, [])


LABELS_OK = {"kudos": (0.80, 20), "service_issue": (0.70, 20)}
BETTER = [0.9] * 30 + [0.4] * 5  # challenger's gold-label scores: higher on 30 of 35 rows
CHAMP = [0.5] * 35


def _decide(**kw: Any) -> tuple[bool, str, list[Any]]:
    champion = {CORRECTIONS_SLICE: _slice(0.75, LABELS_OK, CHAMP), "general": _general(0.85)}
    challenger = {
        CORRECTIONS_SLICE: kw.get("corrections", _slice(0.85, LABELS_OK, BETTER)),
        "general": kw.get("general", _general(0.84)),
    }
    return judge(
        champion, challenger, [CORRECTIONS_SLICE, "general"], kw.get("policy", GatePolicy())
    )


def test_sign_test() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(1 / 32)
    assert sign_test(3, 3) == pytest.approx(0.65625)
    assert sign_test(30, 5) < 1e-4


def test_a_better_challenger_passes_every_check() -> None:
    promote, reason, checks = _decide()
    assert promote, reason
    assert reason.startswith("promoted: better on 30 of 35 held-out corrections, worse on 5")
    assert [c.name for c in checks] == [
        "better on the correction slice",
        "no label drops on the correction slice",
        "no drop on general",
        "macro-F1 overall",
    ]


def test_no_evidence_on_the_correction_slice_keeps_the_champion() -> None:
    promote, reason, _ = _decide(
        corrections=_slice(0.85, LABELS_OK, [0.9] * 4 + [0.4] * 2 + [0.5] * 29)
    )
    assert not promote
    assert "higher score on 4 of 35 held-out corrections, the champion on 2" in reason


def test_one_label_dropping_keeps_the_champion_unless_it_is_one_rows_worth() -> None:
    dropped = {"kudos": (0.70, 20), "service_issue": (0.90, 20)}
    promote, reason, _ = _decide(corrections=_slice(0.85, dropped, BETTER))
    assert not promote and "kudos 0.800 -> 0.700 (n=20)" in reason
    # The same drop on a label with 8 rows is within one row's worth (1/8): noise, allowed.
    small = {"kudos": (0.80, 8), "service_issue": (0.70, 20)}
    champion = {CORRECTIONS_SLICE: _slice(0.75, small, CHAMP), "general": _general(0.85)}
    challenger = {
        CORRECTIONS_SLICE: _slice(0.85, {"kudos": (0.70, 8), "service_issue": (0.9, 20)}, BETTER),
        "general": _general(0.85),
    }
    assert judge(champion, challenger, [CORRECTIONS_SLICE, "general"], GatePolicy())[0]
    # Below min_label_support a label is reported, not judged.
    promote, reason, checks = judge(
        champion, challenger, [CORRECTIONS_SLICE, "general"], GatePolicy(min_label_support=10)
    )
    assert promote and "too few rows to hold to it: kudos (n=8)" in checks[1].detail


def test_unlearning_the_general_slice_keeps_the_champion() -> None:
    promote, reason, _ = _decide(general=_general(0.78))
    assert not promote
    assert "macro-F1 0.850 -> 0.780 (-0.070; tolerance 0.05)" in reason
    assert _decide(
        general=_general(0.78), policy=GatePolicy(slice_tolerance=0.1, overall_tolerance=0.1)
    )[0]
