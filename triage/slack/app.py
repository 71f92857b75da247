"""The interactive review app: a slack_bolt App served over HTTP (``/slack/events``) or Socket Mode.

Handlers only parse, spool and acknowledge; a background worker applies spooled decisions to the
store, updates the messages and re-surfaces overdue items (see ``triage.slack.decisions``). That
keeps every acknowledgement far inside Slack's 3-second limit and keeps the DuckDB file closed
between passes, so a running flow can take the write lock whenever it needs it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from slack_bolt import App, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from triage.config import Config
from triage.slack.client import api_url, make_client
from triage.slack.decisions import (
    ACTIONS,
    STORE_LOCK,
    InvalidAction,
    ReviewSettings,
    Spool,
    parse_actions,
    process_pending,
)
from triage.slack.messages import ACTION_OPEN, queue_blocks
from triage.store import StoreBusy, open_store

log = logging.getLogger("triage.slack")

EVENTS_PATH = "/slack/events"
MAX_BODY = 1_000_000  # Slack's payloads are a few KB; refuse anything absurd before parsing it


class ReviewWorker:
    """A daemon thread that applies spooled decisions and keeps messages up to date.

    ``kick()`` wakes it at once (after a click); otherwise it wakes every ``interval`` seconds, which
    is how decisions spooled while the store was busy get applied once it is free.
    """

    def __init__(self, config: Config, interval: float = 15.0, wait_s: float = 2.0) -> None:
        """Create the worker (not started)."""
        self.config = config
        self.interval = interval
        self.wait_s = wait_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="triage-review-worker", daemon=True)
        self.passes = 0
        self.last: dict[str, Any] = {}

    def start(self) -> None:
        """Start the thread; the first pass recovers anything left by an earlier crash."""
        self._thread.start()

    def kick(self) -> None:
        """Ask for a pass now."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.last = process_pending(self.config, wait_s=self.wait_s)
            self.passes += 1
            if self.last.get("busy"):
                log.info("store busy; %s decisions stay spooled", self.last.get("pending"))
            self._wake.wait(self.interval)


def build_app(
    config: Config,
    *,
    bot_token: str,
    signing_secret: str | None,
    worker: ReviewWorker | None = None,
    socket_mode: bool = False,
) -> App:
    """Create the Bolt app with the review handlers.

    Args:
        config: The configuration (database, review settings).
        bot_token: The bot token used for ``views.publish``.
        signing_secret: Verifies HTTP requests; may be None only in Socket Mode.
        worker: Woken after each spooled decision.
        socket_mode: True when requests arrive over Socket Mode (no HTTP signatures to check).

    Returns:
        The app; serve it with :func:`serve` or a Socket Mode handler.
    """
    settings = ReviewSettings.from_config(config)
    spool = Spool(settings.spool)
    client = make_client(bot_token)

    def authorize(**_: Any) -> AuthorizeResult:
        # A single-workspace app: answer from the configured token instead of calling auth.test,
        # so the endpoint serves (and spools decisions) even when Slack's Web API is unreachable.
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=bot_token)

    app = App(
        signing_secret=signing_secret or "",
        client=WebClient(base_url=api_url()),
        authorize=authorize,
        token_verification_enabled=False,
        request_verification_enabled=not socket_mode,
        # Unmatched requests are answered 404 without stack traces.
        raise_error_for_unhandled_request=False,
    )

    @app.middleware
    def parse_decisions(body: dict[str, Any], context: Any, next: Any) -> BoltResponse | None:
        # Runs after the signature check: reject what we cannot act on with a clear answer
        # instead of acknowledging a click that would silently do nothing.
        if body.get("type") != "block_actions":
            return next()  # type: ignore[no-any-return]
        actions = body.get("actions") or []
        if actions and all(a.get("action_id") == ACTION_OPEN for a in actions):
            return next()  # type: ignore[no-any-return]
        try:
            context["triage_decisions"] = parse_actions(body)
        except InvalidAction as exc:
            return BoltResponse(
                status=400,
                body=json.dumps({"ok": False, "error": "invalid_action", "detail": str(exc)}),
                headers={"content-type": "application/json"},
            )
        return next()  # type: ignore[no-any-return]

    def on_decision(ack: Any, context: Any) -> None:
        # Durable first, acknowledged second: an acknowledged click is never lost.
        spool.append(context["triage_decisions"])
        ack()
        if worker is not None:
            worker.kick()

    for action_id in ACTIONS:
        app.action(action_id)(on_decision)

    @app.action(ACTION_OPEN)
    def on_open(ack: Any) -> None:
        ack()  # a link button: Slack opens the URL, we only acknowledge

    @app.command("/triage")
    def on_command(ack: Any) -> None:
        ack(blocks=_queue_view(config, settings), response_type="ephemeral")

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        blocks = _queue_view(config, settings)
        client.views_publish(user_id=str(event["user"]), view={"type": "home", "blocks": blocks})

    return app


def _queue_view(config: Config, settings: ReviewSettings) -> list[Any]:
    try:
        with STORE_LOCK, open_store(config.database, wait_s=1.5) as store:
            queue = store.review_queue()
    except StoreBusy:
        return [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "The store is busy (a triage run is writing); try again in a minute.",
                },
            }
        ]
    return queue_blocks(queue, now=datetime.now(UTC), overdue_after=settings.resurface_after)


def _handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "triage-slack"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: str, headers: dict[str, Any] | None = None) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            for name, value in (headers or {}).items():
                if name.lower() == "content-length":
                    continue
                for v in value if isinstance(value, list | tuple) else [value]:
                    self.send_header(name, str(v))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if urlparse(self.path).path == "/healthz":
                self._send(200, "ok", {"content-type": "text/plain"})
            else:
                self._send(404, "not found", {"content-type": "text/plain"})

        def do_POST(self) -> None:
            parsed = urlparse(self.path)
            if parsed.path != EVENTS_PATH:
                self._send(404, "not found", {"content-type": "text/plain"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, "payload too large", {"content-type": "text/plain"})
                return
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            headers: dict[str, str | Sequence[str]] = {
                k.lower(): [v] for k, v in self.headers.items()
            }
            resp = app.dispatch(BoltRequest(body=body, query=parsed.query, headers=headers))
            self._send(resp.status, resp.body, resp.headers)

    return Handler


def serve(app: App, host: str = "127.0.0.1", port: int = 3000) -> ThreadingHTTPServer:
    """Bind the HTTP endpoint (``port`` 0 picks a free one); call ``serve_forever`` to run it."""
    server = ThreadingHTTPServer((host, port), _handler(app))
    server.daemon_threads = True
    return server


def socket_mode_handler(app: App, app_token: str) -> Any:
    """A Socket Mode handler for ``app`` using slack_sdk's built-in WebSocket client."""
    from slack_bolt.adapter.socket_mode.builtin import SocketModeHandler

    # apps.connections.open goes through the same base URL as every other Web API call.
    return SocketModeHandler(app, app_token, web_client=WebClient(base_url=api_url()))
