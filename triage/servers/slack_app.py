"""The interactive review app: a slack_bolt App served over HTTP (``/slack/events``) or Socket Mode.

Every handler acknowledges first. A click is parsed, written to a PostgreSQL store within a hard
bound on the wait, else appended to the decision spool (a file operation), and acknowledged;
``/triage`` and the App Home tab are acknowledged at once and answered afterwards (through
``response_url`` / ``views.publish``) by the app's own responder threads. A background worker
applies spooled decisions to the store, updates the messages and re-surfaces overdue items (see
:mod:`triage.review`). So a running flow can hold the DuckDB file, or the worker the store lock,
for as long as it likes: Slack still gets its acknowledgement far inside its 3-second limit.

The HTTP endpoint answers every request: it reads the body under a deadline
(:mod:`triage.servers.http`),
checks Slack's ``v0`` signature over the raw body, then the payload's shape
(``triage.slack.payloads``), and only then lets Bolt dispatch it. Anything malformed is a 4xx.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import ParseResult, parse_qsl, urlparse

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.socket_mode.builtin import SocketModeHandler
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context import BoltContext
from slack_bolt.request import BoltRequest
from slack_bolt.request.internals import build_context
from slack_sdk import WebClient
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient

from triage.config import Config
from triage.privacy.policy import PrivacyPolicy
from triage.review import (
    ACTIONS,
    DecisionSpool,
    DirectApply,
    InvalidAction,
    parse_actions,
    process_pending,
    review_store,
)
from triage.servers.http import (
    DEFAULT_MAX_CONNECTIONS,
    BoundedHandler,
    BoundedHTTPServer,
    RequestError,
)
from triage.slack.client import api_url, make_client
from triage.slack.messages import ACTION_OPEN, inert, queue_blocks
from triage.slack.payloads import InvalidPayload, check_request, check_socket_mode
from triage.store import StoreBusy

log = logging.getLogger("triage.slack")

EVENTS_PATH = "/slack/events"
MAX_BODY = 1_000_000  # Slack's payloads are a few KB; refuse anything absurd before parsing it
SIGNATURE_WINDOW_S = 300  # Slack's documented replay window for X-Slack-Request-Timestamp
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
# How long the responder waits for the store before saying it is busy.
QUEUE_WAIT_S = 10.0


def verify_signature(
    signing_secret: str,
    timestamp: str | None,
    signature: str | None,
    body: str,
    clock: Clock | None = None,
) -> bool:
    """Check Slack's ``v0`` request signature and its timestamp window.

    Malformed headers (a non-numeric timestamp, a signature that is not ``v0=`` + 64 hex digits)
    are simply invalid: they are rejected before any arithmetic or comparison could raise.
    """
    if not timestamp or not signature or not _TIMESTAMP.match(timestamp):
        return False
    if not _SIGNATURE.match(signature):
        return False
    verifier = SignatureVerifier(signing_secret, clock=clock or Clock())
    return verifier.is_valid(body=body, timestamp=timestamp, signature=signature)


class Responder:
    """Work that follows an acknowledgement, on the app's own threads (never Bolt's listeners)."""

    def __init__(self, workers: int = 2) -> None:
        """Start a small pool; answers are rare and each waits on the store at most briefly."""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="triage-respond")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` soon; its errors are logged, never raised at the caller."""

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - an answer that fails must not kill the pool
                log.warning("answer failed: %s: %s", type(exc).__name__, exc)

        future = self._pool.submit(run)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far has run; False on timeout (tests use this)."""
        with self._lock:
            pending = set(self._pending)
        return not wait_futures(pending, timeout=timeout).not_done

    def shutdown(self) -> None:
        """Finish what was submitted and stop."""
        self._pool.shutdown(wait=True)


@dataclass
class ReviewApp:
    """The Bolt app plus what the HTTP endpoint needs around it."""

    bolt: App
    signing_secret: str | None
    responder: Responder
    clock: Clock = field(default_factory=Clock)
    direct: DirectApply | None = None


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
        self._passed = threading.Condition()
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

    def wait_for_pass(self, after: int, timeout: float = 30.0) -> bool:
        """Block until more than ``after`` passes have finished; False on timeout.

        Lets callers (and tests) wait for an event rather than sleep and hope.
        """
        with self._passed:
            return self._passed.wait_for(lambda: self.passes > after, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self.last = process_pending(self.config, wait_s=self.wait_s)
            with self._passed:
                self.passes += 1
                self._passed.notify_all()
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
    clock: Clock | None = None,
) -> ReviewApp:
    """Create the Bolt app with the review handlers.

    Args:
        config: The configuration (database, review settings).
        bot_token: The bot token used for ``views.publish``.
        signing_secret: Verifies HTTP requests; may be None only in Socket Mode.
        worker: Woken after each spooled decision.
        socket_mode: True when requests arrive over Socket Mode (no HTTP signatures to check).
        clock: The signature check's clock (tests pin time with it).

    Returns:
        The app; serve it with :func:`serve` or :func:`socket_mode_handler`.
    """
    spool = DecisionSpool(config.review.spool)
    client = make_client(bot_token)
    responder = Responder()
    direct = DirectApply(config)

    def authorize(**_: Any) -> AuthorizeResult:
        # A single-workspace app: answer from the configured token instead of calling auth.test,
        # so the endpoint serves (and spools decisions) even when Slack's Web API is unreachable.
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=bot_token)

    app = App(
        signing_secret=signing_secret or "",
        client=WebClient(base_url=api_url()),
        authorize=authorize,
        token_verification_enabled=False,
        # The HTTP endpoint checks the signature over the raw body before Bolt parses anything;
        # Socket Mode has no signatures (the WebSocket is authenticated by the app token).
        request_verification_enabled=False,
        # Unmatched requests are answered 404 without stack traces.
        raise_error_for_unhandled_request=False,
        # Listeners only spool and acknowledge; enough threads that clicks never queue for one.
        listener_executor=ThreadPoolExecutor(
            max_workers=DEFAULT_MAX_CONNECTIONS, thread_name_prefix="triage-bolt"
        ),
    )

    @app.middleware
    def parse_decisions(body: dict[str, Any], context: Any, next: Any) -> BoltResponse | None:
        # Runs before any listener: reject what we cannot act on with a clear answer instead of
        # acknowledging a click that would silently do nothing.
        if body.get("type") != "block_actions":
            return next()  # type: ignore[no-any-return]
        actions = body.get("actions") or []
        if actions and all(a.get("action_id") == ACTION_OPEN for a in actions):
            return next()  # type: ignore[no-any-return]
        try:
            decisions = parse_actions(body)
        except InvalidAction as exc:
            return _json(400, {"ok": False, "error": "invalid_action", "detail": str(exc)})
        if not decisions:
            # A cleared select menu (selected_option: null): nothing to decide, nothing wrong.
            return BoltResponse(status=200, body="")
        context["triage_decisions"] = decisions
        return next()  # type: ignore[no-any-return]

    def on_decision(ack: Any, context: Any) -> None:
        # Durable first, acknowledged second: an acknowledged click is never lost. A server store
        # takes the decision at once (a hard bound on the wait); otherwise, or when it is down or
        # slow, the spool does, whose lock is only ever held for a file operation.
        if direct(context["triage_decisions"]) is None:
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
    def on_command(ack: Any, body: dict[str, Any]) -> None:
        ack()  # at once: the queue is read afterwards and sent through response_url
        responder.submit(_answer_queue, config, str(body["response_url"]))

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any]) -> None:
        # Bolt has acknowledged the event already; the store is read on the responder's threads.
        if event.get("tab", "home") != "home":
            return
        responder.submit(_publish_home, config, client, str(event["user"]))

    return ReviewApp(app, signing_secret, responder, clock or Clock(), direct)


def _json(status: int, body: dict[str, Any]) -> BoltResponse:
    return BoltResponse(
        status=status, body=json.dumps(body), headers={"content-type": "application/json"}
    )


def _queue_view(config: Config, wait_s: float = QUEUE_WAIT_S) -> list[Any]:
    busy = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "The store is busy (a triage run is writing); try again in a minute.",
            },
        }
    ]
    try:
        # Never wait without bound: the worker may hold the lock through a long pass.
        with review_store(config, wait_s=wait_s, lock_timeout=wait_s) as store:
            queue = store.review_queue()
    except StoreBusy:
        return busy
    # Shown in Slack: redacted as the review channel sees the items (README, "Privacy").
    policy = PrivacyPolicy(config)
    for row in queue["oldest"]:
        row["text"] = policy.text(str(row["text"]), config.review_destination)
    blocks = queue_blocks(queue, now=datetime.now(UTC), overdue_after=config.review.resurface_after)
    return [*blocks, _model_note(config)]


def _model_note(config: Config) -> dict[str, Any]:
    """Which model the runs classify with (the registry's active one), as a context block."""
    from classifiers.registry import RegistryError, active_model_for

    registry = config.models.registry if config.models else None
    try:
        version = active_model_for(config.model, registry).version
    except RegistryError as exc:
        text = f":warning: {inert(str(exc), 500)}"
    else:
        text = f"Items are classified by model `{inert(version, 100)}` (`triage models list`)"
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _answer_queue(config: Config, response_url: str) -> None:
    blocks = _queue_view(config)
    WebhookClient(response_url, timeout=10).send(
        text="Review queue", blocks=blocks, response_type="ephemeral"
    )


def _publish_home(config: Config, client: WebClient, user: str) -> None:
    blocks = _queue_view(config)
    client.views_publish(user_id=user, view={"type": "home", "blocks": blocks})


def handler_for(review: ReviewApp) -> type[BoundedHandler]:
    """The request handler class of the HTTP endpoint, bound to ``review``."""
    app = review.bolt

    class Handler(BoundedHandler):
        server_version = "triage-slack"
        # Slack retries a delivery that got no answer; 503 says "overloaded, come back".
        busy_status = 503
        length_required = False

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            target = _target(self.path)
            if target is None:
                self.answer(400, "malformed request target")
            elif target.path == "/healthz":
                self.answer(200, "ok")
            else:
                self.answer(404, "not found")

        def do_POST(self) -> None:
            parsed = _target(self.path)
            if parsed is None:
                self.answer(400, "malformed request target")
                return
            if parsed.path != EVENTS_PATH:
                self.answer(404, "not found")
                return
            try:
                raw = self.read_body(MAX_BODY)
            except RequestError as problem:
                self.answer(problem.status, problem.reason)
                return
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.answer(400, "body is not UTF-8")
                return
            # Signature first: nothing about an unsigned request is parsed or believed.
            if not review.signing_secret or not verify_signature(
                review.signing_secret,
                self.headers.get("X-Slack-Request-Timestamp"),
                self.headers.get("X-Slack-Signature"),
                body,
                review.clock,
            ):
                self.answer(
                    401,
                    json.dumps({"ok": False, "error": "invalid_signature"}),
                    {"Content-Type": "application/json"},
                )
                return
            try:
                check_request(body, self.headers.get("Content-Type") or "")
                headers: dict[str, str | Sequence[str]] = {
                    k.lower(): [v] for k, v in self.headers.items()
                }
                request = bolt_request(body, parsed.query, headers)
            except (InvalidPayload, ValueError, TypeError, KeyError, AttributeError) as exc:
                detail = str(exc) if isinstance(exc, InvalidPayload) else "malformed payload"
                self.answer(
                    400,
                    json.dumps({"ok": False, "error": "invalid_payload", "detail": detail}),
                    {"Content-Type": "application/json"},
                )
                return
            resp = app.dispatch(request)
            self.answer(resp.status, resp.body, resp.headers)

    return Handler


def _target(path: str) -> ParseResult | None:
    """The request target's parts; None when it cannot be parsed (``http://[``: a 400, not a 500)."""
    try:
        return urlparse(path)
    except ValueError:
        return None


def bolt_request(body: str, query: str, headers: dict[str, str | Sequence[str]]) -> BoltRequest:
    """Bolt's request for a body that :func:`check_request` passed, read as that check read it.

    Bolt takes a form body with "payload" anywhere in it (a team domain, a channel or user name,
    a command's text) for an interaction, finds no ``payload`` field and reads ``{}``: the slash
    command then matches no listener and Slack shows the user a dispatch failure. Such a body is
    the form it looks like, so its fields are handed over as such. The signature was checked on
    the raw body, which stays as it came.
    """
    request = BoltRequest(body=body, query=query, headers=headers)
    if not request.body and "payload" in body and not body.startswith("{"):
        fields = dict(parse_qsl(body, keep_blank_values=True))
        if "payload" not in fields:
            request.body = fields
            request.context = build_context(BoltContext({}), fields)
    return request


def serve(review: ReviewApp, host: str = "127.0.0.1", port: int = 3000) -> BoundedHTTPServer:
    """Bind the HTTP endpoint (``port`` 0 picks a free one); call ``serve_forever`` to run it."""
    return BoundedHTTPServer((host, port), handler_for(review))


class _CheckedSocketModeHandler(SocketModeHandler):
    """Checks each envelope's payload like the HTTP endpoint does before Bolt sees it."""

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        try:
            check_socket_mode(req.type, req.payload)
        except InvalidPayload as exc:
            log.warning("Socket Mode %s request refused: %s", req.type, exc)
            # Acknowledged (so Slack does not redeliver it) and dropped.
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        super().handle(client, req)


def socket_mode_handler(review: ReviewApp, app_token: str) -> Any:
    """A Socket Mode handler for the app using slack_sdk's built-in WebSocket client."""
    # apps.connections.open goes through the same base URL as every other Web API call.
    return _CheckedSocketModeHandler(
        review.bolt, app_token, web_client=WebClient(base_url=api_url())
    )
