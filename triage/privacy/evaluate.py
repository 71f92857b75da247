"""Measure the redaction engine on a labelled set: recall and precision per kind, look-alikes.

The labelled set is JSON lines, one case per line::

    {"id": "pos-001", "text": "...",
     "pii": [{"start": 10, "end": 30, "kind": "email", "text": "jane@example.com"}],
     "lookalikes": [{"start": 40, "end": 48, "category": "price", "text": "$1,299.99"}]}

``pii`` spans must be redacted as their kind; ``lookalikes`` spans (prices, versions, dates,
model numbers...) must stay untouched. Scoring rules:

* a labelled span is *recalled* when spans predicted with the same kind cover every letter and
  digit of it (a half-redacted phone number still leaks);
* a predicted span is *correct* when it overlaps a labelled span of the same kind; precision is
  correct / predicted, per predicted kind;
* a look-alike is *touched* when any predicted span overlaps it.

Run ``python -m triage.privacy.evaluate`` for the report and a throughput figure;
``--engine spacy`` scores a spaCy ``EntityRuler`` alternative and ``--engine presidio``
Presidio's pattern recognizers on the same set when presidio-analyzer is installed (it is not a
dependency of this project). ``--language`` reports language-detection accuracy and speed on
``tests/data/privacy/language_cases.jsonl`` (JSON lines with ``text`` and ``lang``; ``unknown``
for texts with no language).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from triage.privacy.language import UNKNOWN, LanguageDetector
from triage.privacy.redact import CustomPattern, Redactor, Span

DEFAULT_CASES = Path("tests/data/privacy/pii_cases.jsonl")
DEFAULT_LANGUAGE_CASES = Path("tests/data/privacy/language_cases.jsonl")
# The formats the labelled set's configuration lists (as a deployment's config would).
CASE_PATTERNS = (
    CustomPattern("order", r"\bORD-\d{6}\b"),
    CustomPattern("account", r"\bACCT ?\d{8}\b"),
)

Finder = Callable[[str], Sequence[Span]]


@dataclass(frozen=True, slots=True)
class Case:
    """One labelled text: the spans to redact and the look-alikes to leave alone."""

    id: str
    text: str
    pii: tuple[Span, ...]
    lookalikes: tuple[tuple[int, int, str], ...]


@dataclass(slots=True)
class KindScore:
    """Counts for one kind; ``recall`` and ``precision`` are None when undefined."""

    labelled: int = 0
    recalled: int = 0
    predicted: int = 0
    correct: int = 0

    @property
    def recall(self) -> float | None:
        """Share of labelled spans fully covered by spans of the same kind."""
        return self.recalled / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        """Share of predicted spans that overlap a labelled span of the same kind."""
        return self.correct / self.predicted if self.predicted else None


@dataclass(slots=True)
class Report:
    """The outcome of :func:`score`."""

    kinds: dict[str, KindScore] = field(default_factory=dict)
    lookalikes: Counter[str] = field(default_factory=Counter)
    touched: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)
    false_positives: list[tuple[str, str, str]] = field(default_factory=list)
    touched_examples: list[tuple[str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "kinds": {
                k: {
                    "labelled": s.labelled,
                    "recall": s.recall,
                    "predicted": s.predicted,
                    "precision": s.precision,
                }
                for k, s in sorted(self.kinds.items())
            },
            "lookalikes": {c: [self.touched[c], n] for c, n in sorted(self.lookalikes.items())},
        }


def load_cases(path: Path = DEFAULT_CASES) -> list[Case]:
    """Read a labelled set; every span's ``text`` must equal the text at its offsets.

    Raises:
        ValueError: A span's offsets do not match its text (the file was edited by hand).
    """
    cases: list[Case] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            text = row["text"]
            for span in [*row["pii"], *row["lookalikes"]]:
                if text[span["start"] : span["end"]] != span["text"]:
                    raise ValueError(f"{path}:{lineno}: span {span} does not match the text")
            cases.append(
                Case(
                    id=row["id"],
                    text=text,
                    pii=tuple(Span(s["start"], s["end"], s["kind"]) for s in row["pii"]),
                    lookalikes=tuple(
                        (s["start"], s["end"], s["category"]) for s in row["lookalikes"]
                    ),
                )
            )
    return cases


def _covered(text: str, gold: Span, predicted: Sequence[Span]) -> bool:
    mask = [False] * (gold.end - gold.start)
    for p in predicted:
        if p.kind != gold.kind:
            continue
        for i in range(max(p.start, gold.start), min(p.end, gold.end)):
            mask[i - gold.start] = True
    return all(m or not text[gold.start + i].isalnum() for i, m in enumerate(mask))


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def score(cases: Sequence[Case], find: Finder) -> Report:
    """Score a finder (``text -> spans``) on labelled cases; see the module docstring."""
    report = Report()
    for case in cases:
        predicted = list(find(case.text))
        for gold in case.pii:
            ks = report.kinds.setdefault(gold.kind, KindScore())
            ks.labelled += 1
            if _covered(case.text, gold, predicted):
                ks.recalled += 1
            else:
                got = [case.text[p.start : p.end] for p in predicted if p.kind == gold.kind]
                report.misses.append((gold.kind, case.text[gold.start : gold.end], repr(got)))
        for p in predicted:
            ks = report.kinds.setdefault(p.kind, KindScore())
            ks.predicted += 1
            if any(
                g.kind == p.kind and _overlaps(p.start, p.end, g.start, g.end) for g in case.pii
            ):
                ks.correct += 1
            else:
                report.false_positives.append((p.kind, case.text[p.start : p.end], case.id))
        for start, end, category in case.lookalikes:
            report.lookalikes[category] += 1
            hit = [p for p in predicted if _overlaps(p.start, p.end, start, end)]
            if hit:
                report.touched[category] += 1
                report.touched_examples.append((category, case.text[start:end], case.id))
    return report


def throughput(find: Finder, texts: Sequence[str], min_seconds: float = 2.0) -> float:
    """Texts per second of ``find`` over ``texts`` (repeated until ``min_seconds`` pass)."""
    done = 0
    start = time.perf_counter()
    while True:
        for text in texts:
            find(text)
        done += len(texts)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def tweet_texts(cases: Sequence[Case], n: int = 5000) -> list[str]:
    """A benchmark mix: the labelled texts (about 1 in 3 with personal data) padded to tweet
    length with plain feedback, repeated to ``n`` texts; most real feedback has no personal data.
    """
    plain = [
        "honestly the new onboarding is so much better, took me two minutes to get going",
        "why does the app log me out every time I switch tabs?? fix pls",
        "would love a dark mode and keyboard shortcuts for the inbox view",
        "anyone know if the team plan includes SSO or is that enterprise only",
        "support answered in five minutes and sorted my billing mess, thank you!",
        "the search is useless, it never finds the message I literally just sent",
    ]
    pool = [c.text for c in cases] + plain * (len(cases) // 3)
    return [pool[i % len(pool)] for i in range(n)]


def _print_report(name: str, report: Report, rate: float | None) -> None:
    print(f"== {name}")
    print(f"{'kind':10} {'labelled':>8} {'recall':>7} {'predicted':>9} {'precision':>9}")
    for kind, s in sorted(report.kinds.items()):
        r = f"{s.recall:.3f}" if s.recall is not None else "-"
        p = f"{s.precision:.3f}" if s.precision is not None else "-"
        print(f"{kind:10} {s.labelled:8} {r:>7} {s.predicted:9} {p:>9}")
    total = sum(report.lookalikes.values())
    print(f"look-alikes touched: {sum(report.touched.values())} of {total}")
    for category, n in sorted(report.lookalikes.items()):
        print(f"  {category:11} {report.touched[category]} of {n}")
    for kind, text, got in report.misses:
        print(f"  MISS {kind}: {text!r} (predicted {got})")
    for kind, text, cid in report.false_positives:
        print(f"  FALSE {kind}: {text!r} in {cid}")
    for category, text, cid in report.touched_examples:
        print(f"  TOUCHED {category}: {text!r} in {cid}")
    if rate is not None:
        print(f"throughput: {rate:,.0f} texts/s (one process, tweet-length texts)")


def _presidio_finder() -> Finder:  # pragma: no cover - optional comparison, not a dependency
    import spacy
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class BlankEngine(SpacyNlpEngine):
        # The stock engine downloads en_core_web_lg on first use; a blank pipeline keeps the
        # comparison to Presidio's pattern recognizers (no NER), which is all we may ship.
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    for cp in CASE_PATTERNS:
        analyzer.registry.add_recognizer(
            PatternRecognizer(
                supported_entity=cp.name.upper(),
                patterns=[Pattern(cp.name, cp.pattern, 0.9)],
            )
        )
    mapping = {
        "EMAIL_ADDRESS": "email",
        "PHONE_NUMBER": "phone",
        "CREDIT_CARD": "card",
        "IBAN_CODE": "iban",
        "IP_ADDRESS": "ip",
        "ORDER": "order",
        "ACCOUNT": "account",
    }

    def find(text: str) -> list[Span]:
        results = analyzer.analyze(text, language="en", entities=list(mapping))
        spans = [Span(r.start, r.end, mapping[r.entity_type]) for r in results]
        chosen: list[Span] = []
        for s in sorted(spans, key=lambda s: s.start - s.end):
            if all(s.end <= c.start or s.start >= c.end for c in chosen):
                chosen.append(s)
        return sorted(chosen, key=lambda s: s.start)

    return find


def _spacy_ruler_finder() -> Finder:
    """spaCy's EntityRuler with token patterns, filtered by the same validators as ours.

    Kept for the comparison the README reports: token patterns see spaCy's tokens, so every
    phone layout needs its own token sequence, and tokenising costs more than our whole scan.
    """
    import ipaddress

    import spacy

    from triage.privacy import detectors

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": None})
    digits = {"TEXT": {"REGEX": r"^\(?\d{1,5}\)?$"}}
    sep = {"TEXT": {"IN": ["-", ".", "/", "(", ")"]}, "OP": "?"}
    street = ["street", "st", "avenue", "ave", "road", "rd", "lane", "ln", "drive", "terrace",
              "boulevard", "blvd", "way", "grove", "close", "loop", "rue", "calle", "via", "rua"]  # fmt: skip
    patterns: list[dict[str, object]] = [
        {"label": "email", "pattern": [{"LIKE_EMAIL": True}]},
        {"label": "card", "pattern": [{"TEXT": {"REGEX": r"^\d{4}(-\d{4}){3}$|^\d{13,19}$"}}]},
        {"label": "card", "pattern": [{"SHAPE": "dddd"}] * 4},
        {"label": "card", "pattern": [{"SHAPE": "dddd"}, {"SHAPE": "dddddd"}, {"SHAPE": "ddddd"}]},
        {
            "label": "iban",
            "pattern": [
                {"TEXT": {"REGEX": r"^[A-Za-z]{2}\d{2}[A-Za-z0-9]*$"}},
                {"TEXT": {"REGEX": r"^[A-Za-z0-9]{1,4}$"}, "OP": "*"},
            ],
        },
        {"label": "ip", "pattern": [{"TEXT": {"REGEX": r"^[0-9a-fA-F:.]{3,}$"}}]},
        {
            "label": "phone",
            "pattern": [{"TEXT": {"REGEX": r"^(\+|00)?\(?\d{1,4}\)?$"}}, sep, digits, sep, digits]
            + [sep, {**digits, "OP": "?"}] * 3,
        },
        {"label": "phone", "pattern": [{"TEXT": {"REGEX": r"^\+?[\d().\-/]{7,}\d$"}}]},
        {
            "label": "address",
            "pattern": [
                {"LIKE_NUM": True},
                {"IS_TITLE": True, "OP": "+"},
                {"LOWER": {"IN": street}},
            ],
        },
        {"label": "order", "pattern": [{"TEXT": {"REGEX": r"^ORD-\d{6}$"}}]},
        {"label": "account", "pattern": [{"ORTH": "ACCT"}, {"TEXT": {"REGEX": r"^\d{8}$"}}]},
        {"label": "account", "pattern": [{"TEXT": {"REGEX": r"^ACCT\d{8}$"}}]},
    ]
    ruler.add_patterns(patterns)  # type: ignore[attr-defined]

    def valid(kind: str, text: str) -> bool:
        compact = "".join(ch for ch in text if ch.isalnum())
        if kind == "card":
            return detectors.luhn_ok(compact) and compact[0] in "23456"
        if kind == "iban":
            return detectors.iban_ok(compact.upper())
        if kind == "ip":
            try:
                ipaddress.ip_address(text)
            except ValueError:
                return False
            return True
        if kind == "phone":
            return 8 <= sum(ch.isdigit() for ch in text) <= 15 and not detectors._DATE.fullmatch(
                text
            )
        return True

    def find(text: str) -> list[Span]:
        doc = nlp(text)
        return [
            Span(e.start_char, e.end_char, e.label_) for e in doc.ents if valid(e.label_, e.text)
        ]

    return find


@dataclass(slots=True)
class LanguageReport:
    """Language detection on a labelled set; ``unknown`` answers count as wrong for a text
    that has a language, and as right for a text labelled ``unknown``."""

    total: int = 0
    correct: int = 0
    undecided: int = 0
    per_language: dict[str, list[int]] = field(default_factory=dict)  # lang -> [correct, total]
    errors: list[tuple[str, str, float, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Share of texts whose detected language equals the label."""
        return self.correct / self.total if self.total else 0.0


