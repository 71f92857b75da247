"""The Slack endpoint under hostile, malformed and badly timed requests (issues 12, 13 and 19).

Signatures here are computed in the test from Slack's documented ``v0`` scheme (HMAC-SHA256 of
``v0:{timestamp}:{body}`` with the signing secret, sent as ``v0=`` + hex digest), not with the
project's or slack_sdk's helper, so a broken verifier cannot agree with itself. Requests go over
real sockets to the real server, including ones no HTTP client library would send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.settings import load_config
from tests.conftest import DEMO_DIR
from tests.fakes.slack import FakeSlack, start_fake_slack
from tests.fakes.slack_payloads import slash_command
from triage.config import Config
from triage.review import STORE_LOCK, DecisionSpool
from triage.servers.http import BoundedHTTPServer
from triage.servers.slack_app import EVENTS_PATH, ReviewApp, build_app, handler_for
from triage.slack.messages import ACTION_CONFIRM, ACTION_RELABEL, ACTION_REROUTE
from triage.store import open_store

SECRET = "e3b0c44298fc1c149afbf4c8996fb924"
ITEM = "0123456789abcdef0123"


# --------------------------------------------------------------------------- the oracle
def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's documented v0 scheme, written out here on purpose."""
    base = b"v0:" + timestamp.encode() + b":" + body.encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(body: str, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(secret, stamp, body),
    }


# --------------------------------------------------------------------------- fixtures
@dataclass
class Endpoint:
    url: str
    port: int
    fake: FakeSlack
    config: Config
    review: ReviewApp
    server: BoundedHTTPServer

    @property
    def spool(self) -> DecisionSpool:
        return DecisionSpool(self.config.review.spool)


def _start(
    config: Config, fake: FakeSlack, **server_kw: Any
) -> tuple[ReviewApp, BoundedHTTPServer]:
    review = build_app(config, bot_token=fake.token, signing_secret=SECRET)
    server = BoundedHTTPServer(("127.0.0.1", 0), handler_for(review), **server_kw)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return review, server


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    shutil.copytree(DEMO_DIR, tmp_path / "demo")
    fake, fake_server = start_fake_slack()
    monkeypatch.setenv("SLACK_API_URL", fake.url)
    config = load_config(tmp_path / "demo" / "triage.yaml", database=str(tmp_path / "t.duckdb"))
    with open_store(config.database):
        pass  # an empty, migrated store: the queue view reads it
    review, server = _start(config, fake, request_timeout=2.0)
    port = server.server_address[1]
    try:
        yield Endpoint(f"http://127.0.0.1:{port}{EVENTS_PATH}", port, fake, config, review, server)
    finally:
        server.shutdown()
        server.server_close()
        review.responder.shutdown()
        fake_server.shutdown()
        fake_server.server_close()


def click_payload(
    fake: FakeSlack, action_id: str = ACTION_CONFIRM, **action: Any
) -> dict[str, Any]:
    """A block_actions payload shaped like Slack's published examples."""
    act: dict[str, Any] = {
        "action_id": action_id,
        "block_id": f"triage:{ITEM}",
        "type": "button",
        "value": ITEM,
        "text": {"type": "plain_text", "text": "Confirm", "emoji": True},
        "action_ts": f"{time.time():.6f}",
    }
    act.update(action)
    return {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0"},
        "api_app_id": "A0TRIAGE",
        "token": "legacy",
        "container": {
            "type": "message",
            "message_ts": "1700000001.000100",
            "channel_id": "C0REVIEW",
            "is_ephemeral": False,
        },
        "trigger_id": "1.2.abc",
        "team": {"id": "T0", "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0REVIEW", "name": "feedback-review"},
        "message": {"type": "message", "ts": "1700000001.000100", "text": "..."},
        "response_url": fake.response_url("T0/U0ALICE/x"),
        "actions": [act],
    }


def command_form(fake: FakeSlack) -> dict[str, str]:
    return slash_command(fake.response_url("T0/cmd/x"))


def post(url: str, body: str, headers: dict[str, str], ctype: str = "form") -> httpx.Response:
    content_type = "application/json" if ctype == "json" else "application/x-www-form-urlencoded"
    return httpx.post(
        url, content=body, headers={"Content-Type": content_type, **headers}, timeout=30
    )


