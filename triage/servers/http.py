"""The bounded HTTP server of both endpoints: every connection gets an answer, in bounded time.

The standard library's ``ThreadingHTTPServer`` is enough for our two endpoints (the web-form
intake, the Slack review app) but, as it comes, a slow client holds a thread for as long as it
likes, any number of connections start a thread each, a read timeout drops the connection without
an answer, a bad ``Content-Length`` gets a traceback or nothing, and an exception in a handler
closes the socket silently. This module adds, for any handler built on :class:`BoundedHandler`:

* one deadline per request (request line, headers and body together), answered ``408``;
* a cap on concurrent connections; the ones over it get the handler's ``busy_status`` (429 for
  the intake, 503 for Slack) with ``Retry-After`` from a small pool of refusers, and beyond that
  are closed at once;
* strict ``Content-Length`` handling (:meth:`BoundedHandler.read_body`) with 411/400/413 answers;
* protocol errors the standard library answers with 5xx (unknown method, HTTP version) as 4xx,
  and an unexpected exception as a logged ``500`` instead of a dropped connection;
* a lingering close, so a client that is still sending when it is refused reads the answer
  instead of a connection reset.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("triage.servers")

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_REQUEST_TIMEOUT = 10.0
# After answering, what a client still sends is read and dropped for at most this long (and this
# much), so that closing the socket does not reset the connection before the answer is read.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
# Request headers in all (after the request line). Slack's and a web form's are 1-3 KB; the
# standard library alone allows 100 lines of 64 KiB each.
MAX_HEAD_BYTES = 32 * 1024
# At most 18 digits: a longer number is no length at all (400), a shorter one too large is 413.
_DIGITS = re.compile(r"[0-9]{1,18}")


class RequestError(Exception):
    """A request to refuse: the HTTP status and a reason for the client."""

    def __init__(self, status: int, reason: str) -> None:
        """Keep the status and the reason."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _DeadlineSocket(io.RawIOBase):
    """The connection's input with one deadline for the whole request.

    The deadline is applied to every ``recv``, below the buffered reader: one ``readline`` or
    ``read`` of the buffered reader may call ``recv`` many times, and a client that sends a byte
    every few seconds would otherwise get the whole time left on each call and hold its thread
    for as long as it likes.
    """

    def __init__(self, sock: socket.socket, handler: BoundedHandler) -> None:
        super().__init__()
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            self._handler.timed_out = True
            raise TimeoutError("the request was not received in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self._handler.timed_out = True
            raise


class _HeadBudget:
    """The connection's input while headers are read: lines until a total is spent, then 431.

    ``http.client.parse_headers`` reads only ``readline``; its ``LineTooLong`` is answered 431
    by the standard library's ``parse_request``.
    """

    def __init__(self, rfile: io.BufferedIOBase, budget: int) -> None:
        self._rfile = rfile
        self._left = budget

    def readline(self, limit: int = -1) -> bytes:
        cap = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = self._rfile.readline(cap)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong(f"request headers over {MAX_HEAD_BYTES} bytes")
        return line


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler whose reads share one deadline and whose every request gets an answer.

    Subclasses implement ``do_GET``/``do_POST`` as usual and read bodies with :meth:`read_body`.
    """

    # Set per server by BoundedHTTPServer; the class default is for handlers used elsewhere.
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    timeout = DEFAULT_REQUEST_TIMEOUT
    # The answer to a connection over the server's cap (with Retry-After: 1).
    busy_status = 429
    # False: a request without Content-Length has an empty body (Slack always sends one).
    length_required = True

    def setup(self) -> None:
        """Wrap the input stream with the request's deadline."""
        super().setup()
        self.timed_out = False
        self.answered = False
        # What the access log and the answer read; a request line not received in time sets none.
        self.requestline = ""
        self.command = ""
        budget = getattr(self.server, "request_timeout", self.request_timeout)
        self.request_timeout = float(budget)
        deadline = time.monotonic() + self.request_timeout
        self.deadline = deadline
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineSocket(self.connection, self))

    def parse_request(self) -> bool:
        """Parse the request line and headers, the headers at most ``MAX_HEAD_BYTES`` in all.

        The standard library's own limits (100 lines of 64 KiB) let one connection hold 6.5 MB
        of headers, and the cap's 64 connections 400 MB; what is over the budget is a 431.
        """
        rfile = self.rfile
        self.rfile = _HeadBudget(rfile, MAX_HEAD_BYTES)  # type: ignore[assignment]
        try:
            return super().parse_request()
        finally:
            self.rfile = rfile

    def time_left(self) -> float:
        """Seconds left of this request's deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def send_response(self, code: int, message: str | None = None) -> None:
        """Start the answer; writes get their own timeout (the read deadline may be spent)."""
        self.answered = True
        # The standard library answers an unparsable request line HTTP/0.9-style, without a
        # status line; no client of ours speaks 0.9, so every answer gets one.
        self.request_version = "HTTP/1.0"
        self.connection.settimeout(self.request_timeout)
        super().send_response(code, message)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol errors as 4xx: an unknown method is 405, a bad HTTP version 400."""
        if code == 501:
            code, message = 405, message or "method not allowed"
        elif code >= 500:
            code = 400
        super().send_error(code, message, explain)

    def handle_one_request(self) -> None:
        """Handle one request; a timeout is answered 408 and an unexpected error 500."""
        try:
            super().handle_one_request()
        except ConnectionError as exc:
            # The client went away (reset, broken pipe): nobody to answer, nothing to fix here,
            # and a traceback per dropped client would let anyone fill the log.
            log.info("client %s went away: %s", self.address_string(), exc)
            self.close_connection = True
            return
        except Exception:
            log.exception(
                "unexpected error answering %s", getattr(self, "requestline", "") or "a request"
            )
            self.close_connection = True
            if not self.answered:
                self._answer_plain(500, "internal error")
            return
        if self.timed_out and not self.answered:
            self._answer_plain(408, "request not received in time")

    def _answer_plain(self, status: int, reason: str) -> None:
        self.reply_json(status, {"error": reason})

    def reply_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Send a JSON answer and close the connection after it."""
        self.answer(status, json.dumps(payload), {"Content-Type": "application/json", **(headers or {})})

    def answer(
        self, status: int, body: str | bytes, headers: dict[str, Any] | None = None
    ) -> None:
        """Send a complete answer (``text/plain`` unless a Content-Type is given) and close.

        Header values may be lists (Bolt's responses carry them so).
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.close_connection = True
        try:
            self.send_response(status)
            has_type = False
            for name, value in (headers or {}).items():
                if name.lower() == "content-length":
                    continue
                has_type = has_type or name.lower() == "content-type"
                for v in value if isinstance(value, list | tuple) else [value]:
                    self.send_header(name, str(v))
            if not has_type:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            pass  # the client went away: nothing to answer to

    def read_body(self, max_bytes: int) -> bytes:
        """Read the request body announced by ``Content-Length``, strictly.

        Args:
            max_bytes: The largest body accepted; a larger one is refused before it is read.

        Returns:
            Exactly the body bytes.

        Raises:
            RequestError: 411 without a length, 400 for a malformed, repeated or contradicted
                length or a short body, 413 over ``max_bytes``.
        """
        values = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding"):
            # Both framings in one request is how requests are smuggled past proxies.
            if values:
                raise RequestError(400, "Content-Length and Transfer-Encoding together")
            raise RequestError(411, "Content-Length is required (chunked bodies are not accepted)")
        if not values:
            if not self.length_required:
                return b""
            raise RequestError(411, "Content-Length is required")
        if len({v.strip() for v in values}) > 1:
            raise RequestError(400, "conflicting Content-Length headers")
        text = values[0].strip()
        # Only ASCII digits: int() would also take "+5", "1_000", " ٣" or "-1".
        if not _DIGITS.fullmatch(text):
            raise RequestError(400, "Content-Length is not a non-negative whole number")
        length = int(text)
        if length > max_bytes:
            raise RequestError(413, f"body larger than {max_bytes} bytes")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise RequestError(400, "body shorter than Content-Length")
        return body


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a connection cap, a request deadline and a lingering close."""

    daemon_threads = True
    # The kernel's queue of connections not yet accepted (the standard library's 5 resets a burst
    # of a few dozen clients before the cap below can answer them).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedHandler],
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        """Bind the server.

        Args:
            address: ``(host, port)``; port 0 picks a free one.
            handler: The request handler class.
            max_connections: Connections served at once; more get the handler's
                ``busy_status`` (Retry-After: 1).
            request_timeout: Seconds a client has to send one whole request; then 408.
        """
        if max_connections < 1 or request_timeout <= 0:
            raise ValueError("max_connections must be >= 1 and request_timeout > 0")
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.busy_status = handler.busy_status
        self._slots = threading.BoundedSemaphore(max_connections)
        # Refusing politely takes a thread too (read the head, answer, linger); bound those as well.
        self._refusers = threading.BoundedSemaphore(max(2, max_connections // 4))
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread if there is a free slot; else refuse it."""
        if self._slots.acquire(blocking=False):
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._slots.release()
                raise
        elif self._refusers.acquire(blocking=False):
            threading.Thread(target=self._refuse, args=(request,), daemon=True).start()
        else:
            # Far over the cap: no thread to spare, close at once. Not with the lingering close:
            # that waits on this, the accepting thread, up to a second per connection, and a few
            # dozen silent connections would hold every client after them for as many seconds.
            self.close_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            # One short deadline for the whole head, not per recv: a client trickling a byte
            # at a time would otherwise keep a refuser, and soon all of them, busy.
            deadline = time.monotonic() + min(1.0, self.request_timeout)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    request.settimeout(left)
                    chunk = request.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            except OSError:
                pass
            body = b'{"error": "too many connections; retry shortly"}'
            status = self.busy_status
            reason = HTTPStatus(status).phrase
            request.sendall(
                f"HTTP/1.0 {status} {reason}\r\nRetry-After: 1\r\n".encode()
                + b"Content-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusers.release()

    def shutdown_request(self, request: Any) -> None:
        """Close after the answer without resetting a client that is still sending."""
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES and time.monotonic() < deadline:
                data = request.recv(65536)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass
        self.close_request(request)
