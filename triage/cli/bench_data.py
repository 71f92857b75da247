"""The benchmarks' generated data: N seeded, realistic mentions as file drops, and their configuration.

Shared by ``triage bench`` (:mod:`triage.cli.bench`) and its scale-out runs
(:mod:`triage.cli.bench_scale`).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from classifiers.data import load_starter

SOURCES = {
    # name: (share of mentions, source_type)
    "social": (0.5, "tweet"),
    "reviews": (0.3, "app_review"),
    "forms": (0.2, "web_form"),
}
# The benchmark's Slack destinations: one channel each, named like the destination.
DESTINATIONS = ("review", "support", "sales", "product", "marketing")
HANDLES = ["@nimbus", "@skyjet", "@brightbank", "@getquill", "@oakmobile", "@parcelpal", "@fizzly"]


def _variants(rng: random.Random, text: str) -> str:
    """A small, seeded change so 100,000 mentions are not 4,000 texts repeated verbatim."""
    roll = rng.random()
    if roll < 0.25:
        return f"{rng.choice(HANDLES)} {text}"
    if roll < 0.4:
        return f"{text} https://t.co/{rng.randrange(16**6):06x}"
    if roll < 0.5:
        return f"{text} #{rng.choice(['help', 'fail', 'love', 'ux', 'pricing'])}"
    return text


def generate(folder: Path, n: int, seed: int = 42) -> dict[str, int]:
    """Write ``n`` mentions as JSONL drops, one folder per source; return mentions per source.

    Texts come from the starter corpus (labels in a seeded mix), so lengths and vocabulary are
    those of real posts; ids, authors, timestamps and small variations are generated.
    """
    rng = random.Random(seed)
    corpus = [ex.text for ex in load_starter()]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    counts: dict[str, int] = {}
    remaining = n
    names = list(SOURCES)
    for i, name in enumerate(names):
        share, source_type = SOURCES[name]
        count = remaining if i == len(names) - 1 else int(n * share)
        remaining -= count
        counts[name] = count
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        per_file = 50_000
        for part in range(0, count, per_file):
            with (target / f"part-{part // per_file:04d}.jsonl").open("w", encoding="utf-8") as fh:
                for k in range(part, min(count, part + per_file)):
                    created = start + timedelta(seconds=k * 7 + rng.randrange(7))
                    record = {
                        "id": f"{name}-{k}",
                        "text": _variants(rng, rng.choice(corpus)),
                        "author": f"@user{rng.randrange(50_000)}",
                        "followers": rng.randrange(20_000),
                        "url": f"https://social.example/{name}/{k}",
                        "created_at": created.isoformat().replace("+00:00", "Z"),
                        "channel": source_type,
                    }
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts


def write_config(folder: Path, db: Path) -> Path:
    """A configuration with one file source per generated folder and preview-free Slack outputs."""
    lines = [f"database: {db}", "sources:"]
    for name, (_, source_type) in SOURCES.items():
        lines += [
            f"  - name: {name}",
            "    type: file",
            f"    path: {name}",
            f"    source_type: {source_type}",
        ]
    lines += [
        "departments:",
        "  support: {destination: support, auto_handoff: true}",
        "  sales: {destination: sales}",
        "  product: {destination: product}",
        "  marketing: {destination: marketing}",
        "review: {destination: review}",
        "destinations:",
    ]
    for dest in DESTINATIONS:
        lines.append(f"  {dest}: {{type: slack, channel: '#{dest}', token_env: BENCH_SLACK_TOKEN}}")
    path = folder / "bench.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