def form_of(payload: Any) -> str:
    return urlencode({"payload": json.dumps(payload)})


def raw_request(port: int, data: bytes, *, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send bytes as they are; return the status of the answer (0 if there was none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    reply = b"".join(chunks)
    if not reply.startswith(b"HTTP/1."):
        return 0, reply
    return int(reply.split(b" ", 2)[1]), reply


def http_bytes(body: bytes, headers: dict[str, str], path: str = EVENTS_PATH) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("utf-8") + b"\r\n" + body


# ------------------------------------------------------------------ signature oracle
def test_a_click_signed_per_slacks_scheme_is_accepted(endpoint: Endpoint) -> None:
    body = form_of(click_payload(endpoint.fake))

    resp = post(endpoint.url, body, signed_headers(body))

    assert resp.status_code == 200
    assert [(d.item_id, d.action) for d in endpoint.spool.read()] == [(ITEM, "confirm")]


def test_a_click_naming_its_channel_by_bare_id_is_accepted(endpoint: Endpoint) -> None:
    # The payload check and Bolt take `channel` as an object or as a bare id; so must the reader.
    payload = click_payload(endpoint.fake)
    payload["channel"] = "C0REVIEW"
    del payload["container"]["channel_id"]
    body = form_of(payload)

    resp = post(endpoint.url, body, signed_headers(body))

    assert resp.status_code == 200, resp.text
    assert [(d.item_id, d.channel) for d in endpoint.spool.read()] == [(ITEM, "C0REVIEW")]


def test_a_form_body_that_bolt_would_read_as_json_is_checked_as_json(endpoint: Endpoint) -> None:
    # Bolt parses any body opening with '{' as JSON, whatever its Content-Type: the valid click
    # hidden in a `payload` form field must not vouch for the JSON object Bolt acts on.
    hidden = form_of(click_payload(endpoint.fake))
    body = '{"type": "block_actions", "user": "U1", "actions": "x", "pad": "&' + hidden + '&"}'

    resp = post(endpoint.url, body, signed_headers(body))

    assert resp.status_code == 400, resp.text
    assert endpoint.spool.read() == []


@pytest.mark.parametrize(
    "case",
    [
        "wrong-secret",
        "replayed-new-timestamp",
        "stale",
        "future",
        "no-timestamp-in-mac",
        "body-changed",
        "non-numeric-ts",
        "unicode-digits-ts",
        "float-ts",
        "empty-ts",
        "sig-not-hex",
        "sig-non-ascii",
        "sig-v1",
        "missing-headers",
    ],
)
def test_requests_failing_the_signature_scheme_are_401(endpoint: Endpoint, case: str) -> None:
    body = form_of(click_payload(endpoint.fake))
    now = int(time.time())
    good = signed_headers(body, now)
    headers = dict(good)
    if case == "wrong-secret":
        headers = signed_headers(body, now, secret="not-the-signing-secret")
    elif case == "replayed-new-timestamp":
        # A captured request replayed later with a fresh timestamp: the MAC covers the timestamp.
        headers["X-Slack-Request-Timestamp"] = str(now + 30)
    elif case == "stale":
        headers = signed_headers(body, now - 6 * 60)
    elif case == "future":
        headers = signed_headers(body, now + 6 * 60)
    elif case == "no-timestamp-in-mac":
        mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        headers["X-Slack-Signature"] = f"v0={mac}"
    elif case == "body-changed":
        body = body.replace("U0ALICE", "U0MALLORY")
    elif case == "non-numeric-ts":
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    elif case == "unicode-digits-ts":
        headers["X-Slack-Request-Timestamp"] = "١٧٠٠٠٠٠٠٠٠"  # int() would accept these
    elif case == "float-ts":
        headers = {**headers, "X-Slack-Request-Timestamp": f"{now}.5"}
    elif case == "empty-ts":
        headers["X-Slack-Request-Timestamp"] = ""
    elif case == "sig-not-hex":
        headers["X-Slack-Signature"] = "v0=" + "z" * 64
    elif case == "sig-non-ascii":
        headers["X-Slack-Signature"] = "v0=" + "é" * 64
    elif case == "sig-v1":
        headers["X-Slack-Signature"] = good["X-Slack-Signature"].replace("v0=", "v1=")
    elif case == "missing-headers":
        headers = {}
    raw = http_bytes(
        body.encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body.encode())),
            **headers,
        },
    )

    status, reply = raw_request(endpoint.port, raw)

    assert status == 401, reply[:300]
    assert endpoint.spool.read() == []


