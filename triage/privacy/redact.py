"""Redaction engine: find personal data in text and replace it with typed placeholders.

Built-in kinds and their placeholders:

========== =============== =====================================================================
kind       placeholder     what is detected
========== =============== =====================================================================
email      ``[email]``     addresses, also "name [at] domain [dot] com" spellings
phone      ``[phone]``     +CC / 00CC international and national formats with separators
card       ``[card]``      13-19 digit payment card numbers, spaced or dashed, Luhn-valid
iban       ``[iban]``      IBANs, compact or grouped, country length and mod-97 checked
address    ``[address]``   street addresses (number + name + street type, unit, postcode/city)
ip         ``[ip]``        IPv4 and IPv6 addresses that :mod:`ipaddress` accepts
========== =============== =====================================================================

Order and account numbers come from configuration as named patterns
(``CustomPattern("order", r"ORD-\\d{6}")``); each becomes its own kind with placeholder
``[order]``.

Public API (all pure functions of their input; safe to call from many threads)::

    r = Redactor(custom=[CustomPattern("order", r"\\bORD-\\d{6}\\b")])
    r.find(text) -> list[Span]                      # what was found, kept or not
    r.redact(text, keep=("email",)) -> str          # placeholders except for kept kinds
    r.redact_many(texts, keep=...) -> list[str]     # batch form, same result per text
    r.storable(text) -> str / r.storable_many(...)  # the form the store keeps: cards redacted
    redact(text, keep=...), storable(text)          # module-level, built-in kinds only

``keep`` lists the kinds a destination may see in clear (support's helpdesk may keep ``email``);
``card`` can never be kept: asking for it raises :class:`ValueError`, because card numbers must
never leave the store nor be stored in clear.

Overlaps are resolved before anything is replaced, with all kinds detected even when some are
kept, so a kept e-mail address is never half-replaced by a phone rule matching its digits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from triage.privacy import detectors

BUILTIN_KINDS: tuple[str, ...] = ("email", "iban", "card", "ip", "phone", "address")
"""Built-in kinds, in the order overlaps are settled (earlier wins)."""

NEVER_KEPT: frozenset[str] = frozenset({"card"})
"""Kinds that no destination profile may keep in clear."""

_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": detectors.find_emails,
    "iban": detectors.find_ibans,
    "card": detectors.find_cards,
    "ip": detectors.find_ips,
    "phone": detectors.find_phones,
    "address": detectors.find_addresses,
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class Span:
    """One piece of personal data found in a text: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: str

    @property
    def placeholder(self) -> str:
        """The typed placeholder that replaces this span, e.g. ``[email]``."""
        return f"[{self.kind}]"


@dataclass(frozen=True, slots=True)
class CustomPattern:
    """An order, account or other identifier format from the configuration.

    Args:
        name: The kind and placeholder name (``order`` → ``[order]``): lower case letters,
            digits and underscores, not one of the built-in kinds.
        pattern: A Python regular expression; every match is redacted.
        ignore_case: Match regardless of letter case.
    """

    name: str
    pattern: str
    ignore_case: bool = False

    def compile(self) -> re.Pattern[str]:
        """Compile the pattern, with a clear error naming the entry when it is invalid."""
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"redaction pattern name {self.name!r}: use lower case letters, digits and _"
            )
        if self.name in BUILTIN_KINDS:
            raise ValueError(f"redaction pattern name {self.name!r} is a built-in kind")
        try:
            compiled = re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)
        except re.error as exc:
            raise ValueError(f"redaction pattern {self.name!r}: invalid regex: {exc}") from exc
        if compiled.match(""):
            raise ValueError(f"redaction pattern {self.name!r} matches the empty string")
        return compiled


def _as_pattern(entry: CustomPattern | Mapping[str, object]) -> CustomPattern:
    if isinstance(entry, CustomPattern):
        return entry
    unknown = set(entry) - {"name", "pattern", "ignore_case"}
    if unknown or "name" not in entry or "pattern" not in entry:
        raise ValueError(
            f"redaction pattern {dict(entry)!r}: expected keys name, pattern (and ignore_case)"
        )
    return CustomPattern(
        name=str(entry["name"]),
        pattern=str(entry["pattern"]),
        ignore_case=bool(entry.get("ignore_case", False)),
    )


