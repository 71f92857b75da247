"""Web-form intake: an HTTP endpoint that accepts signed JSON posts and stores or spools them.

The server never opens the DuckDB file: a long-lived process holding it would block every
``triage run`` (one writing process per file). Each accepted post is appended as one JSON line to
``<spool_dir>/intake-YYYYMMDD.jsonl`` and fsynced before the 202 goes out; the ``webhook`` source
reads those files incrementally, like any file drop. On a PostgreSQL store the post is written to
the store directly instead (:mod:`triage.servers.intake_store`), and spooled only when that fails
or takes too long.

Authentication: ``X-Triage-Signature: sha256=<hex>`` is the HMAC-SHA256, keyed with the shared
secret, of ``<X-Triage-Timestamp>.<raw body>``. Signing the timestamp together with the body is what
makes the 5-minute replay window hold: a captured request cannot be re-sent later with a fresh
timestamp. A replay inside the window gets the same item id and is absorbed by the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.file import DEFAULT_MAX_RECORD_BYTES
from connectors.records import decode_json, mention_from_record
from triage.models import InvalidRecord
from triage.secrets import block_name
from triage.servers.http import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    BoundedHandler,
    BoundedHTTPServer,
    RequestError,
)
from triage.servers.intake_store import DirectWriter
from triage.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from triage.spool import JsonlSpool

log = logging.getLogger("triage.intake")

DEFAULT_MAX_BYTES = 64 * 1024
REPLAY_WINDOW_S = 300
SECRET_ENV = "TRIAGE_INTAKE_SECRET"
SECRET_BLOCK = block_name(SECRET_ENV)  # triage-intake-secret
# Longest client-chosen id we accept; ids are keys, not payload.
MAX_ID_CHARS = 200
# Unix seconds in ASCII digits only (str.isdigit() would also take "²" or "١٢").
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
# The `webhook` source reads what the intake spools; the intake's record name in checks.
_CHECK_SOURCE = "intake"

# A refusal: HTTP status and reason (kept under its old name for callers of this module).
IntakeError = RequestError


class Spool:
    """Append-only daily JSONL files (:mod:`triage.spool`); each append is fsynced first."""

    def __init__(self, directory: Path) -> None:
        """Create the spool folder if needed.

        Args:
            directory: Where the ``intake-YYYYMMDD.jsonl`` files live.
        """
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path_for(self, when: datetime) -> Path:
        """The spool file for a UTC day."""
        return self.directory / f"intake-{when:%Y%m%d}.jsonl"

    def append(self, line: bytes, when: datetime) -> Path:
        """Write one record line (see :func:`spool_line`) and make it durable.

        Args:
            line: The record as one JSON line, newline included.
            when: The receive time (chooses the day file).

        Returns:
            The file written.
        """
        path = self.path_for(when)
        # One writer (this server); the `webhook` source reads by byte offset without a lock.
        with self._lock:
            JsonlSpool(path).append(line)
        return path


def spool_line(record: dict[str, Any]) -> bytes:
    """The spool line of a record: one compact JSON object and its newline."""
    return orjson.dumps(record) + b"\n"


@dataclass(slots=True)
class IntakeSettings:
    """Server settings."""

    secret: str
    spool_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    replay_window_s: int = REPLAY_WINDOW_S
    source_type: str = "web_form"
    clock: Any = field(default=time.time)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    # The longest spool line the `webhook` source reading the spool takes; longer posts get 413.
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    # Writes posts to a server store before the 202 (None: spool every post).
    direct: DirectWriter | None = None


def verify(settings: IntakeSettings, headers: Any, body: bytes) -> None:
    """Check the timestamp window and the signature.

    Args:
        settings: The server settings (secret, window, clock).
        headers: The request headers (case-insensitive mapping).
        body: The raw body.

    Raises:
        IntakeError: 401 with the reason when either check fails.
    """
    timestamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
    signature = (headers.get(SIGNATURE_HEADER) or "").strip()
    if not timestamp or not signature:
        raise IntakeError(401, f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise IntakeError(401, f"{TIMESTAMP_HEADER} must be Unix seconds (ASCII digits)")
    if not _SIGNATURE.fullmatch(signature):
        raise IntakeError(401, f"{SIGNATURE_HEADER} must be sha256=<64 lowercase hex digits>")
    if abs(settings.clock() - int(timestamp)) > settings.replay_window_s:
        raise IntakeError(401, "timestamp outside the allowed window (replayed or clock skew)")
    expected = sign(settings.secret, timestamp, body)
    # Constant-time comparison: the signature must not leak through response timing.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise IntakeError(401, "signature does not match")


def validate(settings: IntakeSettings, body: bytes, timestamp: str) -> dict[str, Any]:
    """Decode and check a post; return the record to spool.

    The accepted shape is the ``webhook`` source's own: the record is decoded as the source
    decodes spool lines (orjson) and checked by the same function the source uses
    (:func:`connectors.records.mention_from_record`), so whatever the source would quarantine
    (no usable text, a text that is not a string, an unreadable or out-of-range ``created_at``)
    is refused here with 400 and the reason, and the form can tell its user.

    Args:
        settings: The server settings.
        body: The raw body.
        timestamp: The signed timestamp (part of the derived id).

    Returns:
        The record: the client's fields plus ``id``, ``received_at`` and defaults.

    Raises:
        IntakeError: 400 with the reason.
    """
    try:
        record = decode_json(body)
    except InvalidRecord as exc:
        why = str(exc).removeprefix("invalid JSON: ")
        raise IntakeError(400, f"body is not valid JSON: {why}") from None
    if not isinstance(record, dict):
        raise IntakeError(400, f"body must be a JSON object, not {type(record).__name__}")
    client_id = record.get("id")
    if client_id is not None and (
        isinstance(client_id, bool)
        or not isinstance(client_id, str | int)
        or not str(client_id).strip()
    ):
        raise IntakeError(400, "'id' must be a non-empty string or number when given")
    if client_id is not None and len(str(client_id)) > MAX_ID_CHARS:
        raise IntakeError(400, f"'id' is longer than {MAX_ID_CHARS} characters")
    received = datetime.fromtimestamp(settings.clock(), tz=UTC)
    out = dict(record)
    # Without a client id, the id is derived from what was signed: a retried (replayed) delivery
    # of the same request maps to the same item instead of a second one.
    out["id"] = (
        str(client_id)
        if client_id is not None
        else "form-" + hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()[:32]
    )
    out["received_at"] = received.isoformat()
    out.setdefault("created_at", received.isoformat())
    out.setdefault("channel", settings.source_type)
    try:
        mention_from_record(
            _CHECK_SOURCE, out, fetched_at=received, default_source_type=settings.source_type
        )
    except InvalidRecord as exc:
        raise IntakeError(400, str(exc)) from None
    return out


def make_handler(settings: IntakeSettings, spool: Spool) -> type[BoundedHandler]:
    """Build the request handler class bound to these settings and spool."""

    class IntakeHandler(BoundedHandler):
        server_version = "triage-intake/1"

        def log_message(self, format: str, *args: Any) -> None:
            # Access log without bodies or headers: posts are untrusted and may hold personal data.
            log.info("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self.reply_json(200, {"status": "ok"})
            else:
                self.reply_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                record_id = self._accept()
            except RequestError as exc:
                retry = {"Retry-After": "30"} if exc.status == 503 else None
                self.reply_json(exc.status, {"error": exc.reason}, retry)
                return
            self.reply_json(202, {"status": "accepted", "id": record_id})

        def _accept(self) -> str:
            if self.path.split("?")[0] != "/intake":
                raise IntakeError(404, "not found (post to /intake)")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise IntakeError(415, "Content-Type must be application/json")
            # The timestamp's form is checked before the body is read or any HMAC computed.
            stamp = (self.headers.get(TIMESTAMP_HEADER) or "").strip()
            if stamp and not _TIMESTAMP.fullmatch(stamp):
                raise IntakeError(401, f"{TIMESTAMP_HEADER} must be Unix seconds (ASCII digits)")
            # Refused before reading when too large: an oversized body never reaches memory.
            body = self.read_body(settings.max_bytes)
            verify(settings, self.headers, body)
            record = validate(settings, body, stamp)
            try:
                line = spool_line(record)
            except orjson.JSONEncodeError as exc:
                # orjson reads 1,024 levels of nesting but writes only about 254: a record it
                # cannot write is refused as the client's, not answered with a 500.
                raise IntakeError(400, f"body cannot be stored: {exc}") from None
            if len(line) > settings.max_record_bytes:
                raise IntakeError(
                    413,
                    f"record longer than the webhook source reads (its max_record_bytes, "
                    f"{settings.max_record_bytes})",
                )
            received = datetime.fromtimestamp(settings.clock(), tz=UTC)
            record_id = str(record["id"])
            direct = settings.direct
            if direct is None or not direct.write(line, received, record_id, self.time_left()):
                try:
                    spool.append(line, received)
                except OSError as exc:
                    # A full or read-only disk is ours to fix, not the client's: 503 says "retry
                    # later", and the append wrote all of the post or none of it.
                    log.error("post %s could not be spooled: %s", record_id, exc)
                    raise IntakeError(503, "the post could not be stored; retry later") from None
            return record_id

    return IntakeHandler


def make_server(settings: IntakeSettings, host: str, port: int) -> BoundedHTTPServer:
    """Create (not start) the intake server.

    Args:
        settings: Secret, spool folder, limits (body size, connections, request deadline).
        host: Address to bind (127.0.0.1 by default in the CLI; put a TLS proxy in front).
        port: Port to bind; 0 picks a free one.

    Returns:
        The server; call ``serve_forever()``.
    """
    if not settings.secret:
        raise ValueError(f"no intake secret: set {SECRET_ENV} or the Secret block {SECRET_BLOCK}")
    spool = Spool(settings.spool_dir)
    return IntakeServer(
        (host, port),
        make_handler(settings, spool),
        max_connections=settings.max_connections,
        request_timeout=settings.request_timeout,
        direct=settings.direct,
    )


class IntakeServer(BoundedHTTPServer):
    """The bounded server, closing the direct writer (if any) with itself."""

    def __init__(self, *args: Any, direct: DirectWriter | None = None, **kwargs: Any) -> None:
        """Create the server; ``direct`` is closed by :meth:`server_close`."""
        # Set before binding: a failed bind calls server_close() inside super().__init__.
        self.direct = direct
        super().__init__(*args, **kwargs)

    def server_close(self) -> None:
        """Close the socket and stop the direct writer's threads."""
        super().server_close()
        if self.direct is not None:
            self.direct.close()
