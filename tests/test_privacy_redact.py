"""Redaction engine: recall and precision on our labelled set, look-alikes, profiles, validators."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.privacy import CustomPattern, Redactor, redact, storable
from triage.privacy.detectors import (
    find_cards,
    find_ibans,
    find_ips,
    iban_ok,
    luhn_ok,
    may_hold_card,
)
from triage.privacy.evaluate import CASE_PATTERNS, load_cases, score

DATA = Path(__file__).parent / "data" / "privacy"


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """These engines do not touch Prefect: no test server for this module (overrides conftest)."""
    yield


CASES = load_cases(DATA / "pii_cases.jsonl")
HOLDOUT = load_cases(DATA / "pii_holdout.jsonl")
REDACTOR = Redactor(custom=CASE_PATTERNS)

# The targets: recall >= 0.98 for e-mails, phones and cards; no price, version number or
# date redacted among the look-alikes. Our other kinds are held to what they reach today, a little
# lower so a harmless rule change does not fail the suite, a real regression does.
RECALL_TARGETS = {"email": 0.98, "phone": 0.98, "card": 0.98}
OTHER_RECALL_FLOOR = 0.95
PRECISION_FLOOR = 0.95


def test_labelled_set_is_large_and_varied():
    kinds = Counter(span.kind for case in CASES for span in case.pii)
    lookalikes = Counter(cat for case in CASES for _, _, cat in case.lookalikes)
    assert sum(kinds.values()) >= 150
    assert set(kinds) >= {"email", "phone", "card", "iban", "address", "ip", "order"}
    assert all(n >= 10 for kind, n in kinds.items() if kind != "account"), kinds
    assert sum(lookalikes.values()) >= 100
    for category in ("version", "price", "date", "time", "percent", "model", "flight", "ticket",
                     "hashtag", "handle", "short", "phonelike", "nonluhn"):  # fmt: skip
        assert lookalikes[category] >= 3, category


def test_nonluhn_lookalikes_really_fail_luhn_and_cards_pass():
    for case in CASES:
        for start, end, category in case.lookalikes:
            if category == "nonluhn":
                digits = re.sub(r"\D", "", case.text[start:end])
                assert not (luhn_ok(digits) and digits[0] in "23456"), case.text
        for span in case.pii:
            if span.kind == "card":
                assert luhn_ok(re.sub(r"\D", "", case.text[span.start : span.end]))


@pytest.mark.parametrize("cases", [CASES, HOLDOUT], ids=["labelled", "holdout"])
def test_recall_and_precision_per_kind(cases):
    report = score(cases, REDACTOR.find)
    for kind, ks in report.kinds.items():
        floor = RECALL_TARGETS.get(kind, OTHER_RECALL_FLOOR)
        assert ks.recall is not None and ks.recall >= floor, (kind, ks, report.misses)
        assert ks.precision is not None and ks.precision >= PRECISION_FLOOR, (
            kind,
            ks,
            report.false_positives,
        )
    assert set(RECALL_TARGETS) <= set(report.kinds)


@pytest.mark.parametrize("cases", [CASES, HOLDOUT], ids=["labelled", "holdout"])
def test_no_lookalike_is_touched(cases):
    report = score(cases, REDACTOR.find)
    for category in ("price", "version", "date", "time"):
        assert report.lookalikes[category] > 0
    assert report.touched_examples == []


def test_placeholders_are_typed_and_text_around_them_kept():
    text = "mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111 thx"
    assert redact(text) == "mail [email] or call [phone], card [card] thx"
    assert REDACTOR.redact("where is ORD-482913?") == "where is [order]?"


def test_keep_leaves_a_kind_in_clear_and_redacts_the_rest():
    text = "I'm jane.doe@example.com, phone +1 415 555 0143, IBAN DE89 3704 0044 0532 0130 00"
    assert redact(text, keep=("email",)) == "I'm jane.doe@example.com, phone [phone], IBAN [iban]"
    assert redact(text, keep=("email", "phone", "iban")) == text


def test_kept_email_is_not_partly_redacted_by_another_kind():
    text = "write to john.4155550132@gmail.com"
    assert redact(text, keep=["email"]) == text
    assert redact(text) == "write to [email]"


def test_cards_can_never_be_kept_and_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="never be kept"):
        redact("4111 1111 1111 1111", keep=("card",))
    with pytest.raises(ValueError, match="unknown redaction kind"):
        redact("x", keep=("emails",))
    with pytest.raises(ValueError, match="unknown redaction kind"):
        Redactor().redact_many(["x"], keep=("order",))  # not configured here
    assert REDACTOR.redact("ORD-482913", keep=("order",)) == "ORD-482913"


def test_storable_removes_cards_only():
    text = (
        "card 4111-1111-1111-1111 for jane@example.com at 192.168.1.10, IBAN GB33BUKB20201555555555"
    )
    assert (
        storable(text)
        == "card [card] for jane@example.com at 192.168.1.10, IBAN GB33BUKB20201555555555"
    )
    assert REDACTOR.storable_many([text, "no digits"]) == [storable(text), "no digits"]


def test_batch_equals_one_by_one_and_redaction_is_idempotent():
    texts = [case.text for case in CASES]
    once = REDACTOR.redact_many(texts)
    assert once == [REDACTOR.redact(t) for t in texts]
    assert REDACTOR.redact_many(once) == once
    assert REDACTOR.find_many(texts[:5]) == [REDACTOR.find(t) for t in texts[:5]]


def test_custom_patterns_are_validated():
    assert Redactor(custom=[{"name": "ticket", "pattern": r"TCK-\d+", "ignore_case": True}]).redact(
        "see tck-42"
    ) == ("see [ticket]")
    with pytest.raises(ValueError, match="invalid regex"):
        Redactor(custom=[CustomPattern("order", r"ORD-(\d{6}")])
    with pytest.raises(ValueError, match="built-in"):
        Redactor(custom=[CustomPattern("email", r"x")])
    with pytest.raises(ValueError, match="lower case"):
        Redactor(custom=[CustomPattern("Order No", r"x")])
    with pytest.raises(ValueError, match="twice"):
        Redactor(custom=[CustomPattern("order", "a"), CustomPattern("order", "b")])
    with pytest.raises(ValueError, match="empty string"):
        Redactor(custom=[CustomPattern("order", r"\d*")])
    with pytest.raises(ValueError, match="expected keys"):
        Redactor(custom=[{"name": "order", "regex": "x"}])


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("DE88370400440532013000")  # check digits wrong
    assert not iban_ok("DE8937040044053201300")  # one character short for Germany
    assert list(find_ibans("iban de89 3704 0044 0532 0130 00.")) == [(5, 32)]
    assert list(find_ips("999.1.1.1 and 256.0.0.1 and 1:2:3")) == []
    assert list(find_ips("host ::1 up")) == [(5, 8)]


def _with_luhn(body: str) -> str:
    for last in "0123456789":
        if luhn_ok(body + last):
            return body + last
    raise AssertionError


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(["4", "51", "55", "2221", "37", "6011"]),
    body=st.text("0123456789", min_size=14, max_size=14),
    sep=st.sampled_from(["", " ", "-"]),
    before=st.text(st.characters(codec="utf-8", exclude_characters="0123456789"), max_size=30),
    after=st.text(st.characters(codec="utf-8", exclude_characters="0123456789"), max_size=30),
)
def test_no_card_survives_storable(prefix, body, sep, before, after):
    number = _with_luhn((prefix + body)[:15])
    written = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text = f"{before} {written} {after}"
    kept = storable(text)
    assert number not in re.sub(r"[ -]", "", kept)


_PII_ALPHABET = st.sampled_from(
    list("0123456789 +-./()@:#$€,") + ["4111 1111 1111 1111", "ORD-123456", "St", "rue", "a", "Z"]
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(_PII_ALPHABET, st.text(max_size=8)), max_size=40))
def test_spans_are_ordered_disjoint_and_storable_equals_keeping_all_but_cards(parts):
    text = "".join(parts)
    spans = REDACTOR.find(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    assert all(a.end <= b.start for a, b in pairwise(spans))
    everything_but_cards = [kind for kind in REDACTOR.kinds if kind != "card"]
    assert REDACTOR.redact(text, keep=everything_but_cards) == REDACTOR.storable(text)


def test_the_cheap_card_test_passes_payloads_without_a_long_digit_run():
    """Ingest masks cards in every raw payload; the full scan runs only where a card can be."""
    payload = (
        '{"id": "social-7", "followers": 7314, "likes": 1200, "created_at": '
        '"2026-01-01T00:00:05Z", "url": "https://social.example/p/123456"}'
    )
    assert sum(ch.isdigit() for ch in payload) >= 13 and not may_hold_card(payload)
    assert storable(payload) == payload
    with_card = payload.replace("7314", "4111 1111 1111 1111")
    assert may_hold_card(with_card) and "[card]" in storable(with_card)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(_PII_ALPHABET, st.text(max_size=8)), max_size=40))
def test_every_card_found_passes_the_cheap_test(parts):
    text = "".join(parts)
    if list(find_cards(text)):
        assert may_hold_card(text)
