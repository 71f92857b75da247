"""A small base for local fake JSON APIs: a threaded http.server on 127.0.0.1 with a random port.

Each fake records every request, checks credentials the way its real API does, and can be told to
answer the next matching requests with 429 + Retry-After, a 5xx, or a stall: the server acts on the
request but answers only after the client gave up, the case idempotency keys exist for.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def json(self) -> Any:
        """The body as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


Reply = tuple[int, Any, dict[str, str]]


@dataclass
class FakeAPI:
    """Shared machinery; subclasses implement :meth:`authorized` and :meth:`handle`."""

    calls: list[Request] = field(default_factory=list)
    failures: list[tuple[str, str, int, float]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # A stalled request answers only once this is set (at stop()): never before the client's
    # timeout, however loaded the machine is.
    unstall: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def fail_next(
        self, method: str, path: str, status: int = 429, retry_after: float = 1, times: int = 1
    ) -> None:
        """Fail the next ``times`` requests whose path starts with ``path``.

        ``status`` 0 stalls *after* handling the request until the fake stops (or at least a minute
        passes), so the server has acted but the client has timed out.
        """
        with self.lock:
            self.failures.extend([(method, path, status, retry_after)] * times)

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

    def authorized(self, req: Request) -> bool:
        """Whether the request carries valid credentials."""
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        """The real API's answer to bad credentials."""
        return 401, {"error": "Unauthorized"}, {}

    def handle(self, req: Request) -> Reply:
        """Answer an authorised request."""
        raise NotImplementedError

    # ----------------------------------------------------------------- serving
    def start(self) -> FakeAPI:
        """Serve on a random local port in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        # A short poll interval keeps shutdown() quick at the end of each test.
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        """Shut the server down (stalled requests are released)."""
        self.unstall.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a stall): nothing to answer

        def _serve(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(
                method=self.command,
                path=parsed.path,
                query={k: v[0] for k, v in parse_qs(parsed.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            with api.lock:
                api.calls.append(req)
                failure = next(
                    (f for f in api.failures if f[0] == req.method and req.path.startswith(f[1])),
                    None,
                )
                if failure:
                    api.failures.remove(failure)
            stall = 0.0
            if failure and failure[2] != 0:
                status = failure[2]
                req.status = status
                headers = {"Retry-After": str(int(failure[3]))} if status == 429 else {}
                self._reply(status, {"error": "injected failure", "status": status}, headers)
                return
            if failure:
                stall = failure[3]
            if not api.authorized(req):
                status, body, headers = api.unauthorized()
            else:
                try:
                    with api.lock:
                        status, body, headers = api.handle(req)
                except (ValueError, KeyError, TypeError) as exc:
                    status, body, headers = 400, {"error": f"bad request: {exc}"}, {}
            req.status = status if not stall else 599
            if stall:
                api.unstall.wait(max(stall, 60.0))
            self._reply(status, body, headers)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve

    return Handler