# ------------------------------------------------------------------ shapes (issue 13, item 3)
def _mutated(fake: FakeSlack, case: str) -> Any:
    p: Any = click_payload(fake)
    if case == "user-string":
        p["user"] = "U1"
    elif case == "actions-string":
        p["actions"] = "x"
    elif case == "actions-of-strings":
        p["actions"] = ["x"]
    elif case == "actions-empty":
        p["actions"] = []
    elif case == "container-string":
        p["container"] = "x"
    elif case == "selected-option-string":
        p = click_payload(fake, ACTION_RELABEL, type="static_select", selected_option="x")
    elif case == "team-number":
        p["team"] = 5
    elif case == "action-id-number":
        p["actions"][0]["action_id"] = 7
    elif case == "value-object":
        p["actions"][0]["value"] = {"id": ITEM}
    elif case == "response-url-not-http":
        p["response_url"] = "javascript:alert(1)"
    elif case == "not-an-object":
        p = ["block_actions"]
    elif case == "unknown-type":
        p["type"] = "launch_rockets"
    elif case == "junk-view-submission":
        p = {"type": "view_submission", "user": {"id": "U0ALICE"}, "view": "x"}
    elif case == "view-submission-no-user":
        p = {"type": "view_submission", "view": {"id": "V1", "type": "modal"}}
    return p


SHAPES = [
    "user-string",
    "actions-string",
    "actions-of-strings",
    "actions-empty",
    "container-string",
    "selected-option-string",
    "team-number",
    "action-id-number",
    "value-object",
    "response-url-not-http",
    "not-an-object",
    "unknown-type",
    "junk-view-submission",
    "view-submission-no-user",
]


@pytest.mark.parametrize("case", SHAPES)
def test_signed_payloads_of_the_wrong_shape_are_400(endpoint: Endpoint, case: str) -> None:
    body = form_of(_mutated(endpoint.fake, case))

    resp = post(endpoint.url, body, signed_headers(body))

    assert resp.status_code == 400, resp.text
    assert resp.json()["ok"] is False
    assert endpoint.spool.read() == []


@pytest.mark.parametrize(
    "body,ctype",
    [
        ("payload=%7Bnot+json", "form"),
        ("payload=", "form"),
        ("payload=1&payload=2", "form"),
        ("hello=world", "form"),
        ("command=%2Ftriage&user_id=U1", "form"),  # no response_url
        ("command=%2Ftriage&user_id=U1&response_url=ftp%3A%2F%2Fx", "form"),
        ("{not json", "json"),
        ('{"type": "event_callback", "event": "x"}', "json"),
        ('{"type": "event_callback", "event": {"type": "app_home_opened"}}', "json"),
        ('{"type": "event_callback", "event": {"type": "app_home_opened", "user": 5}}', "json"),
        ('{"type": "url_verification"}', "json"),
        ('{"type": "event_callback"}', "json"),
        ("[1, 2, 3]", "json"),
        ("[" * 5000 + "]" * 5000, "json"),
        ('{"type": "url_verification", "challenge": "' + "\\ud800" + '"}', "json"),
    ],
)
def test_signed_bodies_that_slack_would_never_send_are_400(
    endpoint: Endpoint, body: str, ctype: str
) -> None:
    resp = post(endpoint.url, body, signed_headers(body), ctype)

    assert resp.status_code == 400, resp.text
    assert endpoint.spool.read() == []


