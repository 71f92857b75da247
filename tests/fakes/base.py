"""The one base of the local fake servers: plumbing, a call log and injected failures.

* :class:`LocalServer` is the plumbing every fake shares (Slack's too): a threaded ``http.server`` on
  127.0.0.1 at a random port, serving in a daemon thread, that releases stalled requests when it
  shuts down.
* :class:`Served` gives a fake ``start``/``stop`` and ``with`` around its own request handler (the
  feed publisher, whose answers are XML with validators, uses only this).
* :class:`FakeApi` is the base of the JSON API fakes (``tests/fakes/<api>.py``): each implements
  :meth:`FakeApi.route` with the real API's documented JSON shapes, checks credentials in
  :meth:`FakeApi.authorized` or in ``route``, and may answer injected failures in its API's own
  words (:meth:`FakeApi.rate_limited`, :meth:`FakeApi.server_error`).

Injected failures (:meth:`FakeApi.fail_next`): a 429 with ``Retry-After``, a 5xx, any status, an
outage (``down``), or a stall (status 0): the server acts on the request and then withholds the
answer until the client has given up and sent its next request (or the fake stops), the case
idempotency keys exist for. The answer never comes before the client's timeout, however loaded
the machine is: there is no race with a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlparse

# A stall ends when the client's next request arrives or the fake stops; this only caps it.
STALL_CAP_S = 60.0


class LocalServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 at a random port, already serving in a daemon thread."""

    daemon_threads = True

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], on_shutdown: Callable[[], None] | None = None
    ) -> None:
        """Bind and start serving; ``on_shutdown`` releases the fake's stalled requests."""
        super().__init__(("127.0.0.1", 0), handler)
        self._on_shutdown = on_shutdown
        # A short poll interval keeps shutdown() quick at the end of each test.
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def shutdown(self) -> None:
        """Release stalled requests, then stop serving."""
        if self._on_shutdown is not None:
            self._on_shutdown()
        super().shutdown()

    def close(self) -> None:
        """Shut down and free the port."""
        self.shutdown()
        self.server_close()


@dataclass
class Served:
    """``start``/``stop``/``with`` for a fake; subclasses give :meth:`handler`."""

    url: str = ""
    _server: LocalServer | None = None
    # Appended to the server's address in ``url`` (e.g. ``/api/`` for a Web API base URL).
    url_suffix: ClassVar[str] = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class, bound to this fake."""
        raise NotImplementedError

    def end_stalls(self) -> None:
        """Let stalled requests go (called when the fake stops)."""

    def start(self) -> Self:
        """Serve on 127.0.0.1 at a random port in a daemon thread."""
        self._server = LocalServer(self.handler(), self.end_stalls)
        self.url = self._server.url + self.url_suffix
        return self

    def stop(self) -> None:
        """Shut the server down (stalled requests are released)."""
        self.end_stalls()
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Request:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    # When it arrived (time.monotonic), to check the waits between a client's attempts.
    at: float = field(default_factory=time.monotonic)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def params(self) -> dict[str, str]:
        """The query with the first value of each parameter."""
        return {k: v[0] for k, v in self.query.items() if v}

    @property
    def json(self) -> Any:
        """The body decoded as JSON (None when empty; invalid JSON raises ValueError, a 400)."""
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        """The body decoded as a form."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Failure:
    """An injected failure for the next request matching ``method`` and the ``path`` prefix."""

    status: int
    retry_after: float
    path: str | None = None
    method: str | None = None

    def matches(self, req: Request) -> bool:
        """True for a request this failure is meant for."""
        return (self.method is None or self.method == req.method) and (
            self.path is None or req.path.startswith(self.path)
        )


@dataclass
class FakeApi(Served):
    """Base of the JSON API fakes: subclasses implement :meth:`route`."""

    calls: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # A status returned to every request (an outage); None: serve normally.
    down: int | None = None
    # Reentrant: a route may call helpers that take the lock again.
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Set by every request and by stop(): it ends a stall.
    next_request: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------ test controls
    def fail_next(
        self,
        status: int = 429,
        retry_after: float = 0,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (of ``method``, to paths starting with ``path``)
        with ``status``; 0 stalls (see the module docstring)."""
        with self.lock:
            self.failures.extend(Failure(status, retry_after, path, method) for _ in range(times))

    def served(self, path_part: str = "") -> list[Request]:
        """Requests answered with a 2xx whose path contains ``path_part``."""
        return [c for c in self.calls if path_part in c.path and 200 <= c.status < 300]

    def statuses(self) -> list[int]:
        """The status of every request so far, in order."""
        return [c.status for c in self.calls]

    def requests(
        self, method: str | None = None, path: str = "", ok_only: bool = True
    ) -> list[Request]:
        """Recorded requests, filtered by method and path prefix (by default only 2xx ones)."""
        return [
            r
            for r in self.calls
            if (method is None or r.method == method)
            and r.path.startswith(path)
            and (not ok_only or 200 <= r.status < 300)
        ]

    # ------------------------------------------------------------ for subclasses
    def route(self, req: Request) -> Reply:
        """Answer one request that passed the injected failures and the credentials check."""
        raise NotImplementedError

    def authorized(self, req: Request) -> bool:
        """Whether the request carries valid credentials (fakes may check them in route)."""
        return True

    def unauthorized(self) -> Reply:
        """The real API's answer to bad credentials."""
        return 401, {"error": "Unauthorized"}, {}

    def rate_limited(self, failure: Failure) -> Reply:
        """The API's own 429 answer."""
        return 429, {"error": "rate limited"}, {"Retry-After": str(int(failure.retry_after))}

    def server_error(self, status: int) -> Reply:
        """The API's own answer with an injected status (a 5xx, usually)."""
        return status, {"error": "internal error"}, {}

    def injected(self, failure: Failure) -> Reply | None:
        """The answer to an injected failure; None stalls."""
        if failure.status == 0:
            return None
        if failure.status == 429:
            return self.rate_limited(failure)
        return self.server_error(failure.status)

    # ------------------------------------------------------------ serving
    def end_stalls(self) -> None:
        """Release a stalled request."""
        self.next_request.set()

    def answer(self, req: Request) -> Reply:
        """The reply to one request, after failures, outages and the credentials check."""
        with self.lock:
            self.calls.append(req)
            failure = next((f for f in self.failures if f.matches(req)), None)
            if failure:
                self.failures.remove(failure)
        self.next_request.set()  # ends an earlier stall: its client has moved on
        injected = self.injected(failure) if failure else None
        if injected is not None:
            req.status = injected[0]
            return injected
        if self.down is not None:
            reply = self.server_error(self.down)
        elif not self.authorized(req):
            reply = self.unauthorized()
        else:
            try:
                with self.lock:
                    reply = self.route(req)
            except (ValueError, KeyError, TypeError) as exc:
                reply = 400, {"error": f"bad request: {exc}"}, {}
        if failure is not None:  # a stall: the server has acted, the answer waits
            req.status = 599
            self.next_request.clear()
            self.next_request.wait(max(failure.retry_after, STALL_CAP_S))
        else:
            req.status = reply[0]
        return reply

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """A handler that records each request and answers it through :meth:`answer`."""
        return _json_handler(self)


def _json_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

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
            status, body, headers = api.answer(req)
            if body is None:
                data = b""
            else:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                if not any(k.lower() == "content-type" for k in headers):
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a stall): nothing to answer

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve

    return Handler
