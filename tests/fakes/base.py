"""The common part of the local fake APIs: a threaded HTTP server, a call log, injected failures.

Each fake (``tests/fakes/<api>.py``) subclasses :class:`FakeApi` and implements :meth:`route`,
answering with the real API's documented JSON shapes and checking auth and limits as it does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body decoded as JSON (None when empty or invalid)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def form(self) -> dict[str, str]:
        """The body decoded as a form."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Failure:
    """An injected failure: status 0 stalls (no answer) until the next request, at most
    ``retry_after`` seconds (a timeout)."""

    status: int
    retry_after: float
    path: str | None


@dataclass
class FakeApi:
    """Base of every fake: subclasses implement :meth:`route` (and may override the 429 body)."""

    calls: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # A status returned to every request (an outage); None: serve normally.
    down: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set by every request and by stop(): it ends a stall (see the handler).
    next_request: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ test controls
    def fail_next(
        self, status: int = 429, retry_after: float = 0, times: int = 1, path: str | None = None
    ) -> None:
        """Answer the next ``times`` requests (to ``path`` when given) with ``status``."""
        with self.lock:
            self.failures.extend(Failure(status, retry_after, path) for _ in range(times))

    def served(self, path_part: str = "") -> list[Request]:
        """Requests answered with a 2xx whose path contains ``path_part``."""
        return [c for c in self.calls if path_part in c.path and 200 <= c.status < 300]

    def statuses(self) -> list[int]:
        """The status of every request so far, in order."""
        return [c.status for c in self.calls]

    # ------------------------------------------------------------ for subclasses
    def route(self, req: Request) -> Reply:
        """Answer one request that passed the injected failures."""
        raise NotImplementedError

    def rate_limited(self, failure: Failure) -> Reply:
        """The API's own 429 answer."""
        return 429, {"error": "rate limited"}, {"Retry-After": str(int(failure.retry_after))}

    def server_error(self, status: int) -> Reply:
        """The API's own 5xx answer."""
        return status, {"error": "internal error"}, {}

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FakeApi:
        """Serve on 127.0.0.1 at a random port in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        """Shut the server down."""
        self.next_request.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(state: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            if not any(k.lower() == "content-type" for k in headers):
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(
                method=self.command,
                path=parsed.path,
                query=parse_qs(parsed.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            with state.lock:
                state.calls.append(req)
                failure = next(
                    (f for f in state.failures if f.path is None or f.path in req.path), None
                )
                if failure:
                    state.failures.remove(failure)
            state.next_request.set()  # ends an earlier stall: its client has moved on
            if failure and failure.status == 0:
                req.status = 599
                # A stall: no answer until the client has given up and sent its next request (or
                # the fake stops), at most retry_after seconds. Never a race with the client's
                # timeout, however loaded the machine: the answer never comes before it.
                state.next_request.clear()
                state.next_request.wait(failure.retry_after)
                return
            if failure:
                status, body, headers = (
                    state.rate_limited(failure)
                    if failure.status == 429
                    else state.server_error(failure.status)
                )
            elif state.down is not None:
                status, body, headers = state.server_error(state.down)
            else:
                with state.lock:
                    status, body, headers = state.route(req)
            req.status = status
            self._reply(status, body, headers)

        do_GET = _serve
        do_POST = _serve

    return Handler
