"""A local sink that answers the Slack Web API calls a drain makes, for ``triage bench``.

It ships with the package, so ``triage bench`` measures delivery from an installed wheel too.
It is a benchmark target, not a test fake: it checks the bearer token and the arguments the
delivery path depends on (a known conversation ID, text present) and records nothing but a count,
so the figure is our side's ceiling (a real channel takes about one message a second).
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class SlackSink:
    """The sink's state: its token, its channels and how many messages it accepted."""

    def __init__(self, channels: dict[str, str]) -> None:
        """Serve ``channels`` (name without ``#`` -> conversation ID)."""
        self.token = "xoxb-bench-" + secrets.token_hex(8)
        self.channels = channels
        self.posted = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The Web API base URL (``SLACK_API_URL``)."""
        assert self._server is not None, "start() the sink first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """The Web API's answer to one call."""
        ids = set(self.channels.values())
        if method == "conversations.list":
            listed = [{"id": cid, "name": name} for name, cid in self.channels.items()]
            return {"ok": True, "channels": listed, "response_metadata": {"next_cursor": ""}}
        if method in ("conversations.history", "conversations.replies"):
            if args.get("channel") not in ids:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "messages": [], "response_metadata": {"next_cursor": ""}}
        if method == "chat.postMessage":
            if args.get("channel") not in ids:
                return {"ok": False, "error": "channel_not_found"}
            if not args.get("text"):
                return {"ok": False, "error": "no_text"}
            with self._lock:
                self.posted += 1
                ts = f"1700000000.{self.posted:06d}"
            return {"ok": True, "channel": args["channel"], "ts": ts}
        return {"ok": False, "error": "unknown_method"}

    def start(self) -> SlackSink:
        """Serve on a random port of 127.0.0.1 in a daemon thread."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # a benchmark prints its report, not an access log

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {sink.token}":
                    reply: dict[str, Any] = {"ok": False, "error": "invalid_auth"}
                else:
                    kind = self.headers.get("Content-Type") or ""
                    if kind.startswith("application/json"):
                        args = json.loads(body or b"{}")
                    else:
                        args = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    reply = sink.answer(self.path.rsplit("/", 1)[-1], args)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
