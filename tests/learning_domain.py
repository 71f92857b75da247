"""A niche domain for the learning-loop tests: a custom mechanical-keyboard shop's community.

Written for this project (templates and slang of our own). The hobby talks in its own words:
group buys ("GB"), interest checks ("IC"), extras, restocks, "thocc", "endgame", chatter,
rattly stabs, bricked firmware, WTB/WTS. The shipped model has seen none of them, so it handles
these posts poorly, which is what the retrain loop is for.
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta
from pathlib import Path

from classifiers.corrections import Correction

SHOP = ["@clackworks", "clackworks", "Clackworks", "cw"]
BOARDS = ["Mako65", "Tenkey Lite", "Otter TKL", "Pike75", "Heron 60", "Quill 1800", "Wren40"]
SWITCHES = ["Gloss linears", "Pebble tactiles", "Hush silents", "Marsh linears", "Kiln clickies"]
CAPS = ["Dusk PBT set", "Lagoon set", "Ember cherry set", "Fogline keycaps", "Moss MT3 set"]
COLORS = ["e-white", "navy", "burgundy", "olive", "anodized black", "lilac", "raw brass"]
COUNTRIES = ["Canada", "the EU", "Australia", "Brazil", "Japan", "the UK"]
CITIES = ["Leeds", "Austin", "Lyon", "Osaka", "Denver"]

TEMPLATES: dict[str, list[str]] = {
    "sales_lead": [
        "in for {n} if {color} hits MOQ",
        "extras?? {caps}",
        "any {board} extras left, {countries} here",
        "WTB {board} {color}, paypal ready",
        "{board} GB link?",
        "ISO {caps} sealed, budget flexible",
        "restock ETA on {switches}? need {n}",
        "{board} or {board2} for a first custom, ordering friday",
        "slot still open for a {board} build service?",
        "hmu w/ price on {n}x {switches} lubed",
        "joining {board} R2 for sure, when does it open",
        "eyeing the {caps} base kit + novelties, total?",
        "is the {board} GB still open? want one in {color}",
        "{shop} preorders for the next {switches} batch?",
    ],
    "service_issue": [
        "GB update when?? {caps} is {n} months past ETA",
        "{switches} chattering on {n} keys out of the bag",
        "stabs rattly af on my {board}",
        "{board} ghosting on the top row",
        "{board} won't enter bootloader, reset btn dead",
        "got {color2} instead of {color}, {shop} pls fix",
        "{board} plate arrived warped",
        "knob skips on {board}, already reflashed twice",
        "{board} PCB DOA",
        "double charged on the {board} GB",
        "tracking stuck {n} days, {shop}??",
        "{switches} stems wobbly + scratchy, batch issue?",
        "hotswap socket popped off the {board}",
        "usb-c on the {board} only connects at an angle",
    ],
    "feature_request": [
        "+1 for a south-facing {board} rev",
        "IC for a split {board} when",
        "{color} colorway R2 pls",
        "ISO layout for the {board} pls",
        "need VIA for the {board} knob",
        "{board} rev2 w/ encoder slot pls",
        "gasket option for the {board}?? tray mount is stiff",
        "{shop} do a 40s kit for {caps}",
        "silent {switches} variant would go hard",
        "foam kit as an add-on pls",
        "let the knob remap per layer in fw",
        "{caps} ergo kit when",
        "brass weight in {color} as a separate option pls",
        "wish the {board} had a flex cut plate",
    ],
    "kudos": [
        "{board} thocc is unreal",
        "endgame: {board} + {switches}",
        "{switches} creamy af",
        "{board} came in mint, W {shop}",
        "{caps} on the {board} = chefs kiss",
        "stock stabs on the {board} actually good, rare W",
        "{switches} after lube = butter",
        "{shop} swapped my DOA PCB in 2 days, goated",
        "{board} sound test melted my brain",
        "{color} {board} is a 10/10 irl",
        "{n} hours on the {board} today, no regrets",
        "{caps} legends crisp af, worth the wait",
        "marbly clacks on the {board}, obsessed",
        "{shop} QC on the {board} is insane, zero flaws",
    ],
    "other": [
        "FS: {board} {color}, local only",
        "FT my {caps} for {switches}",
        "desk setup pic, {board} + {color} mat",
        "{city} meetup next sat?",
        "stream tonight, building a {board}",
        "sound test vid up: {switches} vs {switches2}",
        "linears > tactiles, fight me",
        "cat vs {board}, round {n}",
        "giveaway: tag 3 to win {caps}",
        "mod log #{n}: tape mod on the {board}",
        "kbd tier list dropping fri",
        "found {n} crumbs cleaning the {board} lmao",
        "what are we typing on today",
        "{city} meetup had {n} boards, wild",
    ],
}

DECOR = ["", "", "", "ngl ", "lol ", "ok so ", "psa: ", "hey {shop} "]
TAILS = ["", "", "", " 🙏", " !!", " lol", " tbh", " 😤", " ⌨️", " fr"]


def _fill(template: str, rng: random.Random) -> str:
    board, board2 = rng.sample(BOARDS, 2)
    switches, switches2 = rng.sample(SWITCHES, 2)
    color, color2 = rng.sample(COLORS, 2)
    return template.format(
        shop=rng.choice(SHOP),
        board=board,
        board2=board2,
        switches=switches,
        switches2=switches2,
        caps=rng.choice(CAPS),
        color=color,
        color2=color2,
        countries=rng.choice(COUNTRIES),
        city=rng.choice(CITIES),
        n=rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 70, 90]),
    )


def domain_rows(n: int, seed: int = 0, source: str = "keyboard_forum") -> list[dict[str, str]]:
    """``n`` labelled posts of the domain, distinct ignoring case and spacing, labels balanced."""
    rng = random.Random(seed)
    labels = sorted(TEMPLATES)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        body = _fill(rng.choice(TEMPLATES[label]), rng)
        text = _fill(rng.choice(DECOR), rng) + body + rng.choice(TAILS)
        if rng.random() < 0.2:
            text = text.lower()
        key = " ".join(text.casefold().split())  # distinct as corrections count texts
        if key in seen:
            continue
        seen.add(key)
        rows.append({"text": text, "label": label, "source": source})
    return rows


def as_corrections(
    rows: list[dict[str, str]],
    when: datetime,
    *,
    kind: str = "file",
    provenance: str = "test.csv",
    step: timedelta = timedelta(0),
) -> list[Correction]:
    """The rows as corrections made at ``when`` (each ``step`` after the previous one)."""
    return [
        Correction(
            text=r["text"],
            label=r["label"],
            source=r["source"],
            provenance_kind=kind,
            provenance=provenance,
            created_at=when + i * step,
            line=i + 2 if kind == "file" else None,
        )
        for i, r in enumerate(rows)
    ]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    """Write rows as a corrections CSV (``text``, ``label``, ``source``); return the path."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return path
