"""Inbound feedback connectors: email over a real dovecot, the signed web-form intake, App Store.

Every test drives the real connector code; the store side goes through ``flows.triage.ingest`` (the
body of the flow's fetch task: real DuckDB file, cursor committed with each batch), and one test per
intake runs the whole Prefect flow.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml
from imap_tools import MailMessage
from typer.testing import CliRunner

from connectors import ConnectorError, SourceContext, appstore, email_text, imap, webhook
from flows.settings import load_config
from flows.triage import ingest, triage
from tests.fakes.appstore import FakeAppStore, review, reviews_every_hour
from tests.fakes.base import Reply, Request
from tests.fakes.dovecot import ImapServer, find_dovecot, start_dovecot
from triage.cli import app
from triage.models import TRUNCATION_MARKER
from triage.servers.intake import IntakeSettings, make_server, sign

SECRET = "test-intake-secret-2f9c"


# ----------------------------------------------------------------------------- helpers
def write_config(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    """A configuration file with these sources and the default routing."""
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump({"database": str(tmp_path / "t.duckdb"), "sources": sources}))
    return path


def run_ingest(config_path: Path, name: str) -> dict[str, Any]:
    """Fetch one source into the store exactly as the flow's fetch task does."""
    cfg = load_config(config_path)
    source = next(s for s in cfg.sources if s.name == name)
    return ingest(cfg, source)


