"""What one training epoch is made of: balance groups, their shares, the mixed-intent rows."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from classifiers.augment import balance_group, balanced_epoch, mixed_examples
from classifiers.corrections import Correction
from classifiers.data import load_examples, load_starter, source_family


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_file_is_one_balance_group_whatever_source_types_its_rows_name(tmp_path: Path) -> None:
    """Families split a file by source type for the folds; the epoch's shares go by file."""
    types = ["tweet", "reddit", "tiktok_comment", "email", "app_review"]
    mine = _jsonl(
        tmp_path / "mine.jsonl",
        [
            {"text": f"row {i}", "label": "kudos", "source_type": types[i % len(types)]}
            for i in range(20)
        ],
    )
    plain = tmp_path / "plain.csv"
    plain.write_text("text,label\nhello,other\nthanks,kudos\n", encoding="utf-8")
    rows = load_examples([mine, plain])
    assert len({source_family(ex) for ex in rows}) == len(types) + 1  # the folds' view
    assert {balance_group(ex) for ex in rows} == {"mine.jsonl", "plain.csv"}
    starter = load_starter()[:50]
    assert {balance_group(ex) for ex in starter} == {"starter"}
    # Mixed praise-then-problem rows draw from the group of the problem they carry.
    mixed = mixed_examples([*starter, *rows], 30, seed=1)
    assert mixed and all(balance_group(ex) in {"starter", "mine.jsonl"} for ex in mixed)


def test_reviewer_corrections_are_one_balance_group_per_source() -> None:
    from datetime import UTC, datetime

    made = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [
        Correction(
            text=f"t{i}",
            label="kudos",
            source=src,
            provenance_kind="file",
            provenance="fixes.csv",
            created_at=made,
        ).to_example()
        for i, src in enumerate(["reddit", "reddit", "appstore"])
    ]
    assert [balance_group(ex) for ex in rows] == [
        "corrections/reddit",
        "corrections/reddit",
        "corrections/appstore",
    ]


def test_each_group_gets_its_share_of_the_epoch_whatever_its_size() -> None:
    groups = ["starter"] * 600 + ["big.csv"] * 900 + ["small.csv"] * 30
    items = list(range(len(groups)))
    shares = {"starter": 2.0, "big.csv": 1.0, "small.csv": 1.0}
    epoch = balanced_epoch(items, groups, shares, random.Random(3))  # type: ignore[arg-type]
    drawn = Counter(groups[i] for i in epoch)
    unit = len(items) / 4  # 1,530 rows, four shares
    assert drawn == {"starter": round(2 * unit), "big.csv": round(unit), "small.csv": round(unit)}
    # A large group gives a fresh sample without repeats; a small one all its rows, repeated.
    big = [i for i in epoch if groups[i] == "big.csv"]
    assert len(set(big)) == len(big)
    small = Counter(i for i in epoch if groups[i] == "small.csv")
    assert set(small) == set(range(1500, 1530)) and max(small.values()) - min(small.values()) <= 1
    # Seeded: the same generator state gives the same epoch, another gives another.
    assert balanced_epoch(items, groups, shares, random.Random(3)) == epoch  # type: ignore[arg-type]
    assert balanced_epoch(items, groups, shares, random.Random(4)) != epoch  # type: ignore[arg-type]
