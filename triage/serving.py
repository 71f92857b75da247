"""A bounded HTTP server for the project's endpoints: every request gets an answer, in bounded time.

``http.server`` as it comes waits forever on a client that announces a body and never sends it,
starts a thread for every connection, and answers a bad ``Content-Length`` with a traceback or
nothing. :class:`BoundedHTTPServer` caps concurrent connections (one over the cap is answered 503
at once), gives every connection a read deadline (answered 408), and :func:`read_body` turns any
unusable ``Content-Length`` into a 4xx before a byte of the body is read. Handlers derive from
:class:`BoundedHandler`, which also answers unknown methods 405 instead of 501.
"""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A connection must deliver its request line, headers and body within this many seconds.
READ_DEADLINE_S = 10.0
# Each read from the socket waits at most this long (a stalled client is cut off earlier).
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64
_DIGITS = re.compile(r"^[0-9]{1,18}$")


class HTTPProblem(Exception):
    """An answer to send instead of handling the request (a 4xx with a reason)."""

    def __init__(self, status: int, reason: str) -> None:
        """``status`` is the HTTP status to answer, ``reason`` its one-line explanation."""
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _raw_answer(sock: socket.socket, status: int, reason: str) -> None:
    body = reason.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    try:
        sock.sendall((head + "\r\n").encode() + body)
    except OSError:
        pass  # the client is gone already


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a connection cap and a per-connection read deadline."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_deadline: float = READ_DEADLINE_S,
    ) -> None:
        """Bind ``address`` (port 0 picks a free one)."""
        super().__init__(address, handler)
        self.read_deadline = read_deadline
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._timers: dict[int, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread, or answer 503 at once when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            _raw_answer(request, 503, "Service Unavailable")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one connection under the read deadline; always free its slot."""
        timer = threading.Timer(self.read_deadline, self._expire, args=(request,))
        timer.daemon = True
        with self._timers_lock:
            self._timers[id(request)] = timer
        timer.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.done_reading(request)
            self._slots.release()

    def done_reading(self, request: Any) -> None:
        """The request is read: from here on the deadline no longer applies (the handler works)."""
        with self._timers_lock:
            timer = self._timers.pop(id(request), None)
        if timer is not None:
            timer.cancel()

    def _expire(self, request: socket.socket) -> None:
        with self._timers_lock:
            if self._timers.pop(id(request), None) is None:
                return  # finished reading just now
        _raw_answer(request, 408, "Request Timeout")
        try:
            request.shutdown(socket.SHUT_RDWR)  # wakes the handler's blocked read
        except OSError:
            pass


class BoundedHandler(BaseHTTPRequestHandler):
    """Base handler: socket read timeout, 405 for unknown methods, and safe answers."""

    timeout = READ_TIMEOUT_S
    server: BoundedHTTPServer
    max_body = 1_000_000

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method it has no do_X for with 501 (a server error); a method we
        # do not serve is the client's mistake: 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self.answer(405, "method not allowed", {"Allow": "GET, POST"})

    def answer(self, status: int, body: str | bytes, headers: dict[str, Any] | None = None) -> None:
        """Send a complete answer; a client that went away is not an error."""
        data = body.encode("utf-8") if isinstance(body, str) else body
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
            pass
        self.close_connection = True

    def read_body(self) -> bytes:
        """Read the request body announced by ``Content-Length``, within the read deadline.

        Raises:
            HTTPProblem: 411 for a chunked body, 400 for a ``Content-Length`` that is not one
                non-negative number or a body shorter than announced, 413 above ``max_body``,
                408 when the client stops sending.
        """
        if self.headers.get("Transfer-Encoding"):
            raise HTTPProblem(411, "length required (chunked bodies are not accepted)")
        values = self.headers.get_all("Content-Length") or []
        if len(set(values)) > 1:
            raise HTTPProblem(400, "conflicting Content-Length headers")
        raw = values[0].strip() if values else "0"
        if not _DIGITS.match(raw):
            raise HTTPProblem(400, "Content-Length must be a non-negative number")
        length = int(raw)
        if length > self.max_body:
            raise HTTPProblem(413, "payload too large")
        try:
            data = self.rfile.read(length) if length else b""
        except (TimeoutError, OSError) as exc:
            raise HTTPProblem(408, "request timeout") from exc
        finally:
            self.server.done_reading(self.request)
        if len(data) != length:
            raise HTTPProblem(400, "body shorter than Content-Length")
        return data
