"""What one training run sees: the starter corpus weighted, mixed-intent examples, balanced groups."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from spacy.training import Example as SpacyExample

from classifiers.data import Example, from_starter


def starter_weighted(data: Sequence[Example], settings: dict[str, Any]) -> list[Example]:
    """The training examples, the starter corpus repeated ``starter_weight`` times.

    Public or customer data can outnumber the starter corpus many times over and teach none of
    its patterns (consumer purchase intent, praise-then-problem); repeating the starter examples
    keeps them from being drowned out. With the starter corpus alone it changes nothing.
    """
    weight = int(settings.get("starter_weight", 1))
    starter = [ex for ex in data if from_starter(ex)]
    if weight <= 1 or len(starter) == len(data):
        return list(data)
    return list(data) + starter * (weight - 1)


def mixed_examples(data: Sequence[Example], count: int, seed: int) -> list[Example]:
    """Synthetic praise-then-problem (and praise-then-wish) examples joined from real ones.

    With a sigmoid per label, every pure-praise example teaches the model that "love", "great"
    and "best" count *against* a service issue, so "Love this app but it crashes" loses its
    service_issue score to the praise. Joining a kudos text to a service-issue (or feature
    request) text, labelled with both, teaches that praise and a problem add up. Drawn from the
    training data only (never from a fold's left-out rows), seeded.
    """
    if count <= 0:
        return []
    rng = random.Random(seed)
    praise = [ex for ex in data if ex.labels == ["kudos"]]
    problems = [ex for ex in data if ex.label in ("service_issue", "feature_request")]
    if not praise or not problems:
        return []
    out = []
    joiners = [" ", " but ", ". ", "... ", " however "]
    for _ in range(count):
        a, b = rng.choice(praise), rng.choice(problems)
        if rng.random() < 0.75:
            text = a.text.rstrip() + rng.choice(joiners) + b.text.strip()
        else:  # the problem first, the praise after ("crashes a lot, otherwise love it")
            text = b.text.rstrip() + " " + a.text.strip()
        out.append(
            Example(
                text=text,
                label=b.label,
                labels=[*b.labels, "kudos"] if "kudos" not in b.labels else list(b.labels),
                origin=b.origin,
                group=b.group,
            )
        )
    return out


def balance_group(example: Example) -> str:
    """The group whose share of every epoch an example draws from: the starter corpus, or its file.

    The group is the file (``origin``), not the cross-source family: a user's JSONL file whose
    rows name their ``source_type`` is one family per source type for the folds, but split that
    way for balancing each handful of rows of a rare source type would get a whole file's share
    of every epoch and be repeated hundreds of times. Reviewer corrections are one file per
    source (``corrections/<source>``).
    """
    return "starter" if from_starter(example) else example.origin or example.group


def balanced_epoch(
    examples: list[SpacyExample], groups: list[str], shares: dict[str, float], rng: random.Random
) -> list[SpacyExample]:
    """One epoch's examples with each data group carrying its share, whatever its size.

    Public datasets are each one domain with its own label mix (airline tweets: complaints and
    thanks; insurance chat: quotes and claims). Trained on as they come, the largest file teaches
    its domain's words as label cues and a new source pays for it; and none of them has the
    starter corpus's consumer purchase intent or praise-then-problem posts. So each group gets the
    same number of examples per epoch (the starter corpus ``starter_weight`` times as many): large
    files a fresh random part each epoch, small ones all their rows, repeated as needed.
    """
    pools: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        pools.setdefault(group, []).append(i)
    unit = len(examples) / sum(shares[g] for g in pools)
    chosen: list[int] = []
    for group in sorted(pools):
        pool = pools[group]
        whole, part = divmod(round(unit * shares[group]), len(pool))
        chosen += pool * whole + rng.sample(pool, part)
    return [examples[i] for i in chosen]
