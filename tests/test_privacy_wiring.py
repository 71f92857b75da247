"""Redaction wired into every destination (issue 18): nothing personal leaves the store unasked.

A full run of the pipeline's stages (file connector, shipped model, routing, DuckDB outbox, every
handoff destination through its real client against the strict local fakes) with a test card
number, e-mail address and phone number in the input; then every request the fakes received,
every preview file, the testimonials CSV, every log line and the database file are searched.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote_plus

import duckdb
import pytest
from typer.testing import CliRunner

from tests.test_handoffs import World, world  # noqa: F401 - the shared fixture
from triage.cli import app
from triage.config import ConfigError
from triage.models import Author, DeliveryItem
from triage.privacy.policy import PrivacyPolicy
from triage.privacy.storage import with_languages

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.org"
PHONE = "+44 20 7946 0958"
ORDER = "ORD-482913"
# Each text carries all of them; the shipped model gives each a different department.
PII_FEED: list[tuple[str, str, str]] = [
    (
        "p1",
        "@jane",
        (
            f"I was charged twice on my card {CARD}, order {ORDER}, need a refund now. "
            f"Call me on {PHONE} or mail {EMAIL}"
        ),
    ),
    ("p2", "@jane", f"Please add dark mode to the app, mail {EMAIL} or call {PHONE} when it ships"),
    ("p3", EMAIL, f"How much is the business plan for 40 seats? need a quote, call {PHONE}"),
    (
        "p4",
        "@jane",
        # Praise clear enough that the kudos is handed off without review (the testimonials
        # export must see it): models differ on a plainer "love it, thank you".
        (
            f"Nimbus Notes is amazing, best note app ever, love it, thank you team! {EMAIL} "
            f"{PHONE} card {CARD}"
        ),
    ),
]


def _needles() -> dict[str, re.Pattern[str]]:
    # The phone and card also as bare digit runs: a destination that strips spaces must not
    # slip them through either.
    return {
        "card": re.compile(re.escape(CARD) + "|4111111111111111|4111-1111-1111-1111"),
        "email": re.compile(re.escape(EMAIL), re.IGNORECASE),
        "phone": re.compile(re.escape(PHONE) + "|442079460958|7946 0958"),
        "order": re.compile(re.escape(ORDER)),
    }


def _outgoing(w: World) -> dict[str, str]:
    """Everything that left the store, by where it went."""
    out: dict[str, str] = {}
    for n, call in enumerate(w.slack.calls):
        out[f"slack {call.method} #{n}"] = json.dumps(call.args, ensure_ascii=False)
    for fake in (w.zendesk, w.hubspot, w.github, w.webhook):
        for n, req in enumerate(fake.calls):
            body = req.body.decode("utf-8", errors="replace")
            out[f"{type(fake).__name__} {req.method} {req.path} #{n}"] = (
                unquote_plus(req.path) + " " + json.dumps(req.query) + " " + body
            )
    return out


def _configure(w: World, zendesk_keeps: list[str]) -> None:
    data = w.settings()
    data["privacy"] = {"patterns": [{"name": "order", "pattern": r"\bORD-\d{6}\b"}]}
    data["destinations"]["zendesk"]["keep_in_clear"] = zendesk_keeps
    data["destinations"]["hubspot"].pop("keep_in_clear", None)
    # A destination without credentials writes previews: they are searched too.
    data["destinations"]["support-preview"] = {"type": "preview", "channel": "#support"}
    data["destinations"]["webhook"]["keep_in_clear"] = []
    data["departments"]["support"]["also"] = ["webhook", "support-preview"]
    w.write(data)


Collect = Callable[[list[str]], dict[str, str]]


@pytest.fixture
def collect(
    world: World,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Collect:
    """Run the PII feed with Zendesk keeping the given kinds; return everything that went out."""

    def run(zendesk_keeps: list[str]) -> dict[str, str]:
        monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(tmp_path / "outbox"))
        _configure(world, zendesk_keeps)
        return _run_and_collect(world, tmp_path, caplog)

    return run


def _run_and_collect(w: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    caplog.set_level(logging.DEBUG)
    w.add(PII_FEED)
    summary = w.run()
    assert summary["failed"] == 0 and summary["dead"] == 0, summary
    csv_path = tmp_path / "testimonials.csv"
    args = ["--config", str(w.config), "--db", str(w.db)]
    result = CliRunner().invoke(app, ["testimonials", "export", "--out", str(csv_path), *args])
    assert result.exit_code == 0, result.output
    found = _outgoing(w)
    found["testimonials.csv"] = csv_path.read_text(encoding="utf-8")
    cfg_outbox = tmp_path / "outbox"
    for f in sorted(cfg_outbox.rglob("*.json")):
        found[f"preview {f.relative_to(cfg_outbox)}"] = f.read_text(encoding="utf-8")
    found["log"] = "\n".join(r.getMessage() for r in caplog.records)
    return found


def test_no_card_email_or_phone_leaves_the_store_after_a_full_run(
    world: World,  # noqa: F811
    collect: Collect,
) -> None:
    found = collect([])

    # Every kind of destination was exercised: otherwise "no leak" would prove nothing.
    assert any(k.startswith("slack chat.postMessage") for k in found)
    for fake in ("FakeZendesk", "FakeHubSpot", "FakeGitHub", "FakeWebhookReceiver"):
        assert any(k.startswith(fake + " POST") for k in found), fake
    assert any(k.startswith("preview support-preview/") for k in found)
    assert "[email]" in found["testimonials.csv"] and "[phone]" in found["testimonials.csv"]

    leaks = {
        (where, kind)
        for where, text in found.items()
        for kind, needle in _needles().items()
        if needle.search(text)
    }
    assert leaks == set()
    # The placeholders say what was there.
    posted = "\n".join(found.values())
    for placeholder in ("[card]", "[email]", "[phone]", "[order]"):
        assert placeholder in posted

    # Card numbers are not even stored; the rest is kept for the team (and erasure).
    with duckdb.connect(str(world.db)) as con:
        con.execute("CHECKPOINT")
    data = world.db.read_bytes()
    assert b"4111 1111 1111 1111" not in data and b"4111111111111111" not in data
    with duckdb.connect(str(world.db), read_only=True) as con:
        texts = [
            r[0] for r in con.execute("SELECT text || coalesce(raw, '') FROM items").fetchall()
        ]
    assert any(EMAIL in t for t in texts)
    assert all(CARD not in t for t in texts)


def test_a_helpdesk_may_keep_the_email_when_configured_and_nobody_else_gets_it(
    collect: Collect,
) -> None:
    found = collect(["email"])
    email = _needles()["email"]
    with_email = {where.split(" ")[0] for where, text in found.items() if email.search(text)}
    assert with_email == {"FakeZendesk"}
    for where, text in found.items():
        assert not _needles()["card"].search(text), where
        assert not _needles()["phone"].search(text), where
    # The sales lead's author is an e-mail address: HubSpot (not keeping e-mail) gets a
    # pseudonymous key instead, never the address.
    assert not any(email.search(t) for k, t in found.items() if k.startswith("FakeHubSpot"))


def test_a_public_tracker_may_not_keep_anything_and_cards_are_never_kept(
    world: World,  # noqa: F811
) -> None:
    data = world.settings()
    data["destinations"]["github"]["keep_in_clear"] = ["email"]
    world.write(data)
    with pytest.raises(ConfigError, match="GitHub issue is public"):
        world.run()
    data["destinations"]["github"]["keep_in_clear"] = []
    data["destinations"]["zendesk"]["keep_in_clear"] = ["card"]
    world.write(data)
    with pytest.raises(ConfigError, match="may never be kept"):
        world.run()
    data["destinations"]["zendesk"]["keep_in_clear"] = ["order"]
    world.write(data)
    with pytest.raises(ConfigError, match="unknown redaction kind"):
        world.run()


def test_redacted_authors_keep_a_stable_pseudonymous_key(world: World) -> None:  # noqa: F811
    from flows.settings import load_config

    policy = PrivacyPolicy(load_config(world.config, database=str(world.db)))

    def item(handle: str) -> DeliveryItem:
        return DeliveryItem(
            id="x", source="mail", text="hi", label="other", scores={}, author=Author(handle)
        )

    a, b = policy.item(item(EMAIL), "github"), policy.item(item("bob@example.org"), "github")
    assert a.author.handle == "[email]" and a.author_key.startswith("anon:")
    assert a.author_key == policy.item(item(EMAIL), "github").author_key
    assert a.author_key != b.author_key and EMAIL not in a.author_key
    kept = policy.item(item(EMAIL), "zendesk")
    assert kept.author.handle == EMAIL and kept.author_key == f"mail:{EMAIL}"


def test_languages_are_detected_at_ingest_unless_the_source_gave_one() -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "text": ["Bonjour, l'application plante à chaque démarrage", "ok", "hello"],
            "language": [None, None, "en-US"],
        }
    )
    assert with_languages(table).column("language").to_pylist() == ["fr", "unknown", "en"]


def test_ingest_tells_apart_common_languages_only() -> None:
    import pyarrow as pa

    from triage.privacy.language import LanguageDetector

    # Short English posts the unrestricted model reads as Nigerian Pidgin or Welsh.
    texts = ["Good app 👍👍👍👍 no ads", "@nimbus add a timer ⏲️ pls"]
    assert [g.language for g in LanguageDetector().detect_many(texts)] == ["pcm", "cy"]
    table = pa.table({"text": texts, "language": pa.array([None, None], pa.string())})
    assert with_languages(table).column("language").to_pylist() == ["en", "en"]


# ------------------------------------------------------------------------ languages
LANG_FEED: list[tuple[str, str, str]] = [
    ("l1", "@jo", "The app crashes on login every time, I cannot get to my notes"),
    ("l2", "@fr", "L'application plante à chaque connexion, je ne peux plus ouvrir mes notes"),
    ("l3", "@es", "La aplicación se cierra cada vez que intento iniciar sesión, ayuda por favor"),
    ("l4", "@x", "ok 👍"),
]


def test_unsupported_languages_go_to_review_or_their_own_destination(
    world: World,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from triage.models import item_id

    monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(tmp_path / "outbox"))
    data = world.settings()
    data["destinations"]["soporte"] = {"type": "preview", "channel": "#soporte"}
    data["privacy"] = {"languages": ["en"], "language_destinations": {"es": "soporte"}}
    world.write(data)
    world.add(LANG_FEED)
    world.run()

    with duckdb.connect(str(world.db), read_only=True) as con:
        rows = con.execute(
            "SELECT i.external_id, i.language, p.needs_review, p.review_reason, r.state, r.rule "
            "FROM items i JOIN predictions p ON p.item_id = i.id JOIN routes r ON r.item_id = i.id"
        ).fetchall()
        outbox = con.execute("SELECT item_id, destination, kind FROM outbox").fetchall()
    by_ext = {r[0]: r[1:] for r in rows}
    assert by_ext["l1"][0] == "en" and by_ext["l1"][4] == "service_issue"
    assert by_ext["l2"] == (
        "fr",
        True,
        "language 'fr': the model was not trained on it",
        "awaiting_review",
        "language:fr",
    )
    assert by_ext["l3"][0] == "es" and by_ext["l3"][3:] == ("auto_handoff", "language:es")
    assert by_ext["l4"][0] == "unknown" and by_ext["l4"][3] == "awaiting_review"
    sent = {(i, d, k) for i, d, k in outbox}
    es, fr = item_id("social", "l3"), item_id("social", "l2")
    # The Spanish complaint goes to the Spanish team alone, not to the English helpdesk.
    assert {(d, k) for i, d, k in sent if i == es} == {("soporte", "handoff")}
    assert {(d, k) for i, d, k in sent if i == fr} == {("review-channel", "review")}
    review = json.dumps([c.args for c in world.slack.calls_to("chat.postMessage")])
    assert "the model was not trained on it" in review
    assert (tmp_path / "outbox" / "soporte").is_dir()

    result = CliRunner().invoke(
        app, ["status", "--json", "--config", str(world.config), "--db", str(world.db)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["by_language"] == {"en": 1, "es": 1, "fr": 1, "unknown": 1}


def test_reports_and_the_digest_get_redacted_figures(world: World) -> None:  # noqa: F811
    from datetime import UTC, datetime

    from flows.settings import load_config
    from triage.report.data import Quote

    policy = PrivacyPolicy(load_config(world.config, database=str(world.db)))
    at = datetime(2026, 11, 20, tzinfo=UTC)
    figures = {"quotes": (Quote(f"love it, write me at {EMAIL} or {PHONE}", None, at),), "n": 3}
    redacted = policy.tree(figures, None)
    assert redacted["quotes"][0].text == "love it, write me at [email] or [phone]"
    assert redacted["quotes"][0].at == at and redacted["n"] == 3
    # A destination keeping e-mail sees it; nobody sees the phone.
    kept = policy.tree(figures, "zendesk")["quotes"][0].text
    assert EMAIL in kept and PHONE not in kept