@pytest.mark.parametrize(
    "length,expected",
    [("abc", 400), ("-1", 400), ("+5", 400), ("5, 6", 400), ("99999999999999", 413)],
)
def test_unusable_content_length_is_answered_at_once(
    endpoint: Endpoint, length: str, expected: int
) -> None:
    body = b"payload=%7B%7D"
    status, _ = raw_request(
        endpoint.port,
        http_bytes(
            body, {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": length}
        ),
        timeout=30,
    )
    assert status == expected


def test_non_utf8_bodies_and_unknown_methods_get_4xx(endpoint: Endpoint) -> None:
    body = b"payload=\xff\xfe"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
    }
    assert raw_request(endpoint.port, http_bytes(body, headers))[0] == 400
    for method in ("PUT", "DELETE", "FROB"):
        data = f"{method} {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
        assert raw_request(endpoint.port, data)[0] == 405
    assert httpx.post(endpoint.url.replace(EVENTS_PATH, "/other"), timeout=30).status_code == 404


def test_a_request_target_that_cannot_be_parsed_is_a_400_not_a_500(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # urlparse raises on an unclosed IPv6 bracket: the endpoint answered 500 with a logged
    # traceback, so anyone could fill the log, unsigned.
    for data in (
        b"GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST http://[/slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET http://a]/healthz HTTP/1.1\r\n\r\n",
    ):
        assert raw_request(endpoint.port, data)[0] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert raw_request(endpoint.port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200


def test_a_cleared_menu_is_ignored_not_an_error(endpoint: Endpoint) -> None:
    # Slack sends `selected_option: null` when a reviewer clears a static select.
    for action_id in (ACTION_RELABEL, ACTION_REROUTE):
        payload = click_payload(endpoint.fake, action_id, type="static_select")
        payload["actions"][0].pop("value")
        payload["actions"][0]["selected_option"] = None
        body = form_of(payload)

        resp = post(endpoint.url, body, signed_headers(body))

        assert resp.status_code == 200, resp.text
    assert endpoint.spool.read() == []


# ------------------------------------------------------------------ connections
@pytest.mark.slow
def test_stalled_clients_are_cut_off_and_the_cap_answers_503(endpoint: Endpoint) -> None:
    review, server = _start(endpoint.config, endpoint.fake, max_connections=3, request_timeout=1.0)
    port = server.server_address[1]
    try:
        # Three clients announce a body and never send it (or send no request at all).
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        stalled[0].sendall(http_bytes(b"", {"Content-Length": "1000"}))
        stalled[1].sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # headers never end
        # A fourth connection while all slots are taken: refused at once, with an answer.
        assert raw_request(port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 503
        # Each stalled client gets a 408 (or is closed) once the read deadline passes ...
        for sock in stalled[:2]:
            assert sock.recv(1024).split(b" ")[1] == b"408"
        for sock in stalled:
            sock.close()
        # ... and its slot is free again.
        deadline = time.monotonic() + 30
        while raw_request(port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] != 200:
            assert time.monotonic() < deadline, "slots were not released"
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
        review.responder.shutdown()


# ------------------------------------------------------------------ the 3-second deadline
@pytest.mark.slow
def test_clicks_and_slash_command_are_acked_while_the_store_is_held(endpoint: Endpoint) -> None:
    # A flow run holds the DuckDB file (another process) and the worker holds the store lock (a
    # long pass in this process): neither may delay an acknowledgement.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                "print('locked', flush=True); sys.stdin.read()"
            ),
            str(endpoint.config.database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    release = threading.Event()
    held = threading.Event()

    def long_pass() -> None:
        with STORE_LOCK:
            held.set()
            release.wait(120)

    worker = threading.Thread(target=long_pass, daemon=True)
    worker.start()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert held.wait(30)
        click = form_of(click_payload(endpoint.fake))
        command = urlencode(command_form(endpoint.fake))

        started = time.monotonic()
        clicked = post(endpoint.url, click, signed_headers(click))
        click_s = time.monotonic() - started
        started = time.monotonic()
        commanded = post(endpoint.url, command, signed_headers(command))
        command_s = time.monotonic() - started

        assert (clicked.status_code, commanded.status_code) == (200, 200)
        # Slack's deadline is 3 s; a handler that waits on the lock takes as long as the holder.
        assert click_s < 3.0 and command_s < 3.0, (click_s, command_s)
        assert [d.action for d in endpoint.spool.read()] == ["confirm"]
        assert endpoint.fake.responses == []  # the queue could not be read yet
    finally:
        release.set()
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        worker.join(30)
    # Once the store is free the queue follows through response_url.
    assert endpoint.review.responder.wait(60)
    (answer,) = endpoint.fake.responses
    assert answer["response_type"] == "ephemeral"
    assert answer["blocks"][0]["text"]["text"].startswith(("Review queue", "The store is busy"))


# ------------------------------------------------------------------ property-based
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    "type",
    "user",
    "actions",
    "container",
    "channel",
    "team",
    "enterprise",
    "message",
    "response_url",
    "view",
    "authorizations",
    "is_enterprise_install",
]
ACTION_FIELDS = ["action_id", "value", "selected_option", "action_ts", "block_id", "type"]


@st.composite
def requests(draw: st.DrawFn, fake_response_url: str) -> tuple[bytes, bool]:
    """A request as bytes; the flag says whether the body is signed correctly."""
    kind = draw(st.sampled_from(["click", "command", "event", "raw"]))
    if kind == "click":
        payload: Any = click_payload(
            FakeSlack(),
            draw(st.sampled_from([ACTION_CONFIRM, ACTION_RELABEL, "triage_spam", "unknown"])),
        )
        payload["response_url"] = fake_response_url
        for name in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
            payload[name] = draw(JSON)
        if isinstance(payload.get("actions"), list) and payload["actions"]:
            act = payload["actions"][0]
            if isinstance(act, dict):
                for name in draw(st.lists(st.sampled_from(ACTION_FIELDS), max_size=2)):
                    act[name] = draw(JSON)
        body = draw(st.sampled_from([form_of(payload), "payload=" + draw(st.text(max_size=30))]))
        ctype = "application/x-www-form-urlencoded"
    elif kind == "command":
        form = command_form(FakeSlack())
        form["response_url"] = fake_response_url
        for name in draw(st.lists(st.sampled_from(list(form)), max_size=2)):
            form[name] = draw(st.text(max_size=20))
        body = urlencode(form)
        ctype = "application/x-www-form-urlencoded"
    elif kind == "event":
        event: Any = {
            "type": "event_callback",
            "team_id": "T0",
            "event_id": "Ev1",
            "event": {"type": "app_home_opened", "user": "U0ALICE", "tab": "home"},
        }
        for name in draw(
            st.lists(st.sampled_from(["type", "event", "team", "challenge"]), max_size=2)
        ):
            event[name] = draw(JSON)
        body = json.dumps(event)
        ctype = "application/json"
    else:
        body = draw(st.text(max_size=60))
        ctype = draw(
            st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
            )
        )
    data = body.encode("utf-8", errors="surrogatepass")
    signed = draw(st.booleans())
    headers = {"Content-Type": ctype} if ctype else {}
    if signed:
        headers.update(signed_headers(body))
    else:
        headers["X-Slack-Request-Timestamp"] = draw(
            st.sampled_from([str(int(time.time())), "abc", "-1", "", "9" * 40])
        )
        headers["X-Slack-Signature"] = draw(st.sampled_from(["v0=" + "0" * 64, "x", ""]))
    length = draw(st.sampled_from(["exact", "exact", "exact", "short", "junk", "none"]))
    if length == "exact":
        headers["Content-Length"] = str(len(data))
    elif length == "short":
        headers["Content-Length"] = str(max(0, len(data) - 3))
    elif length == "junk":
        headers["Content-Length"] = draw(st.sampled_from(["abc", "-1", "1e3", " ", "0x10"]))
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "HEAD", "TRACE"]))
    path = draw(
        st.sampled_from(
            [EVENTS_PATH, EVENTS_PATH, "/", "/healthz", EVENTS_PATH + "?a=b"]
            # Targets in absolute form, one of which no URL parser can read.
            + ["http://x" + EVENTS_PATH, "http://[" + EVENTS_PATH, "*"]
        )
    )
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("utf-8") + b"\r\n" + data, signed


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_request_gets_a_2xx_or_4xx_in_bounded_time(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    raw, _ = data.draw(requests(endpoint.fake.response_url("T0/prop/x")))
    started = time.monotonic()

    status, reply = raw_request(endpoint.port, raw, timeout=30)

    assert 200 <= status < 500, (status, raw[:400], reply[:300])
    assert time.monotonic() - started < 30