def rows(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


# ----------------------------------------------------------------------------- email (IMAP)
@pytest.fixture(scope="module")
def dovecot() -> Iterator[ImapServer]:
    binary = find_dovecot()
    if binary is None:
        pytest.skip(
            "dovecot is not installed: run `make imap-server` as root (apt-get install "
            "dovecot-imapd) to run the IMAP tests against a real server"
        )
    server = start_dovecot(binary)
    # One mailbox user per test, all known before the first login.
    server.add_users([f"feedback{i}" for i in range(1, 21)], _password)
    try:
        yield server
    finally:
        server.stop()


_user_counter = iter(range(1, 21))


def _password(user: str) -> str:
    return f"pw-{user}-x7"


@pytest.fixture
def mailbox(dovecot: ImapServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty mailbox user; its password is in IMAP_PASSWORD."""
    user = f"feedback{next(_user_counter)}"
    monkeypatch.setenv("IMAP_PASSWORD", _password(user))
    return user


def email_source(server: ImapServer, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "mailbox",
        "type": "email",
        "host": server.host,
        "port": server.port,
        "security": "plain",
        "username": user,
        "connect_retries": 0,
        **extra,
    }


def email_ctx(tmp_path: Path, server: ImapServer, user: str, **extra: Any) -> SourceContext:
    settings = email_source(server, user, **extra)
    return SourceContext(name="mailbox", settings=settings, base_dir=tmp_path)


def reply_with_quote_and_signature() -> bytes:
    msg = MIMEMultipart("alternative")
    msg["From"] = '"Dana Ruiz" <dana@example.org>'
    msg["To"] = "feedback@nimbus.example"
    msg["Subject"] = "Re: Your export feature"
    msg["Message-ID"] = "<reply-1@example.org>"
    msg["In-Reply-To"] = "<orig-1@nimbus.example>"
    msg["References"] = "<orig-1@nimbus.example>"
    msg["Date"] = "Tue, 24 Nov 2026 09:30:00 +0100"
    plain = (
        "Please add export to CSV, we need it for our monthly reports.\n"
        "\n"
        "Thanks,\n"
        "Dana\n"
        "Head of Ops, Example Org\n"
        "+1 555 0100\n"
        "\n"
        "On Mon, Nov 23, 2026 at 10:00 AM Nimbus Support <support@nimbus.example> wrote:\n"
        "> Hi Dana, thanks for writing in.\n"
        "> Is there anything else we can do?\n"
    )
    msg.attach(MIMEText(plain, "plain", "utf-8"))
    msg.attach(MIMEText("<p>Please add export to CSV (html part)</p>", "html", "utf-8"))
    return msg.as_bytes()


def html_only_latin1_with_attachment() -> bytes:
    msg = MIMEMultipart("mixed")
    msg["From"] = "=?utf-8?q?Jos=C3=A9_N=C3=BA=C3=B1ez?= <jose@example.es>"
    msg["To"] = "feedback@nimbus.example"
    # An RFC 2047 encoded subject with accented characters.
    msg["Subject"] = "=?iso-8859-1?q?Probl=E8me_de_connexion?="
    msg["Message-ID"] = "<html-2@example.es>"
    msg["Date"] = "Wed, 25 Nov 2026 08:00:00 +0000"
    html_body = (
        "<html><head><style>p {color: red}</style><script>alert('x')</script></head><body>"
        "<p>L'application plante &agrave; la connexion depuis la mise &agrave; jour.</p>"
        "<blockquote>Old quoted text that must go</blockquote>"
        "<div>Merci</div></body></html>"
    )
    msg.attach(MIMEText(html_body, "html", "iso-8859-1"))
    attachment = MIMEApplication(b"%PDF-1.4 fake", _subtype="pdf")
    attachment.add_header("Content-Disposition", "attachment", filename="screenshot-crash.pdf")
    msg.attach(attachment)
    return msg.as_bytes()


def simple(message_id: str, body: str, subject: str = "Feedback", date: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "sam@example.com"
    msg["To"] = "feedback@nimbus.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = date or "Wed, 25 Nov 2026 12:00:00 +0000"
    msg.set_content(body)
    return msg.as_bytes()


def test_email_parses_mime_strips_replies_and_marks_seen(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    dovecot.append(mailbox, reply_with_quote_and_signature())
    dovecot.append(mailbox, html_only_latin1_with_attachment())
    # Subject-less, body-less: unusable, must be quarantined with the reason, not dropped.
    dovecot.append(mailbox, b"From: x@example.com\r\nMessage-ID: <empty-3@x>\r\n\r\n   \r\n")
    long_body = "The sync keeps failing. " * 2000
    dovecot.append(mailbox, simple("long-4@example.com", long_body))
    cfg = write_config(tmp_path, [email_source(dovecot, mailbox)])

    first = run_ingest(cfg, "mailbox")

    assert first["fetched"] == 4 and first["stored"] == 3 and first["quarantined"] == 1
    db = tmp_path / "t.duckdb"
    items = {
        r[0]: r
        for r in rows(
            db,
            "SELECT external_id, text, author_handle, author_name, in_reply_to, thread, "
            "source_type, raw, created_at FROM items",
        )
    }
    reply = items["reply-1@example.org"]
    assert reply[1] == (
        "Re: Your export feature\n\nPlease add export to CSV, we need it for our monthly reports."
    )
    assert reply[2:7] == (
        "dana@example.org",
        "Dana Ruiz",
        "orig-1@nimbus.example",
        "orig-1@nimbus.example",
        "email",
    )
    assert reply[8] == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    html_item = items["html-2@example.es"]
    assert html_item[1] == (
        "Problème de connexion\n\nL'application plante à la connexion depuis la mise à jour.\n\nMerci"
    )
    assert html_item[3] == "José Núñez"
    raw = json.loads(html_item[7])
    assert raw["attachments"] == ["screenshot-crash.pdf"]
    assert "PDF" not in html_item[1] and "alert" not in html_item[1]
    long_item = items["long-4@example.com"]
    assert long_item[1].endswith(TRUNCATION_MARKER) and len(long_item[1]) == 20_000
    (reason,) = rows(db, "SELECT reason FROM quarantine")[0]
    assert "no text" in reason and "text is empty" in reason

    # Every message, the quarantined one included, is marked processed only now.
    assert all("\\Seen" in f for f in dovecot.flags(mailbox).values())
    cursor = rows(db, "SELECT cursor FROM connector_state WHERE connector = 'mailbox'")[0][0]
    assert json.loads(cursor)["last_uid"] == 4

    # Incremental: nothing new, then exactly the one new message.
    assert run_ingest(cfg, "mailbox")["fetched"] == 0
    dovecot.append(mailbox, simple("new-5@example.com", "Do you offer a nonprofit discount?"))
    third = run_ingest(cfg, "mailbox")
    assert third["fetched"] == 1 and third["stored"] == 1
    assert rows(db, "SELECT count(*) FROM items")[0][0] == 4


def test_email_dates_out_of_range_fall_back_to_the_time_seen(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    # The Date header is the sender's clock: a broken one must neither crash the mailbox, lose the
    # mail to quarantine nor date it in the year 9999.
    broken = {"y9999@x": "Fri, 31 Dec 9999 23:59:59 -0500", "y2200@x": "Mon, 01 Jan 2200 00:00:00"}
    for mid, date in broken.items():
        dovecot.append(mailbox, simple(mid, "Sync fails on my tablet", date=date))
    dovecot.append(mailbox, simple("ok@x", "Do you have a team plan?"))
    cfg = write_config(tmp_path, [email_source(dovecot, mailbox)])
    before = datetime.now(UTC) - timedelta(seconds=1)

    result = run_ingest(cfg, "mailbox")

    assert result["stored"] == 3 and result["quarantined"] == 0
    created = dict(rows(tmp_path / "t.duckdb", "SELECT external_id, created_at FROM items"))
    assert created["ok@x"] == datetime(2026, 11, 25, 12, tzinfo=UTC)
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert all(before <= created[mid] <= after for mid in broken), created


def test_email_moves_processed_messages_to_a_folder(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    for i in range(3):
        dovecot.append(mailbox, simple(f"m{i}@example.com", f"Message {i}: love the new editor"))
    cfg = write_config(tmp_path, [email_source(dovecot, mailbox, processed_folder="Processed")])

    assert run_ingest(cfg, "mailbox")["stored"] == 3

    assert dovecot.count(mailbox, "INBOX") == 0
    assert dovecot.count(mailbox, "Processed") == 3
    dovecot.append(mailbox, simple("m9@example.com", "One more: the widget is great"))
    again = run_ingest(cfg, "mailbox")
    assert again == again | {"fetched": 1, "stored": 1}
    assert dovecot.count(mailbox, "Processed") == 4


def test_email_crash_before_or_after_store_loses_nothing(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    for i in range(3):
        dovecot.append(mailbox, simple(f"c{i}@example.com", f"Crash test {i}: billing is wrong"))
    ctx = email_ctx(tmp_path, dovecot, mailbox)

    # Crash 1: the batch was fetched but the process died before storing it.
    gen = imap.fetch(ctx, None)
    batch = next(gen)
    assert len(batch.mentions) == 3
    gen.close()
    assert not any("\\Seen" in f for f in dovecot.flags(mailbox).values())

    # Crash 2: stored with its cursor, then died before marking the messages.
    cfg = write_config(tmp_path, [email_source(dovecot, mailbox)])
    from triage.store import open_store

    gen = imap.fetch(ctx, None)
    batch = next(gen)
    with open_store(tmp_path / "t.duckdb") as store:
        store.ingest("mailbox", batch.mentions, batch.rejected, batch.cursor)
    gen.close()
    assert not any("\\Seen" in f for f in dovecot.flags(mailbox).values())

    # The next run fetches nothing new, stores nothing twice, and marks what was stored.
    result = run_ingest(cfg, "mailbox")
    assert result["fetched"] == 0
    assert rows(tmp_path / "t.duckdb", "SELECT count(*) FROM items")[0][0] == 3
    assert all("\\Seen" in f for f in dovecot.flags(mailbox).values())


def test_email_first_run_backfill_window_and_uidvalidity_reset(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(days=90)
    dovecot.append(mailbox, simple("old@example.com", "Ancient history"), when=old)
    ctx = email_ctx(tmp_path, dovecot, mailbox, backfill_days=30)

    # A first run that finds only mail older than the window starts after it.
    (empty,) = list(imap.fetch(ctx, None))
    assert empty.mentions == [] and empty.cursor["last_uid"] == 1

    dovecot.append(mailbox, simple("fresh@example.com", "Fresh feedback: great support"))
    dovecot.append(mailbox, simple("late@example.com", "Delivered late, dated old"), when=old)
    later = [m.external_id for b in imap.fetch(ctx, empty.cursor) for m in b.mentions]
    assert later == ["fresh@example.com", "late@example.com"]

    # A cursor from a renumbered folder (other UIDVALIDITY) means: read it all again.
    renumbered = [
        m.external_id
        for b in imap.fetch(ctx, {"uidvalidity": 1, "last_uid": 99})
        for m in b.mentions
    ]
    assert sorted(renumbered) == ["fresh@example.com", "late@example.com", "old@example.com"]


def deeply_nested(message_id: str, depth: int = 3000) -> bytes:
    """A message nested ``depth`` multiparts deep (about 60 bytes a level)."""
    head = (
        f"From: deep@example.com\r\nSubject: nested\r\nMessage-ID: <{message_id}>\r\n"
        "Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    )
    levels = "".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(depth)
    )
    return (head + levels + "hi\r\n").encode()


def test_email_without_a_message_id_keeps_its_id_when_the_folder_is_renumbered(
    tmp_path: Path,
) -> None:
    # A web form's mail often has no Message-ID. Its id was uid:<UIDVALIDITY>:<UID>, and the
    # folder is read again when the server renumbers it (a new UIDVALIDITY): the same mail was
    # stored a second time under its new number.
    raw = simple("x", "The checkout page froze twice today.").replace(b"Message-ID: <x>\n", b"")
    assert b"Message-ID" not in raw
    ctx = SourceContext(name="mailbox", settings={}, base_dir=tmp_path)
    now = datetime.now(UTC)
    before = imap.to_mention(ctx, MailMessage.from_bytes(raw), 7, "INBOX", now)
    after = imap.to_mention(ctx, MailMessage.from_bytes(raw), 8, "INBOX", now)
    assert before.external_id == after.external_id
    assert before.external_id.startswith("content:")
    # Another message (other text, same sender and date) is another item.
    other = simple("x", "Checkout works again, thanks!").replace(b"Message-ID: <x>\n", b"")
    assert imap.to_mention(ctx, MailMessage.from_bytes(other), 7, "INBOX", now).external_id != (
        before.external_id
    )


def test_email_a_message_that_cannot_be_built_is_quarantined_and_the_rest_read(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    # The email package raises RecursionError on this message while imap-tools builds it, inside
    # its fetch generator and outside our per-message try: the whole chunk, good mail included,
    # failed on every run and nothing was ever marked.
    dovecot.append(mailbox, simple("before-1@example.com", "Sync fails on my tablet"))
    dovecot.append(mailbox, deeply_nested("deep-2@example.com"))
    dovecot.append(mailbox, simple("after-3@example.com", "Do you have a team plan?"))
    cfg = write_config(tmp_path, [email_source(dovecot, mailbox)])

    result = run_ingest(cfg, "mailbox")

    assert result["stored"] == 2 and result["quarantined"] == 1
    db = tmp_path / "t.duckdb"
    stored = sorted(r[0] for r in rows(db, "SELECT external_id FROM items"))
    assert stored == ["after-3@example.com", "before-1@example.com"]
    ((reason, raw, external_id),) = rows(db, "SELECT reason, raw, external_id FROM quarantine")
    assert reason.startswith("message uid 2 cannot be parsed: RecursionError")
    assert external_id == "deep-2@example.com"
    assert raw.startswith("From: deep@example.com") and len(raw) <= 100_000
    # The cursor moved past it and it is marked: the next run has nothing to read.
    assert all("\\Seen" in f for f in dovecot.flags(mailbox).values())
    assert run_ingest(cfg, "mailbox")["fetched"] == 0


def test_email_auth_failure_and_unreachable_server_are_clear(
    dovecot: ImapServer, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = email_ctx(tmp_path, dovecot, mailbox)
    assert "0 message(s)" in imap.check(ctx)

    monkeypatch.setenv("IMAP_PASSWORD", "wrong-password-123")
    # One refused login only: dovecot doubles its delay for every further failure from an address.
    with pytest.raises(ConnectorError, match="login refused") as exc:
        list(imap.fetch(ctx, None))
    assert "wrong-password-123" not in str(exc.value)

    monkeypatch.delenv("IMAP_PASSWORD")
    with pytest.raises(ConnectorError, match="IMAP_PASSWORD"):
        imap.check(ctx)

    monkeypatch.setenv("IMAP_PASSWORD", "x")
    remote = email_ctx(tmp_path, dovecot, mailbox, host="mail.example.com")
    with pytest.raises(ConnectorError, match="only allowed for a server on localhost"):
        imap.check(remote)
    closed = email_ctx(tmp_path, dovecot, mailbox, port=1)
    with pytest.raises(ConnectorError, match="cannot reach"):
        imap.check(closed)


def test_email_starttls_verifies_the_certificate(
    dovecot: ImapServer, mailbox: str, tmp_path: Path
) -> None:
    dovecot.append(mailbox, simple("tls@example.com", "Sent over TLS"))
    trusted = email_ctx(
        tmp_path, dovecot, mailbox, security="starttls", ca_file=str(dovecot.ca_file)
    )
    assert "1 message(s)" in imap.check(trusted)
    assert [m.external_id for b in imap.fetch(trusted, None) for m in b.mentions] == [
        "tls@example.com"
    ]
    # Without the private CA the self-signed certificate is refused, never silently accepted.
    untrusted = email_ctx(tmp_path, dovecot, mailbox, security="starttls")
    with pytest.raises(ConnectorError, match="certificate of 127.0.0.1:.* not trusted"):
        imap.check(untrusted)


def test_strip_reply_and_html_to_text() -> None:
    text = "Thanks for the quick fix yesterday!\nIt works now.\n\n-- \nSam\nSent from my phone"
    assert email_text.strip_reply(text) == "Thanks for the quick fix yesterday!\nIt works now."
    outlook = "Pricing for 20 seats?\n\n-----Original Message-----\nFrom: sales@x\nOld text"
    assert email_text.strip_reply(outlook) == "Pricing for 20 seats?"
    assert email_text.strip_reply("> only a quote\nMy answer\n\nBest regards,\nKim") == "My answer"
    assert email_text.html_to_text("<p>A &amp; B</p><p>C<br>D</p>") == "A & B\n\nC\nD"


# ----------------------------------------------------------------------------- web-form intake
@pytest.fixture
def intake(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    spool = tmp_path / "spool"
    settings = IntakeSettings(secret=SECRET, spool_dir=spool, max_bytes=4096)
    server = make_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", spool
    finally:
        server.shutdown()
        server.server_close()


def post(
    base: str,
    payload: Any,
    *,
    secret: str = SECRET,
    ts: int | None = None,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    stamp = str(ts if ts is not None else int(time.time()))
    headers = {
        "Content-Type": content_type,
        "X-Triage-Timestamp": stamp,
        "X-Triage-Signature": sign(secret, stamp, body),
    }
    return httpx.post(f"{base}/intake", content=body, headers=headers, timeout=10)


def webhook_source(spool: Path) -> dict[str, Any]:
    return {"name": "web-form", "type": "webhook", "spool_dir": str(spool)}


def test_intake_valid_post_reaches_the_store_through_the_flow(
    intake: tuple[str, Path], tmp_path: Path
) -> None:
    base, spool = intake
    resp = post(
        base,
        {"id": "f-1", "text": "Your app crashes when I upload a photo", "email": "amy@example.com"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "accepted", "id": "f-1"}
    # Durable before the answer: the line is on disk now.
    lines = b"".join(p.read_bytes() for p in spool.glob("intake-*.jsonl")).splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == "f-1"

    cfg = write_config(tmp_path, [webhook_source(spool)])
    summary = triage(config_path=str(cfg), database=str(tmp_path / "t.duckdb"), deliver=False)

    assert summary["failed_sources"] == {}
    assert summary["sources"]["web-form"]["stored"] == 1
    ((text, author, stype, label),) = rows(
        tmp_path / "t.duckdb",
        "SELECT i.text, i.author_handle, i.source_type, p.label FROM items i "
        "JOIN predictions p ON p.item_id = i.id",
    )
    assert (text, author, stype) == (
        "Your app crashes when I upload a photo",
        "amy@example.com",
        "web_form",
    )
    assert label == "service_issue"


def test_intake_refuses_bad_requests_with_clear_status(intake: tuple[str, Path]) -> None:
    base, spool = intake
    ok = {"text": "hello"}
    bad_sig = post(base, ok, secret="not-the-secret")
    assert bad_sig.status_code == 401 and "signature" in bad_sig.json()["error"]
    stale = post(base, ok, ts=int(time.time()) - 301)
    assert stale.status_code == 401 and "window" in stale.json()["error"]
    unsigned = httpx.post(f"{base}/intake", json=ok, timeout=10)
    assert unsigned.status_code == 401
    big = post(base, {"text": "x" * 5000})
    assert big.status_code == 413
    form = post(base, None, raw=b"text=hello", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    broken = post(base, None, raw=b'{"text": "unterminated')
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    listed = post(base, ["text", "hello"])
    assert listed.status_code == 400 and "JSON object" in listed.json()["error"]
    no_text = post(base, {"name": "Bo"})
    assert no_text.status_code == 400 and "text is missing" in no_text.json()["error"]
    blank = post(base, {"message": "   "})
    assert blank.status_code == 400
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    assert httpx.post(f"{base}/other", json=ok, timeout=10).status_code == 404
    # Nothing refused was spooled.
    assert not list(spool.glob("intake-*.jsonl"))


def test_intake_crash_after_202_loses_nothing_and_replays_are_absorbed(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    settings = IntakeSettings(secret=SECRET, spool_dir=spool)

    def serve() -> tuple[str, Any]:
        server = make_server(settings, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", server

    base, server = serve()
    stamp = int(time.time())
    first = post(base, {"text": "Do you have a team plan?", "name": "Lee"}, ts=stamp)
    replay = post(base, {"text": "Do you have a team plan?", "name": "Lee"}, ts=stamp)
    odd = post(base, {"text": "When is the webinar?", "created_at": "next tuesday-ish"})
    # What the webhook source would quarantine is refused at the door, with the reason.
    assert [first.status_code, replay.status_code, odd.status_code] == [202, 202, 400]
    assert "next tuesday-ish" in odd.json()["error"]
    assert first.json()["id"] == replay.json()["id"]
    # The server dies hard; another (never acknowledged) write was torn half-way.
    server.shutdown()
    server.server_close()
    (day_file,) = spool.glob("intake-*.jsonl")
    with day_file.open("ab") as fh:
        fh.write(b'{"id": "torn", "text": "half a li')

    base, server = serve()
    try:
        after = post(base, {"id": "after-restart", "text": "Great product, thank you!"})
        assert after.status_code == 202
    finally:
        server.shutdown()
        server.server_close()

    cfg = write_config(tmp_path, [webhook_source(spool)])
    result = run_ingest(cfg, "web-form")
    db = tmp_path / "t.duckdb"
    texts = sorted(r[0] for r in rows(db, "SELECT text FROM items"))
    assert texts == ["Do you have a team plan?", "Great product, thank you!"]
    reasons = sorted(r[0] for r in rows(db, "SELECT reason FROM quarantine"))
    assert len(reasons) == 1 and result["quarantined"] == 1
    assert "invalid JSON" in reasons[0]
    assert run_ingest(cfg, "web-form")["fetched"] == 0


def test_intake_serve_needs_a_secret_and_webhook_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIAGE_INTAKE_SECRET", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # no Secret block either
    result = CliRunner().invoke(app, ["intake", "serve", "--port", "0"])
    assert result.exit_code == 2
    assert "TRIAGE_INTAKE_SECRET" in result.output

    ctx = SourceContext(name="web-form", settings={"spool_dir": "nope"}, base_dir=tmp_path)
    with pytest.raises(ConnectorError, match="does not exist"):
        webhook.check(ctx)
    assert list(webhook.fetch(ctx, None)) == []


# ----------------------------------------------------------------------------- App Store
@pytest.fixture
def fake_store() -> Iterator[FakeAppStore]:
    with FakeAppStore() as state:
        yield state


def store_source(fake: FakeAppStore, **extra: Any) -> dict[str, Any]:
    return {
        "name": "ios",
        "type": "appstore",
        "app_id": "123456789",
        "country": "gb",
        "base_url": fake.url,
        **extra,
    }


NOW = datetime.now(UTC).replace(microsecond=0)


def test_appstore_pages_cursor_and_incremental(fake_store: FakeAppStore, tmp_path: Path) -> None:
    fake_store.add_reviews("gb", "123456789", reviews_every_hour(1000, 120, NOW))
    fake_store.add_reviews("us", "123456789", reviews_every_hour(5000, 5, NOW))  # other store
    cfg = write_config(tmp_path, [store_source(fake_store)])

    first = run_ingest(cfg, "ios")

    assert first["fetched"] == 120 and first["stored"] == 120
    assert fake_store.pages_requested() == [1, 2, 3, 4]
    assert all("feedback-triage" in c.headers.get("user-agent", "") for c in fake_store.calls)
    db = tmp_path / "t.duckdb"
    (text, url, author, raw, stype) = rows(
        db,
        "SELECT text, url, author_name, raw, source_type FROM items WHERE external_id = '1119'",
    )[0]
    assert text == "Nice app\n\nReview number 119: sync works great"
    assert url and "id=1119" in url and author == "reviewer" and stype == "app_review"
    assert json.loads(raw)["rating"] == 4

    fake_store.calls.clear()
    assert run_ingest(cfg, "ios")["fetched"] == 0
    assert fake_store.pages_requested() == [1]

    fake_store.add_reviews(
        "gb", "123456789", [review(2000 + i, NOW + timedelta(minutes=i + 1)) for i in range(3)]
    )
    third = run_ingest(cfg, "ios")
    assert third["fetched"] == 3 and third["stored"] == 3
    assert rows(db, "SELECT count(*) FROM items")[0][0] == 123


def test_an_appstore_review_dated_ahead_does_not_hide_the_reviews_after_it(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    # A review stamped hours ahead sits at the top of the feed until the clock passes it: as the
    # cursor (its time and id) it would stop every later run at the first entry.
    now = datetime.now(UTC).replace(microsecond=0)
    fake_store.add_reviews(
        "gb", "123456789", [review(3001, now + timedelta(hours=20)), review(3000, now)]
    )
    cfg = write_config(tmp_path, [store_source(fake_store)])
    assert run_ingest(cfg, "ios")["stored"] == 2
    later = datetime.now(UTC) + timedelta(seconds=2)
    fake_store.add_reviews("gb", "123456789", [review(3002, later)])
    again = run_ingest(cfg, "ios")
    assert again["stored"] == 1  # 3002; 3001 read again and not stored twice
    ids = rows(tmp_path / "t.duckdb", "SELECT external_id FROM items ORDER BY 1")
    assert [i for (i,) in ids] == ["3000", "3001", "3002"]


def test_appstore_reads_at_most_ten_pages_and_bounds_backfill(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    # Half an hour off the hour from now (not from import time): no review sits on the boundary
    # of the backfill window below, however long the suite has been running.
    newest = datetime.now(UTC) - timedelta(minutes=30)
    fake_store.add_reviews("gb", "123456789", reviews_every_hour(1, 600, newest))
    ctx = SourceContext(name="ios", settings=store_source(fake_store), base_dir=tmp_path)
    fetched = [m for b in appstore.fetch(ctx, None) for m in b.mentions]
    assert len(fetched) == 500 and fake_store.pages_requested() == list(range(1, 11))

    fake_store.calls.clear()
    bounded = SourceContext(
        name="ios", settings=store_source(fake_store, backfill_days=2), base_dir=tmp_path
    )
    recent = [m for b in appstore.fetch(bounded, None) for m in b.mentions]
    # The newest review and the 47 hourly ones before it are inside the last 48 hours.
    assert len(recent) == 48 and fake_store.pages_requested() == [1]


def test_appstore_retries_429_and_5xx_then_fails_clearly(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    fake_store.add_reviews("gb", "123456789", [review(1, NOW)])
    ctx = SourceContext(name="ios", settings=store_source(fake_store), base_dir=tmp_path)
    fake_store.fail_next(429, retry_after=1)
    fake_store.fail_next(503)
    batches = list(appstore.fetch(ctx, None))
    # The single-entry page (an object, not a list) still reads as one review.
    assert [m.external_id for b in batches for m in b.mentions] == ["1"]
    statuses = [c.status for c in fake_store.calls]
    assert statuses[:3] == [429, 503, 200]
    assert fake_store.calls[1].at - fake_store.calls[0].at >= 0.95  # Retry-After honoured

    fake_store.fail_next(403)
    with pytest.raises(ConnectorError, match="HTTP 403 refused by Apple"):
        appstore.check(ctx)
    fake_store.fail_next(0)
    with pytest.raises(ConnectorError, match="not JSON"):
        list(appstore.fetch(ctx, None))
    bad = SourceContext(
        name="ios", settings=store_source(fake_store, app_id="my-app"), base_dir=tmp_path
    )
    with pytest.raises(ConnectorError, match="numeric"):
        appstore.check(bad)
    assert "1 review(s)" in appstore.check(ctx)


def test_appstore_source_down_fails_only_itself_and_keeps_cursor(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    fake_store.add_reviews("gb", "123456789", reviews_every_hour(1, 3, NOW))
    cfg = write_config(tmp_path, [store_source(fake_store, retries=1)])
    fake_store.fail_next(500, times=2)
    with pytest.raises(ConnectorError, match="gave up"):
        run_ingest(cfg, "ios")
    assert rows(tmp_path / "t.duckdb", "SELECT count(*) FROM connector_state")[0][0] == 0
    assert run_ingest(cfg, "ios")["stored"] == 3


def test_appstore_malformed_entries_are_quarantined_and_long_text_truncated(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    entries = [
        review(10, NOW, content="Fine"),
        review(11, NOW - timedelta(hours=1), content=None),
        review(12, NOW - timedelta(hours=2), rating="five"),
        review(13, NOW - timedelta(hours=3), content="x" * 30_000),
    ]
    broken_date = review(14, NOW - timedelta(hours=4))
    broken_date["updated"] = {"label": "yesterday"}
    entries.append(broken_date)
    fake_store.add_reviews("gb", "123456789", entries)
    cfg = write_config(tmp_path, [store_source(fake_store)])

    result = run_ingest(cfg, "ios")

    assert result["stored"] == 2 and result["quarantined"] == 3
    db = tmp_path / "t.duckdb"
    reasons = sorted(r[0] for r in rows(db, "SELECT reason FROM quarantine"))
    assert any("content.label" in r for r in reasons)
    assert any("im:rating" in r and "five" in r for r in reasons)
    assert any("yesterday" in r for r in reasons)
    (long_text,) = rows(db, "SELECT text FROM items WHERE external_id = '13'")[0]
    assert long_text.endswith(TRUNCATION_MARKER) and len(long_text) == 20_000


def test_appstore_a_page_that_cannot_be_read_fails_the_source_by_name(
    fake_store: FakeAppStore, tmp_path: Path
) -> None:
    # A gzip Content-Encoding on a body that is not gzip raised httpx.DecodingError, and JSON
    # nested 100,000 deep RecursionError: neither named the source.
    fake_store.add_reviews("gb", "123456789", [review(1, NOW)])
    ctx = SourceContext(name="ios", settings=store_source(fake_store, retries=0), base_dir=tmp_path)
    route = fake_store.route
    cursor = {"updated": (NOW - timedelta(days=1)).isoformat(), "id": "0"}

    def gzip_lie(req: Request) -> Reply:
        status, body, headers = route(req)
        return status, body, {**headers, "Content-Encoding": "gzip"}

    def deep_json(req: Request) -> Reply:
        return 200, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "text/javascript"}

    fake_store.route = gzip_lie  # type: ignore[method-assign]
    with pytest.raises(ConnectorError, match=r"source 'ios': GET .*cannot be read \(Decoding"):
        list(appstore.fetch(ctx, cursor))
    fake_store.route = deep_json  # type: ignore[method-assign]
    with pytest.raises(ConnectorError, match=r"source 'ios': GET .*response is not JSON"):
        list(appstore.fetch(ctx, cursor))
    fake_store.route = route  # type: ignore[method-assign]
    assert [m.external_id for b in appstore.fetch(ctx, cursor) for m in b.mentions] == ["1"]
