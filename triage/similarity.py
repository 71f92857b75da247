"""Near-duplicate detection for feedback texts: token-set Jaccard over normalised text, pure Python.

Feature requests are short and phrased in endless ways ("please add dark mode", "dark mode when?").
The words that carry the request ("dark", "mode") survive normalisation; the phrasing around them
("please", "would love", "add") does not, so the Jaccard index of what is left is a cheap and
explainable measure of "the same ask". No model and no index: groups per tracker are few (hundreds),
and comparing one new mention with each group's signature is microseconds of set arithmetic.
"""

from __future__ import annotations

import re

from triage.normalize import normalize

# Two feature requests whose content words overlap at least this much are the same request.
FEATURE_THRESHOLD = 0.4
# Complaints from the same author within the join window need less overlap: the author is the
# strongest signal already, and people describe one problem with different words each time.
COMPLAINT_THRESHOLD = 0.2

_WORD = re.compile(r"[a-z0-9]+")
# Function words plus the phrasing of asking and complaining, which says nothing about *what*.
_STOP_WORDS = """
    a about add added adding again all also am an and any anyone app are as ask asking at be been
    being but by can chance could did do does doing dont every for from get gets getting give got
    great had has have having
    he her hi hey him his how i if im in into is it its ive just know let like love lot make me
    mine more much my need needs no not now of on one option or our ours out please pls really
    request same she should so some still support that the their them then there these they this
    those time times to too try trying up us use using very want wanted wants was we were what when
    where which while who
    why will wish with would yes yet you your feature features thanks thank hello guys team
    urllink emailaddr user
"""
_STOP = frozenset(_STOP_WORDS.split())
_SUFFIXES = ("ing", "ed", "es", "s")
# Two-word spellings of one concept, joined so "log in" and "login" count as the same word.
_COMPOUNDS = re.compile(r"\b(log|sign)(?:ged|ging)? (in|on|out)\b")


def _stem(word: str) -> str:
    # Deliberately crude: "crashes"/"crashing"/"crashed" -> "crash" is all the grouping needs.
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def signature(text: str) -> frozenset[str]:
    """Return the content-word stems of a text (its 1-token shingles after normalisation).

    Example:
        >>> sorted(signature("Please add DARK mode!! https://x.io"))
        ['dark', 'mode']
    """
    words = _WORD.findall(_COMPOUNDS.sub(r"\1\2", normalize(text).lower()))
    return frozenset(_stem(w) for w in words if w not in _STOP and len(w) > 1)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """The Jaccard index of two signatures (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def best_match(
    sig: frozenset[str], candidates: list[tuple[str, frozenset[str]]], threshold: float
) -> tuple[str | None, float]:
    """Return the id of the most similar candidate at or above ``threshold`` and its score."""
    best: tuple[str | None, float] = (None, 0.0)
    for cid, other in candidates:
        score = jaccard(sig, other)
        if score >= threshold and score > best[1]:
            best = (cid, score)
    return best


class SignatureIndex:
    """Signatures with an inverted index, so a new text is compared only with those sharing a word.

    A backfill can fold tens of thousands of requests; comparing each with every earlier one would
    be quadratic, while most pairs share no content word at all and score 0 anyway.
    """

    def __init__(self, entries: list[tuple[str, frozenset[str]]] | None = None) -> None:
        """Index ``(id, signature)`` pairs."""
        self._entries: list[tuple[str, frozenset[str]]] = []
        self._by_word: dict[str, list[int]] = {}
        for entry_id, sig in entries or []:
            self.add(entry_id, sig)

    def add(self, entry_id: str, sig: frozenset[str]) -> None:
        """Index one more signature under ``entry_id`` (several may share an id: a group)."""
        pos = len(self._entries)
        self._entries.append((entry_id, sig))
        for word in sig:
            self._by_word.setdefault(word, []).append(pos)

    def best(self, sig: frozenset[str], threshold: float) -> tuple[str | None, float]:
        """The id of the most similar indexed signature at or above ``threshold``, and its score."""
        positions = {p for word in sig for p in self._by_word.get(word, ())}
        return best_match(sig, [self._entries[p] for p in sorted(positions)], threshold)