def load_language_cases(path: Path = DEFAULT_LANGUAGE_CASES) -> list[tuple[str, str]]:
    """Read ``(text, lang)`` pairs from JSON lines with ``text`` and ``lang``."""
    with path.open(encoding="utf-8") as fh:
        return [(row["text"], row["lang"]) for row in map(json.loads, fh) if row]


def score_language(cases: Sequence[tuple[str, str]], detector: LanguageDetector) -> LanguageReport:
    """Score ``detector`` on ``(text, lang)`` pairs."""
    report = LanguageReport()
    guesses = detector.detect_many(text for text, _ in cases)
    for (text, lang), guess in zip(cases, guesses, strict=True):
        report.total += 1
        counts = report.per_language.setdefault(lang, [0, 0])
        counts[1] += 1
        if guess.language == UNKNOWN and lang != UNKNOWN:
            report.undecided += 1
        if guess.language == lang:
            report.correct += 1
            counts[0] += 1
        else:
            report.errors.append((lang, guess.language, guess.confidence, text))
    return report


def _print_language(report: LanguageReport, rate: float) -> None:
    print(f"language accuracy: {report.accuracy:.3f} ({report.correct}/{report.total}),")
    print(f"  of which undecided (unknown): {report.undecided}")
    for lang, (ok, n) in sorted(report.per_language.items()):
        print(f"  {lang:8} {ok}/{n}")
    for lang, got, confidence, text in report.errors:
        print(f"  WRONG {lang} -> {got} ({confidence:.2f}): {text!r}")
    print(f"throughput: {rate:,.0f} texts/s (detect_many, one process)")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the redaction report for the labelled set (and optionally Presidio's)."""
    parser = argparse.ArgumentParser(prog="python -m triage.privacy.evaluate")
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--engine", choices=["ours", "presidio", "spacy"], default="ours")
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput figure")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--language", action="store_true", help="language detection instead")
    args = parser.parse_args(argv)
    if args.language:
        path = args.cases if args.cases != DEFAULT_CASES else DEFAULT_LANGUAGE_CASES
        lang_cases = load_language_cases(path)
        detector = LanguageDetector()
        lang_report = score_language(lang_cases, detector)
        texts = [text for text, _ in lang_cases] * 10
        start = time.perf_counter()
        detector.detect_many(texts)
        _print_language(lang_report, len(texts) / (time.perf_counter() - start))
        return 0
    cases = load_cases(args.cases)
    if args.engine == "presidio":
        find = _presidio_finder()
    elif args.engine == "spacy":
        find = _spacy_ruler_finder()
    else:
        find = Redactor(custom=CASE_PATTERNS).find
    report = score(cases, find)
    rate = None if args.no_speed else throughput(find, tweet_texts(cases))
    if args.json:
        print(json.dumps({**report.as_dict(), "texts_per_second": rate}, indent=2))
    else:
        _print_report(args.engine, report, rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
