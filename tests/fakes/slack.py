"""A local fake of the Slack Web API, faithful where our code depends on it.

It checks the bearer token, required arguments and Block Kit limits as Slack does (answering
``{"ok": false, "error": ...}`` with HTTP 200), keeps posted messages per channel with their metadata
so ``conversations.history`` can be used for reconciliation, records every call, and can be told to
answer the next calls with 429 + Retry-After, a 5xx, or a stall longer than the client's timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# Slack's documented limits that our messages must respect.
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_MESSAGE_TEXT = 40_000
MAX_ACTION_VALUE = 2000
MAX_HEADER_TEXT = 150


@dataclass
class Call:
    """One request the fake received."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int = 200


@dataclass
class FakeSlack:
    """State of the fake workspace; start it with :func:`start_fake_slack`."""

    token: str = "xoxb-test-token"
    channels: dict[str, str] = field(
        default_factory=lambda: {
            "#feedback-review": "C0REVIEW",
            "#support-handoffs": "C0SUPPORT",
            "#sales-leads": "C0SALES",
            "#product-feedback": "C0PRODUCT",
            "#marketing-kudos": "C0MARKETING",
        }
    )
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    failures: list[tuple[str, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _ts: float = 1_700_000_000.0

    def fail_next(
        self, method: str, status: int = 429, retry_after: float = 1, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``status`` (0 = stall past timeouts)."""
        with self.lock:
            self.failures.extend([(method, status, retry_after)] * times)

    def response_url(self, name: str = "T0/1/abc") -> str:
        """A ``response_url`` served by this fake, as Slack puts in interactive payloads."""
        return self.url.replace("/api/", f"/response/{name}")

    def calls_to(self, method: str, ok_only: bool = True) -> list[Call]:
        """Calls of one API method (by default only those that were answered 200)."""
        return [c for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def posted(self) -> list[dict[str, Any]]:
        """Every stored message across channels."""
        return [m for msgs in self.messages.values() for m in msgs]

    def _channel_id(self, channel: str) -> str | None:
        if channel in self.channels.values():
            return channel
        return self.channels.get(channel) or self.channels.get("#" + channel)

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{self._ts:.6f}"

    # ------------------------------------------------------------------ methods
    def handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer one authenticated call like the Web API would."""
        if method == "auth.test":
            return {
                "ok": True,
                "team": "Fake",
                "user": "triage-bot",
                "user_id": "UBOT",
                "team_id": "T0",
            }
        if method == "chat.postMessage":
            channel = self._channel_id(str(args.get("channel", "")))
            if not args.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            error = self._check_content(args)
            if error:
                return {"ok": False, "error": error}
            ts = self._next_ts()
            msg = {
                "type": "message",
                "ts": ts,
                "text": args.get("text", ""),
                "blocks": args.get("blocks") or [],
                "metadata": args.get("metadata"),
                "thread_ts": args.get("thread_ts"),
                "user": "UBOT",
            }
            self.messages[channel].append(msg)
            return {"ok": True, "channel": channel, "ts": ts, "message": msg}
        if method == "chat.update":
            channel = self._channel_id(str(args.get("channel", "")))
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            error = self._check_content(args)
            if error:
                return {"ok": False, "error": error}
            for msg in self.messages[channel]:
                if msg["ts"] == args.get("ts"):
                    msg["text"] = args.get("text", msg["text"])
                    msg["blocks"] = args.get("blocks") or msg["blocks"]
                    return {"ok": True, "channel": channel, "ts": msg["ts"], "text": msg["text"]}
            return {"ok": False, "error": "message_not_found"}
        if method == "conversations.history":
            channel = self._channel_id(str(args.get("channel", "")))
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            limit = min(int(args.get("limit", 100)), 999)
            include_meta = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            # Newest first, as Slack does; threaded replies live in conversations.replies only.
            msgs = [
                m
                for m in reversed(self.messages[channel])
                if not m.get("thread_ts") or m["thread_ts"] == m["ts"]
            ]
            start = int(args.get("cursor") or 0)
            page = msgs[start : start + limit]
            out = []
            for m in page:
                m2 = dict(m)
                if not include_meta:
                    m2.pop("metadata", None)
                out.append(m2)
            more = start + limit < len(msgs)
            return {
                "ok": True,
                "channel": channel,
                "messages": out,
                "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""},
            }
        if method == "conversations.replies":
            channel = self._channel_id(str(args.get("channel", "")))
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            parent_ts = str(args.get("ts") or "")
            if not parent_ts:
                return {"ok": False, "error": "invalid_arguments"}
            thread = [
                m
                for m in self.messages[channel]
                if m["ts"] == parent_ts or m.get("thread_ts") == parent_ts
            ]
            if not thread:
                return {"ok": False, "error": "thread_not_found"}
            include_meta = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            limit = min(int(args.get("limit", 100)), 1000)
            start = int(args.get("cursor") or 0)
            page = [dict(m) for m in thread[start : start + limit]]  # oldest first, as Slack does
            if not include_meta:
                for m in page:
                    m.pop("metadata", None)
            more = start + limit < len(thread)
            return {
                "ok": True,
                "messages": page,
                "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""},
            }
        if method == "views.publish":
            if not args.get("user_id") or not args.get("view"):
                return {"ok": False, "error": "invalid_arguments"}
            view = args["view"] if isinstance(args["view"], dict) else json.loads(args["view"])
            if view.get("type") != "home" or len(view.get("blocks", [])) > 100:
                return {"ok": False, "error": "invalid_blocks"}
            if self._check_blocks(view.get("blocks", [])):
                return {"ok": False, "error": "invalid_blocks"}
            self.views[str(args["user_id"])] = view
            return {"ok": True, "view": {"id": "V1", **view}}
        return {"ok": False, "error": "unknown_method"}

    def _check_content(self, args: dict[str, Any]) -> str | None:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not args.get("text") and not blocks:
            return "no_text"
        if len(str(args.get("text", ""))) > MAX_MESSAGE_TEXT:
            return "msg_too_long"
        if blocks:
            if len(blocks) > MAX_BLOCKS:
                return "invalid_blocks"
            return self._check_blocks(blocks)
        return None

    def _check_blocks(self, blocks: list[dict[str, Any]]) -> str | None:
        # Block Kit rejects oversized text objects anywhere in a block, not only a section's text.
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            limit = MAX_HEADER_TEXT if block.get("type") == "header" else MAX_SECTION_TEXT
            if len(text) > limit:
                return "invalid_blocks"
            for el in block.get("elements", []) or []:
                if len(str(el.get("value", ""))) > MAX_ACTION_VALUE:
                    return "invalid_blocks"
                if el.get("type") in ("mrkdwn", "plain_text") and len(el.get("text", "")) > 3000:
                    return "invalid_blocks"
                for opt in el.get("options", []) or []:
                    if len(opt["text"]["text"]) > 75 or len(opt.get("value", "")) > 150:
                        return "invalid_blocks"
        return None


def _make_handler(state: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _args(self) -> dict[str, Any]:
            parsed = urlparse(self.path)
            args: dict[str, Any] = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(length).decode("utf-8")
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    args.update(json.loads(body))
                else:
                    args.update({k: v[0] for k, v in parse_qs(body).items()})
            for key in ("blocks", "metadata", "view"):
                if isinstance(args.get(key), str):
                    try:
                        args[key] = json.loads(args[key])
                    except json.JSONDecodeError:
                        pass
            return args

        def _reply(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            if urlparse(self.path).path.startswith("/response/"):
                self._response_url()
                return
            method = urlparse(self.path).path.rsplit("/", 1)[-1]
            args = self._args()
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else args.get("token")
            call = Call(method=method, args=args, token=token)
            with state.lock:
                state.calls.append(call)
                failure = next((f for f in state.failures if f[0] == method), None)
                if failure:
                    state.failures.remove(failure)
            if failure:
                _, status, retry_after = failure
                call.status = status or 599
                if status == 0:
                    time.sleep(retry_after)  # a stall: the client times out first
                    return
                headers = {"Retry-After": str(int(retry_after))} if status == 429 else {}
                self._reply(
                    status,
                    {"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"},
                    headers,
                )
                return
            if token != state.token:
                self._reply(200, {"ok": False, "error": "invalid_auth" if token else "not_authed"})
                return
            with state.lock:
                result = state.handle(method, args)
            self._reply(200, result)

        def _response_url(self) -> None:
            # Interactive payloads' response_url: JSON in, plain "ok" out, no token needed.
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.responses.append({"path": urlparse(self.path).path, **body})
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler


def start_fake_slack(token: str = "xoxb-test-token") -> tuple[FakeSlack, ThreadingHTTPServer]:
    """Start the fake on 127.0.0.1 at a random port; returns the state and the server to shut down."""
    state = FakeSlack(token=token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
    return state, server