class Redactor:
    """Finds and replaces personal data; holds the compiled custom patterns.

    Args:
        custom: Order/account formats from the configuration, as :class:`CustomPattern` or
            mappings with ``name`` and ``pattern`` (and optional ``ignore_case``).

    Raises:
        ValueError: A custom pattern is invalid, reuses a built-in name or repeats a name.
    """

    def __init__(self, custom: Iterable[CustomPattern | Mapping[str, object]] = ()) -> None:
        self._custom: list[tuple[str, re.Pattern[str]]] = []
        for entry in custom:
            pattern = _as_pattern(entry)
            if any(name == pattern.name for name, _ in self._custom):
                raise ValueError(f"redaction pattern name {pattern.name!r} is given twice")
            self._custom.append((pattern.name, pattern.compile()))
        # Configured formats are the most specific thing we know: they settle overlaps first
        # after e-mail, IBAN and card (an order number never looks like those).
        self._order: tuple[str, ...] = (
            "email",
            "iban",
            "card",
            *(name for name, _ in self._custom),
            "ip",
            "phone",
            "address",
        )
        self._rank = {kind: i for i, kind in enumerate(self._order)}

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind this redactor detects: built-in ones plus configured names."""
        return self._order

    def check_keep(self, keep: Collection[str]) -> frozenset[str]:
        """Validate a destination's kept kinds and return them as a set.

        Raises:
            ValueError: ``keep`` names an unknown kind or a kind that may never be kept.
        """
        kept = frozenset(keep)
        unknown = kept - set(self._order)
        if unknown:
            raise ValueError(
                f"unknown redaction kind(s) {sorted(unknown)}; known: {', '.join(self._order)}"
            )
        forbidden = kept & NEVER_KEPT
        if forbidden:
            raise ValueError(f"{sorted(forbidden)} may never be kept in clear")
        return kept

    def find(self, text: str) -> list[Span]:
        """Return the non-overlapping personal-data spans of ``text``, in text order."""
        candidates: list[Span] = []
        has_digit = any(map(str.isdigit, text))
        for kind in BUILTIN_KINDS:
            # Every built-in kind except e-mail needs a digit (IPv6 "fe80::" has one too);
            # most feedback has none, and this skips five scans for it.
            if kind != "email" and kind != "ip" and not has_digit:
                continue
            for start, end in _FINDERS[kind](text):
                candidates.append(Span(start, end, kind))
        for name, compiled in self._custom:
            for m in compiled.finditer(text):
                if m.end() > m.start():
                    candidates.append(Span(m.start(), m.end(), name))
        if not candidates:
            return []
        return _resolve(candidates, self._rank)

    def find_many(self, texts: Iterable[str]) -> list[list[Span]]:
        """Batch form of :meth:`find`."""
        return [self.find(text) for text in texts]

    def redact(self, text: str, keep: Collection[str] = ()) -> str:
        """Replace personal data with typed placeholders, except the kinds in ``keep``.

        Args:
            text: Any text; it is not modified in place.
            keep: Kinds the destination may see in clear (never ``card``).

        Returns:
            The text with each redacted span replaced by ``[kind]``.
        """
        kept = self.check_keep(keep) if keep else frozenset()
        return _apply(text, self.find(text), kept)

    def redact_many(self, texts: Iterable[str], keep: Collection[str] = ()) -> list[str]:
        """Batch form of :meth:`redact`: one result per input text, in order."""
        kept = self.check_keep(keep) if keep else frozenset()
        return [_apply(text, self.find(text), kept) for text in texts]

    def storable(self, text: str) -> str:
        """The form of ``text`` that may be stored: card numbers replaced, the rest untouched.

        Overlaps are settled with every kind, so a digit run inside an e-mail address or an
        IBAN is not mistaken for a card.
        """
        # Only a long digit run can be a card; finding one is far cheaper than running every
        # detector, which ingest would otherwise do for nearly every raw payload (ids, counts
        # and timestamps add up to 13 digits in almost all of them).
        if not detectors.may_hold_card(text):
            return text
        spans = [s for s in self.find(text) if s.kind in NEVER_KEPT]
        return _apply(text, spans, frozenset())

    def storable_many(self, texts: Iterable[str]) -> list[str]:
        """Batch form of :meth:`storable`."""
        return [self.storable(text) for text in texts]


def _resolve(candidates: list[Span], rank: Mapping[str, int]) -> list[Span]:
    # Settle overlaps: higher-ranked kinds first, then longer spans; a span that overlaps one
    # already taken is dropped whole (never partly redacted).
    chosen: list[Span] = []
    for span in sorted(candidates, key=lambda s: (rank[s.kind], s.start - s.end, s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    chosen.sort(key=lambda s: s.start)
    return chosen


def _apply(text: str, spans: Sequence[Span], kept: frozenset[str]) -> str:
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for span in spans:
        if span.kind in kept:
            continue
        parts.append(text[pos : span.start])
        parts.append(span.placeholder)
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


_DEFAULT = Redactor()


def redact(text: str, keep: Collection[str] = ()) -> str:
    """Redact the built-in kinds of ``text`` (no configured order formats); see :class:`Redactor`."""
    return _DEFAULT.redact(text, keep)


def storable(text: str) -> str:
    """Replace card numbers in ``text`` with ``[card]``; see :meth:`Redactor.storable`."""
    return _DEFAULT.storable(text)
