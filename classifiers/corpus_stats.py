"""Statistics of a labelled corpus (per label, source type, length) and a near-duplicate report.

Run ``python -m classifiers.corpus_stats [PATH ...]`` (default: the shipped starter corpus).
Near-duplicates are pairs whose word-shingle Jaccard similarity reaches the threshold; they are
found with MinHash-style banding so the check stays fast on tens of thousands of texts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from classifiers.data import STARTER_DIR

_WORD = re.compile(r"\w+")
# Emoji and punctuation count as tokens for similarity: "👍" and "..." are different messages.
_TOKEN = re.compile(r"\w+|[^\w\s]")
BANDS = 16
ROWS = 4  # 64 hash functions: pairs at Jaccard 0.8 collide in some band with probability > 0.99


def _rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for root in paths:
        files = sorted(root.rglob("*.jsonl")) if root.is_dir() else [root]
        for path in files:
            with path.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        row["_where"] = f"{path.name}:{n}"
                        rows.append(row)
    return rows


def shingles(text: str, k: int = 3) -> set[str]:
    """Word k-shingles of the lower-cased text (the whole text when it is shorter than k words)."""
    words = _TOKEN.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two sets."""
    return len(a & b) / len(a | b) if a or b else 1.0


def _signature(sh: set[str]) -> list[int]:
    sig = []
    for seed in range(BANDS * ROWS):
        salt = seed.to_bytes(2, "little")
        sig.append(
            min(
                int.from_bytes(
                    hashlib.blake2b(s.encode(), digest_size=8, salt=salt).digest(), "little"
                )
                for s in sh
            )
        )
    return sig


def near_duplicates(texts: Sequence[str], threshold: float = 0.8) -> list[tuple[int, int, float]]:
    """Return ``(i, j, similarity)`` for text pairs at or above ``threshold`` (shingle Jaccard)."""
    sets = [shingles(t) for t in texts]
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, sh in enumerate(sets):
        sig = _signature(sh)
        for band in range(BANDS):
            buckets[(band, tuple(sig[band * ROWS : (band + 1) * ROWS]))].append(i)
    candidates: set[tuple[int, int]] = set()
    for members in buckets.values():
        if 1 < len(members) <= 50:
            candidates.update(combinations(sorted(members), 2))
    out = []
    for i, j in sorted(candidates):
        sim = jaccard(sets[i], sets[j])
        if sim >= threshold:
            out.append((i, j, round(sim, 3)))
    return out


def report(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Compute the statistics and near-duplicate pairs of a corpus."""
    lengths = [len(_WORD.findall(r["text"])) for r in rows]
    buckets = Counter(
        "short (<12 words)" if n < 12 else "medium (12-40)" if n <= 40 else "long (>40)"
        for n in lengths
    )
    mixed = Counter(r["label"] for r in rows if len(r.get("labels") or []) > 1)
    dups = near_duplicates([r["text"] for r in rows], threshold)
    return {
        "examples": len(rows),
        "by_label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "mixed_intent_by_label": dict(sorted(mixed.items())),
        "by_source_type": dict(Counter(r.get("source_type", "?") for r in rows).most_common()),
        "length_words": {
            "mean": round(sum(lengths) / max(1, len(lengths)), 1),
            "max": max(lengths, default=0),
            **dict(sorted(buckets.items())),
        },
        "near_duplicates": [
            {
                "a": rows[i]["_where"],
                "b": rows[j]["_where"],
                "similarity": s,
                "text_a": rows[i]["text"][:120],
                "text_b": rows[j]["text"][:120],
            }
            for i, j, s in dups
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the corpus report; exit 1 when near-duplicates are found (useful in CI)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, default=[STARTER_DIR])
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.8,
        help="Jaccard similarity that counts as near-duplicate",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = report(_rows(args.paths), args.threshold)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(f"{result['examples']} examples")
        for key in ("by_label", "mixed_intent_by_label", "by_source_type", "length_words"):
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in result[key].items()))
        print(f"near-duplicates (Jaccard >= {args.threshold}): {len(result['near_duplicates'])}")
        for d in result["near_duplicates"][:50]:
            print(
                f"  {d['similarity']:.2f}  {d['a']} ~ {d['b']}: {d['text_a']!r} / {d['text_b']!r}"
            )
    return 1 if result["near_duplicates"] else 0


if __name__ == "__main__":
    sys.exit(main())
