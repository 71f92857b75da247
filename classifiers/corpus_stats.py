"""Statistics of a labelled corpus (per label, source type, length) and a near-duplicate report.

Run ``python -m classifiers.corpus_stats [PATH ...]`` (default: the shipped starter corpus).
Near-duplicates are pairs whose word-shingle Jaccard similarity reaches the threshold; they are
found with MinHash-style banding so the check stays fast on tens of thousands of texts.
``--against PATH`` also lists corpus rows that copy a row of other data (for instance public
datasets whose sentences must not enter the repository), exactly, with prefix filtering.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from classifiers.data import STARTER_DIR, load_examples

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


COPY_THRESHOLD = 0.8
COPY_MIN_WORDS = 6


def copies_of(
    texts: Sequence[str],
    others: Sequence[str],
    threshold: float = COPY_THRESHOLD,
    min_words: int = COPY_MIN_WORDS,
) -> list[tuple[int, int, float]]:
    """Return ``(i, j, similarity)`` where ``texts[i]`` nearly copies ``others[j]``.

    Exact for shingle Jaccard at or above ``threshold`` (prefix filtering: two sets that similar
    must share one of the rarest ``|A| - ceil(threshold * |A|) + 1`` shingles of each). Texts
    under ``min_words`` words are skipped: "ok" or "good job" occur everywhere and copy no one.
    """
    a_sets = [shingles(t) if len(_WORD.findall(t)) >= min_words else set() for t in texts]
    b_sets = [shingles(t) for t in others]
    freq: Counter[str] = Counter()
    for sh in (*a_sets, *b_sets):
        freq.update(sh)

    def prefix(sh: set[str]) -> list[str]:
        ordered = sorted(sh, key=lambda s: (freq[s], s))
        return ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1]

    index: dict[str, list[int]] = defaultdict(list)
    for j, sh in enumerate(b_sets):
        for s in prefix(sh):
            index[s].append(j)
    out = []
    for i, sh in enumerate(a_sets):
        if not sh:
            continue
        seen: set[int] = set()
        for s in prefix(sh):
            for j in index.get(s, ()):
                if j not in seen:
                    seen.add(j)
                    sim = jaccard(sh, b_sets[j])
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
    parser.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        help="data (CSV/JSONL file or folder) that the corpus must not copy; repeatable",
    )
    args = parser.parse_args(argv)
    rows = _rows(args.paths)
    result = report(rows, args.threshold)
    if args.against:
        others = load_examples(args.against)
        result["copies"] = [
            {
                "row": rows[i]["_where"],
                "copies": others[j].origin,
                "similarity": sim,
                "text": rows[i]["text"][:120],
                "other_text": others[j].text[:120],
            }
            for i, j, sim in copies_of([r["text"] for r in rows], [o.text for o in others])
        ]
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
        if "copies" in result:
            print(
                f"rows copying --against data (Jaccard >= {COPY_THRESHOLD}, "
                f"{COPY_MIN_WORDS}+ words): {len(result['copies'])}"
            )
            for c in result["copies"][:50]:
                print(f"  {c['similarity']:.2f}  {c['row']} ~ {c['copies']}: {c['text']!r}")
    return 1 if result["near_duplicates"] or result.get("copies") else 0


if __name__ == "__main__":
    sys.exit(main())
