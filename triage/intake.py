"""Web-form intake: an HTTP endpoint that accepts signed JSON posts and spools them durably.

The server never opens the DuckDB file: a long-lived process holding it would block every
``triage run`` (one writing process per file). Each accepted post is appended as one JSON line to
``<spool_dir>/intake-YYYYMMDD.jsonl`` and fsynced before the 202 goes out; the ``webhook`` source
reads those files incrementally, like any file drop.

Authentication: ``X-Triage-Signature: sha256=<hex>`` is the HMAC-SHA256, keyed with the shared
secret, of ``<X-Triage-Timestamp>.<raw body>``. Signing the timestamp together with the body is what
makes the 5-minute replay window hold: a captured request cannot be re-sent later with a fresh
timestamp. A replay inside the window gets the same item id and is absorbed by the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from triage.models import MAX_TEXT_CHARS

log = logging.getLogger("triage.intake")

DEFAULT_MAX_BYTES = 64 * 1024
REPLAY_WINDOW_S = 300
SIGNATURE_HEADER = "X-Triage-Signature"
TIMESTAMP_HEADER = "X-Triage-Timestamp"
SECRET_ENV = "TRIAGE_INTAKE_SECRET"
SECRET_BLOCK = "triage-intake-secret"
TEXT_FIELDS = ("text", "message", "body", "comment", "feedback")
# Longest client-chosen id we accept; ids are keys, not payload.
MAX_ID_CHARS = 200


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the signature header value a client sends for ``body`` at ``timestamp``.

    Args:
        secret: The shared secret.
        timestamp: Unix seconds as sent in ``X-Triage-Timestamp``.
        body: The exact request body bytes.

    Returns:
        ``sha256=<hex>``.
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Spool:
    """Append-only daily JSONL files; each append is fsynced before it returns."""

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

    def append(self, record: dict[str, Any], when: datetime) -> Path:
        """Write one record as one line and make it durable.

        Args:
            record: The JSON-serialisable record.
            when: The receive time (chooses the day file).

        Returns:
            The file written.
        """
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        path = self.path_for(when)
        with self._lock:
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                size = os.fstat(fd).st_size
                if size:
                    # A crash mid-write can leave a last line without its newline; end it first so
                    # this record is not glued onto it (the torn line then goes to quarantine).
                    with open(path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                # A new file's directory entry must be durable too, or the file can vanish.
                dfd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        return path


@dataclass(slots=True)
class IntakeSettings:
    """Server settings."""

    secret: str
    spool_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    replay_window_s: int = REPLAY_WINDOW_S
    source_type: str = "web_form"
    clock: Any = field(default=time.time)


class IntakeError(Exception):
    """A request to refuse: HTTP status and a reason for the client."""

    def __init__(self, status: int, reason: str) -> None:
        """Keep the status and the reason."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
    if not timestamp.isdigit():
        raise IntakeError(401, f"{TIMESTAMP_HEADER} must be Unix seconds")
    if abs(settings.clock() - int(timestamp)) > settings.replay_window_s:
        raise IntakeError(401, "timestamp outside the allowed window (replayed or clock skew)")
    expected = sign(settings.secret, timestamp, body)
    # Constant-time comparison: the signature must not leak through response timing.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise IntakeError(401, "signature does not match")


def validate(settings: IntakeSettings, body: bytes, timestamp: str) -> dict[str, Any]:
    """Decode and check a post; return the record to spool.

    Hard errors (not JSON, not an object, no usable text, a bad id) are refused with 400 so the form
    can tell its user. Fields we merely cannot interpret (a date in an odd format) are kept as sent:
    the record is spooled and the ``webhook`` source quarantines it with the reason.

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
        record = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntakeError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise IntakeError(400, f"body must be a JSON object, not {type(record).__name__}")
    text_key = next((k for k in TEXT_FIELDS if k in record), None)
    if text_key is None:
        raise IntakeError(400, f"a text field is required (one of: {', '.join(TEXT_FIELDS)})")
    text = record[text_key]
    if not isinstance(text, str) or not text.strip():
        raise IntakeError(400, f"'{text_key}' must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS * 4:
        raise IntakeError(400, f"'{text_key}' is longer than {MAX_TEXT_CHARS * 4} characters")
    client_id = record.get("id")
    if client_id is not None and (
        not isinstance(client_id, str | int) or not str(client_id).strip()
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
    return out


def make_handler(settings: IntakeSettings, spool: Spool) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to these settings and spool."""

    class IntakeHandler(BaseHTTPRequestHandler):
        server_version = "triage-intake/1"
        # Slow or stalled clients must not pin a thread forever.
        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            # Access log without bodies or headers: posts are untrusted and may hold personal data.
            log.info("%s %s", self.address_string(), format % args)

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                record_id = self._accept()
            except IntakeError as exc:
                self._reply(exc.status, {"error": exc.reason})
                return
            self._reply(202, {"status": "accepted", "id": record_id})

        def _accept(self) -> str:
            if self.path.split("?")[0] != "/intake":
                raise IntakeError(404, "not found (post to /intake)")
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                raise IntakeError(411, "Content-Length is required")
            try:
                length = int(length_header)
            except ValueError:
                raise IntakeError(400, "Content-Length is not a number") from None
            if length < 0:
                raise IntakeError(400, "Content-Length is negative")
            if length > settings.max_bytes:
                # Refused before reading: an oversized body never reaches memory.
                raise IntakeError(413, f"body larger than {settings.max_bytes} bytes")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise IntakeError(415, "Content-Type must be application/json")
            body = self.rfile.read(length)
            if len(body) != length:
                raise IntakeError(400, "body shorter than Content-Length")
            verify(settings, self.headers, body)
            record = validate(settings, body, self.headers[TIMESTAMP_HEADER].strip())
            spool.append(record, datetime.fromtimestamp(settings.clock(), tz=UTC))
            return str(record["id"])

    return IntakeHandler


def make_server(settings: IntakeSettings, host: str, port: int) -> ThreadingHTTPServer:
    """Create (not start) the intake server.

    Args:
        settings: Secret, spool folder, limits.
        host: Address to bind (127.0.0.1 by default in the CLI; put a TLS proxy in front).
        port: Port to bind; 0 picks a free one.

    Returns:
        The server; call ``serve_forever()``.
    """
    if not settings.secret:
        raise ValueError(f"no intake secret: set {SECRET_ENV} or the Secret block {SECRET_BLOCK}")
    spool = Spool(settings.spool_dir)
    server = ThreadingHTTPServer((host, port), make_handler(settings, spool))
    server.daemon_threads = True
    return server
