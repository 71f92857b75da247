"""Email (IMAP): a feedback mailbox, read with imap-tools.

imap-tools is a small, actively maintained layer over the standard library's ``imaplib`` that speaks
UIDs, folders, flags and MOVE without hand-written IMAP syntax, and hands back the standard
``email.message.Message`` so MIME parsing stays with the standard library.

Every message becomes one mention: subject and the new part of the body (quoted replies and
signatures stripped), sender as author, attachments kept by file name only. Messages are marked as
processed (``\\Seen``, or moved to ``processed_folder``) only after the batch holding them has been
stored, so a crash between fetch and store leaves them waiting in the folder for the next run.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from imap_tools import A, BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted, MailMessage
from imap_tools.errors import ImapToolsError, MailboxLoginError

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.email_text import body_text, strip_reply
from triage.http import Backoff, retry
from triage.keys import stable_key
from triage.models import (
    MAX_RAW_CHARS,
    Author,
    InvalidRecord,
    Mention,
    Rejected,
    clean_text,
    parse_timestamp,
)

SETTINGS = {
    "host": "IMAP server host name (required)",
    "port": "IMAP port (default 993 for ssl, 143 for starttls/plain)",
    "security": "ssl (default), starttls, or plain (plain only for a server on localhost)",
    "username": "mailbox user name (required)",
    "password_secret": "env var / Secret block holding the password (default IMAP_PASSWORD)",
    "folder": "folder to read (default INBOX)",
    "processed_folder": "move processed messages here (created if missing); default: flag \\Seen",
    "backfill_days": "first run only: skip messages older than this many days (default 30)",
    "source_type": "source_type of the messages (default email)",
    "ca_file": "CA bundle to trust for a server with a private certificate (default: system CAs)",
    "timeout": "socket timeout in seconds (default 30)",
    "connect_retries": "extra connection attempts on network errors (default 3)",
}

# Messages fetched per IMAP round trip and per stored batch: one batch of mail is small and a
# crash then repeats at most this many messages (which the stable ids absorb anyway).
FETCH_CHUNK = 100
# Messages per FETCH command: bounds the memory taken by large attachments.
BODY_CHUNK = 10
MAX_RAW_FIELD = 2000
NO_DATE = datetime(1900, 1, 1)


def _setting_int(ctx: SourceContext, key: str, default: int) -> int:
    value = ctx.settings.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConnectorError(f"source '{ctx.name}': setting '{key}' must be a number") from None


def _connect(ctx: SourceContext) -> BaseMailBox:
    """Open and log in, retrying network errors with backoff; refuse early on bad credentials."""
    host = str(ctx.require("host"))
    user = str(ctx.require("username"))
    security = str(ctx.settings.get("security", "ssl")).lower()
    if security not in ("ssl", "starttls", "plain"):
        raise ConnectorError(
            f"source '{ctx.name}': security must be ssl, starttls or plain, not '{security}'"
        )
    if security == "plain" and host not in ("127.0.0.1", "::1", "localhost"):
        # The password would cross the network in clear text.
        raise ConnectorError(
            f"source '{ctx.name}': security 'plain' is only allowed for a server on localhost; "
            f"use ssl or starttls for {host}"
        )
    port = _setting_int(ctx, "port", 993 if security == "ssl" else 143)
    timeout = float(ctx.settings.get("timeout", 30))
    # Certificates and host names are always verified; a private CA is trusted only when named.
    tls = ssl.create_default_context(
        cafile=str(ctx.path("ca_file")) if ctx.settings.get("ca_file") else None
    )
    # password_secret names the env var (and so the Secret block named after it), README "email".
    secret_name = str(ctx.settings.get("password_secret") or "IMAP_PASSWORD")
    password = ctx.require_credential("password_secret", "IMAP_PASSWORD")
    retries = _setting_int(ctx, "connect_retries", 3)

    def attempt() -> BaseMailBox:
        box: BaseMailBox
        try:
            if security == "ssl":
                box = MailBox(host, port, timeout=timeout, ssl_context=tls)
            elif security == "starttls":
                box = MailBoxStartTls(host, port, timeout=timeout, ssl_context=tls)
            else:
                box = MailBoxUnencrypted(host, port, timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            # Not transient: retrying cannot make an untrusted certificate trusted.
            raise ConnectorError(
                f"source '{ctx.name}': TLS certificate of {host}:{port} not trusted "
                f"({exc.verify_message}); set ca_file for a private CA"
            ) from None
        try:
            box.login(user, password, initial_folder=None)
        except MailboxLoginError:
            _logout(box)
            # The server's reply is not echoed: it may repeat the user name; never the password.
            raise ConnectorError(
                f"source '{ctx.name}': IMAP login refused for user '{user}' at {host}:{port} "
                f"(check the user name and the password in {secret_name})"
            ) from None
        except (OSError, ImapToolsError):
            _logout(box)
            raise
        return box

    # Network errors are retried (0.5 s doubling, at most 30 s); refusals above fail at once.
    backoff = Backoff(retries=retries, first=0.5, cap=30.0, jitter=0.0)
    try:
        return retry(attempt, backoff, errors=(OSError, ImapToolsError))
    except (OSError, ImapToolsError) as exc:
        raise ConnectorError(
            f"source '{ctx.name}': cannot reach IMAP server {host}:{port} after "
            f"{retries + 1} attempt(s) ({type(exc).__name__}: {exc})"
        ) from None


def _logout(box: BaseMailBox) -> None:
    # The connection may already be gone; there is nothing left to save at logout.
    with contextlib.suppress(Exception):
        box.logout()


def _select(ctx: SourceContext, box: BaseMailBox, folder: str) -> tuple[int, int]:
    """Open the folder; return its (UIDVALIDITY, UIDNEXT)."""
    try:
        status = box.folder.status(folder, ["UIDVALIDITY", "UIDNEXT"])
        box.folder.set(folder)
    except ImapToolsError as exc:
        raise ConnectorError(f"source '{ctx.name}': cannot open folder '{folder}': {exc}") from exc
    return int(status["UIDVALIDITY"]), int(status["UIDNEXT"])


def check(ctx: SourceContext) -> str:
    """Log in, open the folder and report how many messages it holds."""
    folder = str(ctx.settings.get("folder", "INBOX"))
    box = _connect(ctx)
    try:
        try:
            status = box.folder.status(folder, ["MESSAGES", "UNSEEN", "UIDVALIDITY"])
        except ImapToolsError as exc:
            raise ConnectorError(
                f"source '{ctx.name}': logged in, but folder '{folder}' cannot be opened: {exc}"
            ) from exc
    finally:
        _logout(box)
    return (
        f"logged in as {ctx.settings.get('username')}; '{folder}' holds "
        f"{status['MESSAGES']} message(s), {status['UNSEEN']} unseen"
    )


def _short(value: str) -> str:
    return value if len(value) <= MAX_RAW_FIELD else value[:MAX_RAW_FIELD] + "…"


def _created_at(msg: MailMessage, fallback: datetime) -> datetime:
    dt = msg.date
    if dt.replace(tzinfo=None) == NO_DATE:
        # No or unreadable Date header: the time we saw it is the best we know; raw keeps the header.
        try:
            dt = parsedate_to_datetime(msg.date_str)
        except (TypeError, ValueError, IndexError):
            return fallback
    try:
        # Naive means UTC; a Date header out of range (year 9999, before 1970, far ahead) is the
        # sender's clock, not the mail's: the time we saw it is the best we know, as above.
        return parse_timestamp(dt)
    except InvalidRecord:
        return fallback


def to_mention(
    ctx: SourceContext, msg: MailMessage, uidvalidity: int, folder: str, fetched_at: datetime
) -> Mention:
    """Turn one fetched message into a mention.

    Args:
        ctx: The configured source.
        msg: The message as imap-tools fetched it.
        uidvalidity: The folder's UIDVALIDITY (kept in ``raw``).
        folder: The folder name, kept in ``raw``.
        fetched_at: When the batch was fetched.

    Returns:
        The mention.

    Raises:
        InvalidRecord: When the message has no usable text.
    """
    message_id = (msg.headers.get("message-id") or ("",))[0].strip().strip("<>")
    subject = re.sub(r"\s+", " ", msg.subject or "").strip()
    body = strip_reply(body_text(msg.obj))
    # Message-ID survives a UIDVALIDITY change or a move between folders; UIDs do not. Without
    # one the message's own sender, date, subject and text name it: a UID-based id was new again
    # each time the server renumbered the folder (which is then read again), and the same mail
    # was stored once more.
    external_id = message_id or "content:" + stable_key(
        msg.from_, msg.date_str, subject, body, errors="surrogatepass"
    )
    text = f"{subject}\n\n{body}" if subject and body else (subject or body)
    sender = msg.from_values
    attachments = [a.filename for a in msg.attachments if a.filename]
    in_reply_to = (msg.headers.get("in-reply-to") or ("",))[0].strip().strip("<>") or None
    references = (msg.headers.get("references") or ("",))[0].split()
    raw: dict[str, Any] = {
        "uid": msg.uid,
        "uidvalidity": uidvalidity,
        "folder": folder,
        "message_id": message_id or None,
        "from": _short(msg.from_),
        "to": [_short(t) for t in msg.to[:20]],
        "subject": _short(subject),
        "date": _short(msg.date_str),
        "attachments": [_short(n) for n in attachments[:100]],
        "size": msg.size_rfc822,
    }
    try:
        clean = clean_text(text)
    except InvalidRecord as exc:
        raise InvalidRecord(f"message uid {msg.uid} has no text: {exc}") from exc
    return Mention(
        source=ctx.name,
        external_id=external_id,
        text=clean,
        created_at=_created_at(msg, fetched_at),
        url=None,
        author=Author(
            handle=(sender.email or None) if sender else None,
            name=(sender.name or None) if sender else None,
        ),
        fetched_at=fetched_at,
        thread=references[0].strip("<>") if references else in_reply_to,
        in_reply_to=in_reply_to,
        language=(msg.headers.get("content-language") or (None,))[0],
        source_type=str(ctx.settings.get("source_type", "email")),
        raw=raw,
    )


class _Fetched(MailMessage):
    """A fetched message, or, with ``error`` set, one the ``email`` package could not build.

    imap-tools builds each message inside its fetch generator, outside our per-message ``try``: a
    message nested a thousand multiparts deep raised RecursionError there, which ended the
    generator and failed the whole chunk on every run. Built here, the error stays with that one
    message, which is quarantined with its raw bytes while the others are read.
    """

    def __init__(self, fetch_data: list[Any]) -> None:
        self.error: str | None = None
        self.raw = b""
        try:
            super().__init__(fetch_data)
        except Exception as exc:  # noqa: BLE001 - whatever the email package raises on this one
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.raw = next(
                (p[1] for p in fetch_data if isinstance(p, tuple) and isinstance(p[-1], bytes)),
                b"",
            )
            # An empty message in its place: the UID and flags come from the fetch response.
            self.obj = Message()


def _uid(msg: MailMessage) -> str | None:
    try:
        return msg.uid
    except Exception:  # noqa: BLE001 - a fetch response without a readable UID
        return None


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<?([^>\r\n]{1,500})", re.IGNORECASE | re.MULTILINE)


def _unbuilt(ctx: SourceContext, msg: _Fetched, uid: str) -> Rejected:
    """Quarantine a message that could not be built, keeping its raw bytes (capped)."""
    end = msg.raw.find(b"\r\n\r\n", 0, MAX_RAW_CHARS)
    head = msg.raw[: end if end >= 0 else MAX_RAW_CHARS]
    found = _MESSAGE_ID.search(head)
    message_id = found.group(1).decode("utf-8", "replace").strip() if found else None
    # Cut before decoding: the message may be megabytes; the copy keeps as much as any other.
    raw = msg.raw[:MAX_RAW_CHARS].decode("utf-8", "replace")
    return ctx.reject(f"message uid {uid} cannot be parsed: {msg.error}", raw, message_id)


def _fetch_messages(box: BaseMailBox, uids: list[int]) -> Iterator[MailMessage]:
    """Fetch whole messages a few per round trip.

    Bodies arrive with their attachments, so only ``BODY_CHUNK`` of them are held in memory at once.
    ``mark_seen=False`` fetches with ``BODY.PEEK``: nothing is marked before the batch is stored.
    Messages are built as :class:`_Fetched`, so one that cannot be built does not end the fetch.
    """
    box.email_message_class = _Fetched
    for start in range(0, len(uids), BODY_CHUNK):
        part = ",".join(str(u) for u in uids[start : start + BODY_CHUNK])
        yield from box.fetch(A(uid=part), mark_seen=False, bulk=True, charset=None)


def _mark_processed(box: BaseMailBox, uids: list[str], processed_folder: str | None) -> None:
    if not uids:
        return
    if processed_folder:
        box.move(uids, processed_folder)
    else:
        box.flag(uids, "\\Seen", True)


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Fetch messages with a UID above the cursor, in batches; mark each batch once it is stored.

    Args:
        ctx: The configured source.
        cursor: ``{"uidvalidity": int, "last_uid": int}`` from the last run, or None.

    Yields:
        Batches whose cursor is the highest UID they contain.
    """
    folder = str(ctx.settings.get("folder", "INBOX"))
    processed = ctx.settings.get("processed_folder") or None
    state = dict(cursor or {})
    box = _connect(ctx)
    try:
        if processed and not box.folder.exists(str(processed)):
            box.folder.create(str(processed))
        uidvalidity, uidnext = _select(ctx, box, folder)
        first_run = state.get("uidvalidity") is None
        last_uid = int(state.get("last_uid", 0))
        if state.get("uidvalidity") not in (None, uidvalidity):
            # The server renumbered the folder: old UIDs mean nothing now. Read it all again;
            # Message-ID based item ids keep what was stored from being stored twice.
            last_uid = 0
        if last_uid:
            # Stored by an earlier run that stopped before marking them: mark them now.
            stored = A(uid=f"1:{last_uid}") if processed else A(uid=f"1:{last_uid}", seen=False)
            pending = [u for u in box.uids(stored, charset=None) if u and int(u) <= last_uid]
            _mark_processed(box, pending, processed)
            criteria: Any = A(uid=f"{last_uid + 1}:*")
        elif first_run:
            days = float(ctx.settings.get("backfill_days", 30))
            since = (datetime.now(UTC) - timedelta(days=days)).date()
            criteria = A(date_gte=since)
        else:
            criteria = "ALL"
        # "N:*" always matches the newest message even when its UID is below N (RFC 3501).
        uids = sorted(int(u) for u in box.uids(criteria, charset=None) if u and int(u) > last_uid)
        if not uids:
            if state.get("uidvalidity") != uidvalidity:
                # On a first run, whatever is there is older than the backfill window: start
                # after it, or the next run (no longer a first run) would read it all.
                start_after = uidnext - 1 if first_run else last_uid
                yield FetchBatch(cursor={"uidvalidity": uidvalidity, "last_uid": start_after})
            return
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = uids[start : start + FETCH_CHUNK]
            fetched_at = datetime.now(UTC)
            batch = FetchBatch()
            seen: list[str] = []
            for msg in _fetch_messages(box, chunk):
                uid = _uid(msg)
                if not uid:
                    continue
                seen.append(uid)
                if isinstance(msg, _Fetched) and msg.error is not None:
                    batch.rejected.append(_unbuilt(ctx, msg, uid))
                    continue
                try:
                    batch.mentions.append(to_mention(ctx, msg, uidvalidity, folder, fetched_at))
                except InvalidRecord as exc:
                    batch.rejected.append(_reject(ctx, msg, str(exc)))
                except Exception as exc:  # noqa: BLE001 - one broken message must not stop the mailbox
                    batch.rejected.append(
                        _reject(ctx, msg, f"cannot parse message: {type(exc).__name__}: {exc}")
                    )
            batch.cursor = {"uidvalidity": uidvalidity, "last_uid": chunk[-1]}
            yield batch
            # The consumer asks for the next batch only after storing this one (cursor included).
            _mark_processed(box, seen, processed)
    except OSError as exc:
        raise ConnectorError(f"source '{ctx.name}': IMAP connection lost: {exc}") from exc
    except ImapToolsError as exc:
        raise ConnectorError(f"source '{ctx.name}': IMAP command failed: {exc}") from exc
    finally:
        _logout(box)


def _reject(ctx: SourceContext, msg: MailMessage, reason: str) -> Rejected:
    try:
        head = {k: _short(" ".join(v)) for k, v in msg.headers.items()}
    except Exception:  # noqa: BLE001 - headers so broken they cannot be listed: keep the UID
        head = {}
    raw = {"uid": msg.uid, "headers": head}
    message_id = (head.get("message-id") or "").strip().strip("<>")
    return ctx.reject(reason, raw, message_id)
